"""A stream of bytes as bounded lines: what a worker (or a probe) prints, made readable.

Whatever a process prints costs its reader time in proportion to what it printed, never
more: a line ends at a newline or a carriage return (a progress bar is many lines), a
line longer than LINE_BYTES is cut (and says so), and a tail keeps the last lines within
bounds of lines and bytes.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator

TAIL_LINES = 20
"""Lines of a worker's stderr kept for ``last_exit``: enough for a traceback's end."""
TAIL_BYTES = 16 * 1024
"""...and at most this many bytes of them (the oldest lines go first)."""
LINE_BYTES = 4096
"""The longest line of a worker's stderr logged and kept; the rest of it is dropped."""
_LINE_ENDS = re.compile(rb"[\r\n]")


class Lines:
    """Bytes in, lines out: each line ends at \\n or \\r and is cut at ``limit`` bytes.

    Work and memory are bounded by what is fed and by ``limit``, however long a line
    goes on: the part past the limit is dropped as it comes, never joined.
    """

    def __init__(self, limit: int = LINE_BYTES):
        self.limit = limit
        self._partial = bytearray()
        self._cut = False

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that ``chunk`` completes (empty ones skipped)."""
        *complete, rest = _LINE_ENDS.split(chunk)
        lines = []
        for part in complete:
            self._add(part)
            line = self._take()
            if line:
                lines.append(line)
        self._add(rest)
        return lines

    def end(self) -> list[str]:
        """The last line, if the stream ended without a line end."""
        line = self._take()
        return [line] if line else []

    def pending(self) -> int:
        """Bytes held of the line not yet ended."""
        return len(self._partial)

    def _add(self, part: bytes) -> None:
        room = self.limit - len(self._partial)
        if len(part) > room:
            self._partial += part[:room]
            self._cut = True
        else:
            self._partial += part

    def _take(self) -> str:
        line = self._partial.decode("utf-8", "replace").rstrip()
        if self._cut:
            line += f" [cut: the line is longer than {self.limit} bytes]"
        self._partial = bytearray()
        self._cut = False
        return line


class Tail:
    """The last lines of a stream, at most ``lines`` of them and ``size`` bytes (UTF-8)."""

    def __init__(self, lines: int = TAIL_LINES, size: int = TAIL_BYTES):
        self._lines: collections.deque[tuple[str, int]] = collections.deque()
        self._max_lines = lines
        self._max_size = size
        self._size = 0

    def append(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace"))
        self._lines.append((line, size))
        self._size += size
        while len(self._lines) > self._max_lines or (
            self._size > self._max_size and len(self._lines) > 1
        ):
            self._size -= self._lines.popleft()[1]

    def __iter__(self) -> Iterator[str]:
        return (line for line, _ in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, index: int) -> str:
        return self._lines[index][0]
