"""Keeping frames to a rate, without a burst of catch-up frames after a stall."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Frames at most ``fps`` a second: waits for sources that pace themselves (testsrc, a
    file), and says which frames are one too many for those that do not (a live camera)."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic):
        self.period = 1.0 / fps
        self.next: float | None = None
        self.clock = clock

    def wait(self, sleep: Callable[[float], bool]) -> bool:
        """Sleep until the next frame is due; False if asked to stop meanwhile."""
        now = self.clock()
        if self.next is None:
            self.next = now
        if self.next > now and not sleep(self.next - now):
            return False
        self._advance(self.clock())
        return True

    def due(self) -> bool:
        """For a live source: is this frame due, or is it one too many for the rate?"""
        now = self.clock()
        if self.next is not None and now < self.next - 0.25 * self.period:  # allow jitter
            return False
        self._advance(now)
        return True

    def _advance(self, now: float) -> None:
        base = now if self.next is None else self.next
        self.next = max(base + self.period, now - self.period)
