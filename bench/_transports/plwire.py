"""pipelined's wire: copy-in ``write()`` or loaned ``borrow()``/``publish()``; view or copy reads.

Readers wait on their doorbells (``read(timeout)``), as the real workers do. A zero-copy
reader calls ``intact()`` after touching the frame; a frame overwritten meanwhile counts
as torn, not delivered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter

from . import TRANSPORTS
from .common import READERS, Ctx, Got, Recv, Send, complete, fill, source_frame, touch


class Owner:
    """The parent's handle: it creates the wire as the daemon would."""

    def __init__(self, ctx: Ctx):
        self.wire = Wire.create(RunNames("bench", ctx.run), ctx.label, ctx.nbytes, READERS)

    def attached(self) -> None:
        self.wire.unlink()  # everyone has it mapped and its doorbells open

    def close(self) -> None:
        self.wire.unlink()
        self.wire.close()


def setup(ctx: Ctx) -> Owner:
    return Owner(ctx)


@contextmanager
def writer(ctx: Ctx, handles: dict) -> Iterator[Send]:
    w = WireWriter(RunNames("bench", ctx.run), ctx.label)
    shape = ctx.shape

    if TRANSPORTS[ctx.transport].write == "loan":

        def send(count: int) -> None:
            out = w.borrow(shape, np.uint8)
            fill(out, count)
            w.publish(complete(out))

    else:
        src = source_frame(shape)

        def send(count: int) -> None:
            fill(src, count)
            w.write(src, complete(src))

    try:
        yield send
    finally:
        w.close()


@contextmanager
def reader(ctx: Ctx, index: int, handles: dict) -> Iterator[Recv]:
    r = WireReader(RunNames("bench", ctx.run), ctx.label, index)

    read = r.read if TRANSPORTS[ctx.transport].read == "view" else r.read_copy

    def recv(timeout: float) -> Got | None:
        frame = read(timeout)
        if frame is None:
            return None
        t_recv = time.monotonic_ns()
        ts, ok = touch(frame.array)
        return ts, t_recv, ok and frame.intact()  # a copy is always intact

    try:
        yield recv
    finally:
        r.close()
