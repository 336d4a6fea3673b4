"""What the link counts of each remote wire, and the rates it reports from the counts."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

WINDOW = 2.0
"""Seconds over which fps and bytes/s are measured."""


class WireStats:
    """Counters of one remote wire, safe to bump from a Zenoh or a publishing thread."""

    def __init__(self, clock: Any = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.frames = 0  # samples sent (out) or taken onto the wire (in)
        self.bytes = 0
        self.missed = 0  # frames or packets that never crossed: skipped, lost, stale
        self.refused = 0  # samples refused on arrival (wrong key, shape, type, publisher)
        self.last_at: float | None = None  # when the last sample went or came
        self.reason: str | None = None  # the last refusal, said once to the log
        self.refused_at: float | None = None
        self._samples: deque[tuple[float, int, int]] = deque()  # (when, frames, bytes)

    def moved(self, size: int) -> None:
        with self._lock:
            self.frames += 1
            self.bytes += size
            self.last_at = self._clock()

    def miss(self, count: int = 1) -> None:
        with self._lock:
            self.missed += count

    def refuse(self, reason: str) -> bool:
        """Count a refused sample; True when its reason is new (the caller logs it)."""
        with self._lock:
            self.refused += 1
            self.refused_at = self._clock()
            new = reason != self.reason
            self.reason = reason
            return new

    def rates(self) -> tuple[float, float]:
        """(frames a second, bytes a second) over the last WINDOW seconds."""
        now = self._clock()
        with self._lock:
            self._samples.append((now, self.frames, self.bytes))
            while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW:
                self._samples.popleft()
            then, frames, size = self._samples[0]
            span = now - then
            if span <= 0:
                return 0.0, 0.0
            return (self.frames - frames) / span, (self.bytes - size) / span

    def idle_for(self) -> float | None:
        """Seconds since the last sample; None if none yet."""
        return None if self.last_at is None else self._clock() - self.last_at

    def refused_ago(self) -> float | None:
        """Seconds since the last refusal; None if none."""
        return None if self.refused_at is None else self._clock() - self.refused_at
