"""Per-call cost of the wire's API next to iceoryx2's, hot, in one process (``--overhead``).

The cross-process runs show what a reader gets; this shows where a frame's time goes
when nothing waits: each call repeated on the same frame size, the mean in µs. Only the
Python-visible cost is here (no doorbell is rung: both readers' bells are already up,
and iceoryx2's notify is timed on its own).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from pipelined.workers.ipc.names import RunNames, new_run_token
from pipelined.workers.ipc.segment import unlink_run
from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter

from .common import READERS, Ctx, complete, fill, touch

N = 20_000


def _mean_us(fn: Callable[[], object], n: int = N) -> float:
    for _ in range(n // 10):
        fn()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1e3


def measure(size: str) -> list[tuple[str, float]]:
    width, height = map(int, size.split("x"))
    names = RunNames("bench", new_run_token())
    tmpdir = tempfile.mkdtemp(prefix="plb-", dir="/tmp")
    ctx = Ctx("iceoryx2-view", width, height, names.run, tmpdir)
    rows: list[tuple[str, float]] = []
    wire = Wire.create(names, "overhead", ctx.nbytes, READERS)
    try:
        writer = WireWriter(names, "overhead")
        readers = [WireReader(names, "overhead", i) for i in range(READERS)]
        shape, count = ctx.shape, [0]

        def loan_write() -> None:
            count[0] += 1
            out = writer.borrow(shape, np.uint8)
            fill(out, count[0])
            writer.publish(complete(out))

        def borrow_only() -> None:
            writer.borrow(shape, np.uint8)  # borrowing again just re-takes the same slot

        def view_read() -> None:
            loan_write()
            frame = readers[0].read(0)
            touch(frame.array)
            frame.intact()

        rows.append(("wire  borrow()", _mean_us(borrow_only)))
        rows.append(("wire  borrow + fill + publish()", _mean_us(loan_write)))
        rows.append(("wire  read() + touch + intact()", _mean_us(view_read) - _mean_us(loan_write)))
        for r in readers:
            r.close()
        writer.close()
        rows += _iceoryx2(ctx)
    finally:
        wire.unlink()
        wire.close()
        unlink_run(names)
        shutil.rmtree(tmpdir, ignore_errors=True)
    return rows


def _iceoryx2(ctx: Ctx) -> list[tuple[str, float]]:
    from . import iox as t

    node, pubsub, event = t._services(ctx)
    pub = pubsub.publisher_builder().initial_max_slice_len(ctx.nbytes).create()
    subs = [pubsub.subscriber_builder().buffer_size(1).create() for _ in range(READERS)]
    notifier = event.notifier_builder().create()
    listeners = [event.listener_builder().create() for _ in range(READERS)]
    count = [0]

    def loan() -> object:
        count[0] += 1
        sample = pub.loan_slice_uninit(ctx.nbytes)
        out = t._array(ctx, sample.payload_ptr)
        fill(out, count[0])
        complete(out)
        return sample

    def loan_send() -> None:
        loan().assume_init().send()

    def view_read() -> None:
        loan_send()
        sample = subs[0].receive()
        touch(t._array(ctx, sample.payload_ptr))
        sample.delete()

    rows = [
        ("iceoryx2  loan_slice_uninit() + view", _mean_us(lambda: loan().delete())),
        ("iceoryx2  loan + fill + send()", _mean_us(loan_send)),
        ("iceoryx2  notify() (2 listeners)", _mean_us(notifier.notify)),
        ("iceoryx2  receive() + view + touch", _mean_us(view_read) - _mean_us(loan_send)),
    ]
    for listener in listeners:
        listener.delete()
    for sub in subs:
        sub.delete()
    notifier.delete()
    pub.delete()
    del node
    return rows
