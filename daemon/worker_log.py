"""A worker's stderr, line by line, into the daemon's log: a traceback as one entry, once.

A block that crashes in ``setup()`` crashes again at every restart, with the same
traceback. Logged line by line at each try, that is fifteen lines a retry in which the
one that matters scrolls away. So the lines of a Python traceback (from ``Traceback (most
recent call last):`` to the exception's own line) are gathered into one entry, logged at
ERROR the first time; when the same traceback comes again (addresses aside) only its last
line is logged, saying it is a repeat. The worker's other lines are logged as they come,
at the level the worker's logging gave them (``WARNING: …``), which the entry's own
level then says instead of the text, else at INFO as written.

One ``StderrLog`` serves a block across its workers (it remembers what it logged), and is
fed by ``WorkerProcess`` (process.py) as lines arrive.
"""

from __future__ import annotations

import collections
import logging
import re
from typing import Any

log = logging.getLogger("pipelined.block")

TRACEBACK = "Traceback (most recent call last):"
CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
REMEMBERED = 8
"""Distinct tracebacks remembered per block (a chained exception is two or three)."""
MAX_LINES = 200
"""A traceback longer than this is logged in pieces (a deep recursion)."""
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


class StderrLog:
    """What one block's workers write to stderr, as log entries."""

    def __init__(self, block: str):
        self.block = block
        self._lines: list[str] | None = None  # a traceback being gathered
        self._seen: collections.deque[str] = collections.deque(maxlen=REMEMBERED)

    def line(self, text: str, extra: dict[str, Any]) -> None:
        """One line the worker wrote (without its newline)."""
        if self._lines is not None:
            self._lines.append(text)
            if not text[:1].isspace() and text not in CHAINED and text != TRACEBACK:
                self._end(extra)  # the exception's own line ends it
            elif len(self._lines) >= MAX_LINES:
                self._end(extra)
            return
        if text == TRACEBACK or text in CHAINED:
            self._lines = [text]
            return
        name, colon, rest = text.partition(": ")
        if colon and name in _LEVELS:
            log.log(_LEVELS[name], "%s: %s", self.block, rest, extra=extra)
        else:
            log.info("%s: %s", self.block, text, extra=extra)

    def flush(self, extra: dict[str, Any]) -> None:
        """The worker has exited: log a traceback it did not finish."""
        if self._lines is not None:
            self._end(extra)

    def _end(self, extra: dict[str, Any]) -> None:
        lines, self._lines = self._lines or [], None
        key = _ADDRESS.sub("0x…", "\n".join(lines))
        if key in self._seen:
            log.info(
                "%s: %s (the same traceback as before, not repeated)",
                self.block,
                lines[-1].strip(),
                extra=extra,
            )
            return
        self._seen.append(key)
        log.error("%s: %s", self.block, "\n".join(lines), extra=extra)
