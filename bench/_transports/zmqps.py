"""pyzmq PUB/SUB over ipc://, frames sent with ``copy=False``.

Each message is two parts: a 16-byte header (counter, capture time) and the frame.
``copy=False`` hands the writer's buffer to libzmq without a Python copy; the bytes still
cross the kernel socket. The stamp travels in the header, not in the pixels, because
libzmq may still be reading the buffer while the writer prepares the next frame.
High-water marks of two messages keep a slow reader near the newest frame (PUB drops
beyond them) instead of letting a queue of old frames build up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import zmq

from .common import HEAD, Ctx, Got, Recv, Send, source_frame

HWM = 2


def setup(ctx: Ctx) -> None:
    return None  # the socket file lives in ctx.tmpdir, removed with it


def _endpoint(ctx: Ctx) -> str:
    return f"ipc://{os.path.join(ctx.tmpdir, ctx.label)}.ipc"


@contextmanager
def writer(ctx: Ctx, handles: dict) -> Iterator[Send]:
    zctx = zmq.Context()
    pub = zctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(_endpoint(ctx))
    src = source_frame(ctx.shape)

    def send(count: int) -> None:
        header = HEAD.pack(count, time.monotonic_ns())
        pub.send(header, zmq.SNDMORE)
        pub.send(src, copy=False)

    try:
        yield send
    finally:
        pub.close()
        zctx.term()


@contextmanager
def reader(ctx: Ctx, index: int, handles: dict) -> Iterator[Recv]:
    zctx = zmq.Context()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(_endpoint(ctx))
    nbytes = ctx.nbytes

    def recv(timeout: float) -> Got | None:
        if not sub.poll(int(timeout * 1000)):
            return None
        header, body = sub.recv_multipart(copy=False)
        t_recv = time.monotonic_ns()
        count, ts = HEAD.unpack(header.bytes)
        frame = np.frombuffer(body.buffer, np.uint8)
        _ends = int(frame[0]), int(frame[-1])  # touch it, as the other readers do
        return ts, t_recv, count > 0 and frame.nbytes == nbytes

    try:
        yield recv
    finally:
        sub.close()
        zctx.term()
