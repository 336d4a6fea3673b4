"""iceoryx2's Python binding: publish-subscribe of ``Slice[c_uint8]`` samples.

The writer always loans its sample (``loan_slice_uninit``): ``iceoryx2-view`` fills it in
place like ``wire-loan-view``; ``iceoryx2-copy`` copies the finished frame into it, as
``wire.write()`` does, and its readers copy the frame out, as ``read_copy()`` does. Both
sides see the sample as a numpy array, as a camera decode or OpenCV would need it.

Waking the readers: after each send the writer notifies an event service of the same
name; a reader that finds no sample waits on its Listener (``timed_wait``), the
counterpart of the wire's doorbell. A busy poll would shave microseconds off the latency
at the price of a full core per reader.

Newest-frame semantics as on the wire: safe overflow and a subscriber buffer of one, so
the publisher never waits and a slow reader finds only the newest sample. Everything
iceoryx2 creates lives under a per-run prefix (``pipelined.bench.<run>.iox2.``) and root
directory, so the parent removes what a killed process leaves behind.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from contextlib import contextmanager

import iceoryx2 as iox
import numpy as np

from pipelined.workers.ipc.names import RunNames

from . import TRANSPORTS
from .common import READERS, Ctx, Got, Recv, Send, complete, fill, source_frame, touch


def setup(ctx: Ctx) -> None:
    return None  # the processes open-or-create the services themselves


def _services(ctx: Ctx) -> tuple[iox.Node, object, object]:
    iox.set_log_level(iox.LogLevel.Error)
    cfg = iox.config.default()
    cfg.global_cfg.prefix = iox.FileName.new(f"{RunNames('bench', ctx.run).stem}iox2.")
    cfg.global_cfg.root_path = iox.Path.new(ctx.tmpdir.rstrip("/") + "/")  # short: sockets
    node = (
        iox.NodeBuilder.new()
        .config(cfg)
        .signal_handling_mode(iox.SignalHandlingMode.Disabled)
        .create(iox.ServiceType.Ipc)
    )
    name = iox.ServiceName.new(f"bench/{ctx.label}")
    pubsub = (
        node.service_builder(name)
        .publish_subscribe(iox.Slice[ctypes.c_uint8])
        .enable_safe_overflow(True)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .subscriber_max_borrowed_samples(1)
        .max_publishers(1)
        .max_subscribers(READERS)
        .open_or_create()
    )
    event = node.service_builder(name).event().open_or_create()
    return node, pubsub, event


def _array(ctx: Ctx, address: int) -> np.ndarray:
    """A numpy view of a sample's payload."""
    raw = (ctypes.c_uint8 * ctx.nbytes).from_address(address)
    return np.frombuffer(raw, np.uint8).reshape(ctx.shape)


@contextmanager
def writer(ctx: Ctx, handles: dict) -> Iterator[Send]:
    node, pubsub, event = _services(ctx)
    pub = (
        pubsub.publisher_builder()
        .initial_max_slice_len(ctx.nbytes)
        .allocation_strategy(iox.AllocationStrategy.Static)
        .max_loaned_samples(1)
        .create()
    )
    notifier = event.notifier_builder().create()
    nbytes = ctx.nbytes

    if TRANSPORTS[ctx.transport].write == "loan":

        def send(count: int) -> None:
            sample = pub.loan_slice_uninit(nbytes)
            out = _array(ctx, sample.payload_ptr)
            fill(out, count)
            complete(out)
            sample.assume_init().send()
            notifier.notify()

    else:
        src = source_frame(ctx.shape)

        def send(count: int) -> None:
            fill(src, count)
            complete(src)
            sample = pub.loan_slice_uninit(nbytes)
            np.copyto(_array(ctx, sample.payload_ptr), src)
            sample.assume_init().send()
            notifier.notify()

    try:
        yield send
    finally:
        notifier.delete()
        pub.delete()
        del node  # a Node has no delete(): it goes with its last reference


@contextmanager
def reader(ctx: Ctx, index: int, handles: dict) -> Iterator[Recv]:
    node, pubsub, event = _services(ctx)
    sub = pubsub.subscriber_builder().buffer_size(1).create()
    listener = event.listener_builder().create()
    waits: dict[float, iox.Duration] = {}
    copy = TRANSPORTS[ctx.transport].read == "copy"

    def recv(timeout: float) -> Got | None:
        sample = sub.receive()
        if sample is None:
            wait = waits.get(timeout) or waits.setdefault(
                timeout, iox.Duration.from_secs_f64(timeout)
            )
            listener.timed_wait(wait)
            sample = sub.receive()
            if sample is None:
                return None
        frame = _array(ctx, sample.payload_ptr)
        if copy:
            frame = frame.copy()
            t_recv = time.monotonic_ns()
            sample.delete()
            ts, ok = touch(frame)
        else:
            t_recv = time.monotonic_ns()
            ts, ok = touch(frame)
            del frame  # the view must not outlive the sample
            sample.delete()
        return ts, t_recv, ok

    try:
        yield recv
    finally:
        listener.delete()
        sub.delete()
        del node
