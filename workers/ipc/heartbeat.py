"""A worker's heartbeat and counters, in a small shared-memory record the daemon reads.

The worker is the only writer; the daemon reads. The record is guarded by the same
kind of seqlock as a wire's slot (see wire.py for the ordering argument), so the
daemon never sees counters from two different moments, nor half a reason string.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import _atomics
from .names import RunNames
from .segment import Segment

SIZE = 4096
MAGIC = int.from_bytes(b"PLDBEAT\0", "little")
VERSION = 4
BUCKETS_S = tuple(0.0005 * 2**i for i in range(12))
"""Upper bounds of the processing-time histogram, 0.5 ms to 1 s; one more bucket is +Inf."""
_MAGIC, _VERSION, _SEQ = 0, 8, 16
_FIELDS = 24  # beat_ns, pid, state, frames_in, frames_out, missed, skipped, busy_ns, 2 lengths
_NFIELDS = 10
_HIST = _FIELDS + 8 * _NFIELDS  # then one count per bucket, +Inf last
_REASON = _HIST + 8 * (len(BUCKETS_S) + 1)
MAX_REASON = 2048
_DETAIL = _REASON + MAX_REASON
MAX_DETAIL = SIZE - _DETAIL
_NONE = 2**64 - 1  # the length of a text that is not set

STARTING, RUNNING, WAITING = 0, 1, 2
"""What the worker says of itself: setting up, working, or waiting for its source."""


@dataclass(frozen=True)
class Beat:
    """One reading of a worker's record."""

    beat_ns: int = 0
    pid: int = 0
    state: int = STARTING
    frames_in: int = 0
    frames_out: int = 0
    """Frames published; a sink's: what it delivered out of the graph (written, served)."""
    missed: int = 0
    """Frames lost because the block could not keep up: its first input's frames that went
    by while it was busy, frames overwritten while it worked on them, packets lapped."""
    skipped: int = 0
    """Frames let go by design: its other inputs' frames it did not sample, and what it
    thinned to its own rate. Not a loss."""
    busy_ns: int = 0
    reason: str | None = None
    busy_hist: tuple[int, ...] = ()
    """Calls of the block's code by duration: counts per BUCKETS_S bucket, then +Inf."""
    detail: str | None = None
    """How the block runs, in its own words (a camera: the size and fps it gets)."""


def bucket(seconds: float) -> int:
    """The histogram bucket of one processing time."""
    for i, bound in enumerate(BUCKETS_S):
        if seconds <= bound:
            return i
    return len(BUCKETS_S)


class Heartbeat:
    """The record of one block, open for writing (worker) or reading (daemon)."""

    def __init__(self, segment: Segment):
        self.name = segment.name
        self._segment = segment
        self._mm = segment.mm
        self._seq = 0

    @classmethod
    def create(cls, names: RunNames, block: str, group: int | None = None) -> Heartbeat:
        segment = Segment.create(names.beat(block), SIZE, group)
        _atomics.store_relaxed(segment.mm, _VERSION, VERSION)
        _atomics.store_release(segment.mm, _MAGIC, MAGIC)
        return cls(segment)

    @classmethod
    def attach(cls, names: RunNames, block: str) -> Heartbeat:
        name = names.beat(block)
        try:
            segment = Segment.attach(name)
        except FileNotFoundError:
            raise FileNotFoundError(f"heartbeat record {name} does not exist") from None
        if segment.size < SIZE or _atomics.load_acquire(segment.mm, _MAGIC) != MAGIC:
            segment.close()
            raise ValueError(f"{name} is not a pipelined heartbeat record")
        beat = cls(segment)
        beat._seq = _atomics.load_relaxed(segment.mm, _SEQ) & ~1
        return beat

    def publish(self, beat: Beat) -> None:
        """Write one consistent record (worker side)."""
        mm = self._mm
        self._seq += 1
        _atomics.store_relaxed(mm, _SEQ, self._seq)
        _atomics.fence_release()
        reason = (beat.reason or "").encode("utf-8", "replace")[:MAX_REASON]
        detail = (beat.detail or "").encode("utf-8", "replace")[:MAX_DETAIL]
        values = (
            beat.beat_ns or time.monotonic_ns(),
            beat.pid or os.getpid(),
            beat.state,
            beat.frames_in,
            beat.frames_out,
            beat.missed,
            beat.skipped,
            beat.busy_ns,
            len(reason) if beat.reason is not None else _NONE,
            len(detail) if beat.detail is not None else _NONE,
        )
        for i, value in enumerate(values):
            _atomics.store_relaxed(mm, _FIELDS + 8 * i, value)
        for i, count in enumerate(beat.busy_hist[: len(BUCKETS_S) + 1]):
            _atomics.store_relaxed(mm, _HIST + 8 * i, count)
        mm[_REASON : _REASON + len(reason)] = reason
        mm[_DETAIL : _DETAIL + len(detail)] = detail
        self._seq += 1
        _atomics.store_release(mm, _SEQ, self._seq)

    def read(self) -> Beat | None:
        """The newest consistent record (daemon side); None before the first beat."""
        mm = self._mm
        for _ in range(100):
            seq = _atomics.load_acquire(mm, _SEQ)
            if seq % 2:
                continue
            if seq == 0:
                return None
            values = [_atomics.load_relaxed(mm, _FIELDS + 8 * i) for i in range(_NFIELDS)]
            hist = tuple(
                _atomics.load_relaxed(mm, _HIST + 8 * i) for i in range(len(BUCKETS_S) + 1)
            )
            reason = self._text(_REASON, values[8], MAX_REASON)
            detail = self._text(_DETAIL, values[9], MAX_DETAIL)
            _atomics.fence_acquire()
            if _atomics.load_relaxed(mm, _SEQ) == seq:
                beat_ns, pid, state, frames_in, frames_out, missed, skipped, busy_ns = values[:8]
                return Beat(
                    beat_ns,
                    pid,
                    state,
                    frames_in,
                    frames_out,
                    missed,
                    skipped,
                    busy_ns,
                    reason=reason,
                    busy_hist=hist,
                    detail=detail,
                )
        return None  # the worker is mid-write every time we look: try again later

    def _text(self, offset: int, length: int, limit: int) -> str | None:
        if length == _NONE:
            return None
        return bytes(self._mm[offset : offset + min(length, limit)]).decode("utf-8", "replace")

    def close(self) -> None:
        self._segment.close()

    def unlink(self) -> None:
        self._segment.unlink()
