"""A worker's event pipes, seen from the daemon's event loop.

Each launch of a worker gets a pipe for its events (worker -> daemon) and, for a
recorder in clip mode, one for the events routed to it (daemon -> worker). Why a pipe
and not a ring in shared memory beside the heartbeat: the loop wakes the moment a line
is written (a ring would be read on the 0.1 s tick, and an event's latency to MQTT would
be that tick); the kernel's pipe buffer is the bounded ring, and it never makes the
writer wait, because the worker writes from a thread of its own, never from the block;
the daemon already reads each worker's stderr this way, with the same bounds
(``lines.Lines``); and a crashed worker's last events are still in the pipe to read.

What keeps a block from costing the supervisor more than its rate: each line spends a
token of the block's bucket in the daemon, which holds ``LINES_PER_EVENT`` times the
worker's (``[events] rate`` and ``burst``): an event's start and end are two lines, and
the worker's counts and a recorder's clip reports come besides. With none left, the
daemon stops reading the pipe until one is due; the pipe fills, the worker's
queue fills, and the block's calls are dropped and counted in the worker, where the
work was. So the loop's work is bounded by the rate, whatever a block does, and a
line that is not a message this version knows is counted and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from pipelined.workers.events import MAX_LINE, BadLine, RateLimit, parse_line

from ..lines import Lines

CHUNK = 16384
"""Bytes read at a time: a few dozen events."""
LINES_PER_EVENT = 4
"""The daemon's bucket, in lines, is this many times the worker's, in events: a start and
its end, the worker's counts, a clip report, and room for lines that arrive together."""
EXTRA_LINES = 2.0
"""Lines a second beyond that: counts and clip reports of a block that raises few events."""
ROUTED_LINE = 4096
"""A line to a worker is at most PIPE_BUF bytes: written whole or not at all."""
log = logging.getLogger("pipelined.events")


class EventPipe:
    """The read end of one worker's event pipe: parsed messages to ``deliver``."""

    def __init__(
        self,
        fd: int,
        block: str,
        rate: float,
        burst: int,
        deliver: Callable[[str, dict[str, Any]], None],
        counts: Any,
    ):
        self.fd: int | None = fd
        self.block = block
        self.deliver = deliver
        self.counts = counts  # the block's: ``malformed`` and ``paused`` are counted there
        self.limit = RateLimit(rate * LINES_PER_EVENT + EXTRA_LINES, burst * LINES_PER_EVENT)
        self._lines = Lines(MAX_LINE)
        self._waiting: collections.deque[str] = collections.deque()  # read, not yet taken
        self._resume: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        fd = self.fd
        if fd is None:
            return
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self._waiting.extend(self._lines.feed(chunk) if chunk else self._lines.end())
        if not chunk:
            self._stop_reading()
        self._work()

    def _work(self) -> None:
        """Deliver waiting lines while the block has tokens; else pause the reading."""
        while self._waiting:
            if not self.limit.take():
                self._pause()
                return
            self._take(self._waiting.popleft())

    def _take(self, line: str) -> None:
        try:
            message = parse_line(line)
        except (BadLine, ValueError) as exc:
            self.counts.malformed += 1
            bad = self.counts.malformed
            if bad <= 3 or bad % 1000 == 0:
                log.warning(
                    "%s: %d lines on its event pipe were not events (%s)", self.block, bad,
                    exc, extra={"block": self.block},
                )  # fmt: skip
            return
        self.deliver(self.block, message)

    def _pause(self) -> None:
        if self._resume is not None or self.fd is None:
            return
        self.counts.paused += 1  # times the block was over its rate and reading waited
        self._loop.remove_reader(self.fd)
        self._resume = self._loop.call_later(self.limit.wait(), self._go_on)

    def _go_on(self) -> None:
        self._resume = None
        self._work()
        if self.fd is not None and self._resume is None:
            self._loop.add_reader(self.fd, self._readable)

    def _stop_reading(self) -> None:
        if self.fd is not None:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None

    def drain(self) -> None:
        """The worker is gone: take what it wrote last (the pipe holds at most 64 KiB),
        without the rate limit, and close."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, CHUNK)
            except BlockingIOError:
                chunk = b""
            except OSError:
                chunk = b""
            self._waiting.extend(self._lines.feed(chunk) if chunk else self._lines.end())
            if not chunk:
                self._stop_reading()
        while self._waiting:
            self._take(self._waiting.popleft())


class RoutedEvents:
    """The write end of a pipe to a worker that takes events (a clip recorder).

    Each line is written whole or not at all (a line is at most PIPE_BUF bytes, and the
    pipe does not block): a recorder that is not reading loses events, counted, and the
    loop never waits for it.
    """

    def __init__(self, fd: int, block: str):
        self.fd: int | None = fd
        self.block = block
        self.sent = self.dropped = 0
        os.set_blocking(fd, False)

    def send(self, event: dict[str, Any]) -> None:
        if self.fd is None:
            return
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        if len(line) > ROUTED_LINE:
            self.dropped += 1
            return
        try:
            os.write(self.fd, line)
            self.sent += 1
        except BlockingIOError:
            self.dropped += 1
        except OSError:  # the worker is gone
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
