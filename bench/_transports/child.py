"""A writer or reader process: open the transport, say ready, run the schedule, report.

The parent talks to it over one line-oriented channel: the child sends ``{"ready": pid}``
once its transport is open, receives ``{"schedule": …}``, and sends ``{"result": …}`` at
the end. Subprocess children use stdin/stdout (stdout is moved aside first, so a library
that prints cannot garble the protocol); spawned children (mp-queue) use a Pipe.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Protocol

from . import load
from .common import Ctx, Schedule, reader_loop, writer_loop

MARK = "@bench "


class Channel(Protocol):
    def send(self, msg: dict) -> None: ...
    def recv(self) -> dict | None: ...


class StdioChannel:
    """Protocol lines on the original stdout; everything else printed goes to stderr."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, msg: dict) -> None:
        self._out.write(MARK + json.dumps(msg) + "\n")

    def recv(self) -> dict | None:
        line = sys.stdin.readline()
        return json.loads(line) if line else None  # EOF: the parent is gone


class PipeChannel:
    def __init__(self, conn: Any):
        self._conn = conn

    def send(self, msg: dict) -> None:
        self._conn.send(msg)

    def recv(self) -> dict | None:
        try:
            return self._conn.recv()
        except EOFError:
            return None


def _quit_on_sigterm() -> None:
    """SIGTERM unwinds (closing the transport); Ctrl-C is the parent's to handle."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(role: str, ctx: Ctx, index: int, chan: Channel, handles: dict | None = None) -> int:
    _quit_on_sigterm()
    handles = handles or {}
    mod = load(ctx.transport)
    opened = mod.writer(ctx, handles) if role == "writer" else mod.reader(ctx, index, handles)
    with opened as endpoint:
        chan.send({"ready": os.getpid()})
        msg = chan.recv()
        if msg is None:
            return 1
        schedule = Schedule.from_json(msg["schedule"])
        loop = writer_loop if role == "writer" else reader_loop
        result = loop(endpoint, schedule)
    chan.send({"result": result})
    return 0


def spawn_main(role: str, ctx: Ctx, index: int, conn: Any, handles: dict) -> None:
    """Entry point of a process started by multiprocessing's spawn context."""
    sys.exit(run(role, ctx, index, PipeChannel(conn), handles))
