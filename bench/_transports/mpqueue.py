"""multiprocessing.Queue: one bounded queue per reader, the frame pickled through a pipe.

A queue hands each item to one consumer, so fanning out to two readers takes two queues
and two puts. Each queue holds two frames and ``put`` blocks when it is full: the
writer waits for the slower reader, the natural use of a Queue. (With ``put_nowait``
and dropping, a writer spinning flat out starves its own feeder thread of the GIL and
delivers a third of the frames.) The queues only travel to processes that
multiprocessing starts, so this transport runs its processes with the spawn context (a
fresh interpreter, like subprocess). The counter and capture time ride in the item
beside the frame: the queue's feeder thread pickles the frame after ``put`` returns.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .common import READERS, Ctx, Got, Recv, Send, source_frame

DEPTH = 2
PUT_TIMEOUT = 5.0  # s; only a reader that died makes put() wait this long


class Owner:
    def __init__(self, ctx: Ctx):
        spawn = multiprocessing.get_context("spawn")
        self.handles = {"queues": [spawn.Queue(maxsize=DEPTH) for _ in range(READERS)]}

    def attached(self) -> None:
        pass

    def close(self) -> None:
        for q in self.handles["queues"]:
            q.close()
            q.cancel_join_thread()


def setup(ctx: Ctx) -> Owner:
    return Owner(ctx)


@contextmanager
def writer(ctx: Ctx, handles: dict) -> Iterator[Send]:
    queues = handles["queues"]
    src = source_frame(ctx.shape)

    def send(count: int) -> None:
        item = (count, time.monotonic_ns(), src)
        for q in queues:
            q.put(item, timeout=PUT_TIMEOUT)

    try:
        yield send
    finally:
        for q in queues:
            q.close()
            # Let the feeder thread finish the frame it is writing: a reader stuck in the
            # middle of a message would wait forever (the parent holds the pipe open too).
            # The readers read on for a while after the writer's last phase.
            q.join_thread()


@contextmanager
def reader(ctx: Ctx, index: int, handles: dict) -> Iterator[Recv]:
    q = handles["queues"][index]
    nbytes = ctx.nbytes

    def recv(timeout: float) -> Got | None:
        try:
            count, ts, frame = q.get(timeout=timeout)
        except queue.Empty:
            return None
        t_recv = time.monotonic_ns()
        _ends = int(frame.flat[0]), int(frame.flat[-1])  # touch it, as the other readers do
        return ts, t_recv, count > 0 and frame.nbytes == nbytes

    yield recv
