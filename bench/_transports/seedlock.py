"""The seed's design: one shared-memory slot, one named semaphore used as a lock around it.

The writer takes the lock, copies the frame in, bumps the counter and lets go; a reader
takes the lock, copies the frame out if the counter moved, and lets go; with nothing
new it sleeps ``POLL`` and looks again (the slot has no doorbell). Nothing stops the
writer from taking the lock straight back, which is how readers starve when it runs
flat out. Lock waits here time out (the seed's did not), so a stuck run ends.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import posix_ipc

from pipelined.workers.ipc.names import RunNames

from .common import Ctx, Got, Recv, Send, complete, fill, source_frame, touch

POLL = 0.001  # s between looks when there is no new frame
DATA = 4096  # the frame starts one page in; the page before holds the counter
LOCK_TIMEOUT = 1.0


def _names(ctx: Ctx) -> tuple[str, str]:
    base = f"/{RunNames('bench', ctx.run).stem}seed.{ctx.label}"
    return base, base + ".lock"


class Owner:
    def __init__(self, ctx: Ctx):
        self.segment, self.lock = _names(ctx)
        shm = posix_ipc.SharedMemory(self.segment, posix_ipc.O_CREX, size=DATA + ctx.nbytes)
        shm.close_fd()
        posix_ipc.Semaphore(self.lock, posix_ipc.O_CREX, mode=0o600, initial_value=1).close()

    def attached(self) -> None:
        self.close()

    def close(self) -> None:
        for unlink, name in (
            (posix_ipc.unlink_shared_memory, self.segment),
            (posix_ipc.unlink_semaphore, self.lock),
        ):
            try:
                unlink(name)
            except posix_ipc.ExistentialError:
                pass


def setup(ctx: Ctx) -> Owner:
    return Owner(ctx)


@contextmanager
def _slot(ctx: Ctx) -> Iterator[tuple[np.ndarray, np.ndarray, posix_ipc.Semaphore]]:
    segment, lock_name = _names(ctx)
    shm = posix_ipc.SharedMemory(segment)
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    lock = posix_ipc.Semaphore(lock_name)
    counter = np.ndarray(1, np.uint64, buffer=mm)
    data = np.ndarray(ctx.shape, np.uint8, buffer=mm, offset=DATA)
    try:
        yield counter, data, lock
    finally:
        del counter, data
        lock.close()
        mm.close()


@contextmanager
def writer(ctx: Ctx, handles: dict) -> Iterator[Send]:
    src = source_frame(ctx.shape)
    with _slot(ctx) as (counter, data, lock):

        def send(count: int) -> None:
            fill(src, count)
            complete(src)
            lock.acquire(LOCK_TIMEOUT)
            try:
                np.copyto(data, src)
                counter[0] = count
            finally:
                lock.release()

        yield send


@contextmanager
def reader(ctx: Ctx, index: int, handles: dict) -> Iterator[Recv]:
    last = 0
    with _slot(ctx) as (counter, data, lock):

        def recv(timeout: float) -> Got | None:
            nonlocal last
            deadline = time.monotonic() + timeout
            while True:
                try:
                    lock.acquire(LOCK_TIMEOUT)
                except posix_ipc.BusyError:
                    return None
                try:
                    new = int(counter[0])
                    frame = data.copy() if new != last else None
                finally:
                    lock.release()
                if frame is not None:
                    t_recv = time.monotonic_ns()
                    last = new
                    ts, ok = touch(frame)
                    return ts, t_recv, ok
                if time.monotonic() >= deadline:
                    return None
                time.sleep(POLL)

        yield recv
