"""A worker's report: one JSON document in shared memory, written by the worker, read by
the daemon.

The heartbeat (heartbeat.py) carries what every block has: counters, a reason, a line of
detail. A worker with more to say, in a shape of its own (the Zenoh link: each remote
wire's peer, state, rates and drops), writes a report beside it, and the daemon passes it
on to status, /metrics and the page without knowing its fields.

The record is guarded by a seqlock, as the heartbeat is: the daemon never reads half of
one document and half of the next. A document larger than the record is refused by the
writer, never cut.
"""

from __future__ import annotations

import json
from typing import Any

from . import _atomics
from .names import RunNames
from .segment import Segment

SIZE = 64 * 1024
MAGIC = int.from_bytes(b"PLDREPT\0", "little")
_MAGIC, _SEQ, _LENGTH, _DATA = 0, 8, 16, 64
MAX_DOCUMENT = SIZE - _DATA


class ReportTooLarge(ValueError):
    """A document that does not fit the record."""


class Report:
    """The report record of one block, open for writing (worker) or reading (daemon)."""

    def __init__(self, segment: Segment):
        self._segment = segment
        self._mm = segment.mm
        self._seq = _atomics.load_relaxed(segment.mm, _SEQ) & ~1

    @classmethod
    def create(cls, names: RunNames, block: str, group: int | None = None) -> Report:
        segment = Segment.create(names.report(block), SIZE, group)
        _atomics.store_release(segment.mm, _MAGIC, MAGIC)
        return cls(segment)

    @classmethod
    def attach(cls, names: RunNames, block: str) -> Report:
        name = names.report(block)
        segment = Segment.attach(name)  # FileNotFoundError: the daemon made none
        if segment.size < SIZE or _atomics.load_acquire(segment.mm, _MAGIC) != MAGIC:
            segment.close()
            raise ValueError(f"{name} is not a pipelined report record")
        return cls(segment)

    def publish(self, document: dict[str, Any]) -> None:
        """Write one whole document (worker side)."""
        raw = json.dumps(document, separators=(",", ":")).encode("utf-8")
        if len(raw) > MAX_DOCUMENT:
            raise ReportTooLarge(
                f"a report of {len(raw):,} bytes; the record holds {MAX_DOCUMENT:,}"
            )
        mm = self._mm
        self._seq += 1
        _atomics.store_relaxed(mm, _SEQ, self._seq)
        _atomics.fence_release()
        _atomics.store_relaxed(mm, _LENGTH, len(raw))
        mm[_DATA : _DATA + len(raw)] = raw
        self._seq += 1
        _atomics.store_release(mm, _SEQ, self._seq)

    def read(self) -> dict[str, Any] | None:
        """The newest whole document (daemon side); None before the first, or while the
        writer is mid-write every time we look."""
        mm = self._mm
        for _ in range(100):
            seq = _atomics.load_acquire(mm, _SEQ)
            if seq == 0:
                return None
            if seq % 2:
                continue
            length = min(_atomics.load_relaxed(mm, _LENGTH), MAX_DOCUMENT)
            raw = bytes(mm[_DATA : _DATA + length])
            _atomics.fence_acquire()
            if _atomics.load_relaxed(mm, _SEQ) != seq:
                continue
            try:
                document = json.loads(raw)
            except ValueError:
                return None  # not ours to fix: the writer wrote something else
            return document if isinstance(document, dict) else None
        return None

    def close(self) -> None:
        self._segment.close()

    def unlink(self) -> None:
        self._segment.unlink()
