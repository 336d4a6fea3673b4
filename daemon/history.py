"""Each block's figures over the last hour, for the page's plots and ``status --watch``.

The supervisor samples every worker about once a second (CPU, frames in and out per
second). Status shows the newest sample; this keeps the mean of each ``INTERVAL``
seconds for the last ``SPAN`` seconds: at most 360 points per figure and block, however
long the daemon runs. It is asked for with the ``history`` command, apart from
``status``, so that status stays one small reply polled every second.

A block's series survive its restarts (a stopped block's figures are zeros); a block a
reload removed is forgotten. The clock is given, so the tests run an hour in a moment.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

INTERVAL = 10.0
"""Seconds per point."""
SPAN = 3600.0
"""Seconds of history kept."""
FIGURES = ("fps_in", "fps", "cpu_percent")
"""What is kept of each block: the same names as in its status."""
POINTS = int(SPAN / INTERVAL)

Sample = tuple[float, ...]  # one value per FIGURES entry


class History:
    """The recent figures of a graph's blocks, a point every ``INTERVAL`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._points: dict[str, collections.deque[Sample]] = {}
        self._sums: dict[str, list[float]] = {}  # the point being made: sums, then a count
        self._ends: float | None = None  # when the point being made is complete

    def add(self, samples: Mapping[str, Sample]) -> None:
        """One sample of each block's figures (about once a second)."""
        now = self.clock()
        if self._ends is None:
            self._ends = now + INTERVAL
        while now >= self._ends:  # a point is complete (more than one if the loop slept)
            self._close()
            self._ends += INTERVAL
        for name, values in samples.items():
            sums = self._sums.setdefault(name, [0.0] * (len(FIGURES) + 1))
            for i, value in enumerate(values):
                sums[i] += value
            sums[-1] += 1

    def forget(self, names: Iterable[str]) -> None:
        """Blocks a reload removed."""
        for name in names:
            self._points.pop(name, None)
            self._sums.pop(name, None)

    def series(self, names: Iterable[str]) -> dict[str, Any]:
        """``{"interval_s", "span_s", "blocks": {name: {figure: [values, oldest first]}}}``.

        Every series ends now: its last value is the mean of the point being made. A block
        younger than the span has fewer values than ``span_s / interval_s``.
        """
        blocks: dict[str, dict[str, list[float]]] = {}
        for name in names:
            points = list(self._points.get(name, ()))
            sums = self._sums.get(name)
            if sums and sums[-1]:
                points.append(tuple(s / sums[-1] for s in sums[:-1]))
            blocks[name] = {
                figure: [_round(p[i]) for p in points] for i, figure in enumerate(FIGURES)
            }
        return {"interval_s": INTERVAL, "span_s": SPAN, "blocks": blocks}

    def _close(self) -> None:
        """The point being made is complete: its means join each block's series."""
        for name, sums in self._sums.items():
            points = self._points.setdefault(name, collections.deque(maxlen=POINTS))
            count = sums[-1]
            points.append(tuple(s / count if count else 0.0 for s in sums[:-1]))
            sums[:] = [0.0] * len(sums)


def _round(value: float) -> float:
    return round(value, 1) if math.isfinite(value) else 0.0
