"""The motion block: boxes around whatever moves, and a ``motion`` event while it does.

Each frame is compared with the one before, in grey, within ``region`` (a part of the
picture, as fractions of its width and height: a doorway, a drive). Changes of more
than ``threshold`` grey levels that make a box of ``min_area`` pixels or more are
motion. After ``start_frames`` frames in a row with motion the block raises a
``motion`` start, with the frame and its boxes as the snapshot; after ``end_after``
seconds without any, the end, with the peak. The score is the share of the region that
moved (0 to 1), the end's score the largest seen during the event.

The output is the input with the boxes drawn (and the region, when it is not the whole
picture), so a preview or a recorder shows what the block saw.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from ..block import Block, Param, in_range

KIND = "motion"
MAX_BOXES = 20
"""Boxes an event's data carries: the largest ones."""


def _color(value: Any) -> str | None:
    if len(value) != 3 or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value
    ):
        return f"must be three integers from 0 to 255 (B, G, R), not {value!r}"
    return None


def _region(value: Any) -> str | None:
    if len(value) != 4 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return f"must be [left, top, width, height] as fractions of the picture, not {value!r}"
    left, top, width, height = value
    if not (0 <= left < 1 and 0 <= top < 1 and 0 < width <= 1 and 0 < height <= 1):
        return f"must lie in the picture (0 <= left, top < 1; 0 < width, height <= 1), not {value}"
    if left + width > 1.0001 or top + height > 1.0001:
        return f"runs past the picture's edge (left + width, top + height <= 1), not {value!r}"
    return None


class Motion(Block):
    """Draws a box around each change between frames; raises `motion` while things move."""

    event_kinds = (KIND,)
    params = {
        "threshold": Param(int, default=25, check=in_range(1, 255), doc="grey-level change"),
        "min_area": Param(
            int, default=100, check=in_range(1, 10**7), doc="pixels a box needs to count"
        ),
        "region": Param(
            list,
            default=[0.0, 0.0, 1.0, 1.0],
            check=_region,
            doc="[left, top, width, height], fractions of the picture, where motion counts",
        ),
        "start_frames": Param(
            int,
            default=2,
            check=in_range(1, 1000),
            doc="frames in a row with motion before the event starts",
        ),
        "end_after": Param(
            float,
            default=2.0,
            check=in_range(0, 3600),
            doc="seconds without motion before the event ends",
        ),
        "color": Param(list, default=[0, 255, 255], check=_color, doc="box colour, B G R"),
        "draw": Param(bool, default=True, doc="draw the boxes (and the region) on the output"),
    }

    def setup(self) -> None:
        self.previous: np.ndarray | None = None
        self.moving = 0  # boxes in the last frame, for anyone who looks
        self.streak = 0  # frames in a row with motion
        self.active = False
        self.last_motion = 0.0
        self.peak = 0.0
        self.peak_area = 0

    def process(self, frames: list[np.ndarray]) -> np.ndarray:
        frame = frames[0]
        out = frame.copy()  # the input is a read-only view into shared memory
        x0, y0, x1, y1 = self._region(frame.shape)
        grey = _grey(frame[y0:y1, x0:x1])
        boxes: list[tuple[int, int, int, int]] = []
        if self.previous is not None and self.previous.shape == grey.shape:
            boxes = self._boxes(grey, self.previous, (x0, y0))
        self.previous = grey
        self.moving = len(boxes)
        if self.config["draw"]:
            self._draw(out, boxes, (x0, y0, x1, y1))
        area = sum(w * h for _, _, w, h in boxes)
        self._follow(out, boxes, area / max(1, (x1 - x0) * (y1 - y0)), area)
        return out

    # -- seeing ---------------------------------------------------------------------------

    def _region(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        height, width = shape[:2]
        left, top, w, h = self.config["region"]
        x0, y0 = int(left * width), int(top * height)
        return (
            x0,
            y0,
            max(x0 + 1, min(width, round((left + w) * width))),
            max(y0 + 1, min(height, round((top + h) * height))),
        )

    def _boxes(
        self, grey: np.ndarray, previous: np.ndarray, origin: tuple[int, int]
    ) -> list[tuple[int, int, int, int]]:
        diff = cv2.absdiff(grey, previous)
        _, mask = cv2.threshold(diff, self.config["threshold"], 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)), iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ox, oy = origin
        boxes = [cv2.boundingRect(c) for c in contours]
        return [(x + ox, y + oy, w, h) for x, y, w, h in boxes if w * h >= self.config["min_area"]]

    def _draw(
        self, out: np.ndarray, boxes: list[tuple[int, int, int, int]], region: tuple[int, ...]
    ) -> None:
        color = tuple(self.config["color"]) if out.ndim == 3 else 255
        for x, y, w, h in boxes:
            cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        x0, y0, x1, y1 = region
        if (x0, y0, x1, y1) != (0, 0, out.shape[1], out.shape[0]):
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, 1)

    # -- the event ------------------------------------------------------------------------

    def _follow(
        self, out: np.ndarray, boxes: list[tuple[int, int, int, int]], score: float, area: int
    ) -> None:
        now = time.monotonic()
        if boxes:
            self.streak += 1
            self.last_motion = now
        else:
            self.streak = 0
        if not self.active and self.streak >= self.config["start_frames"]:
            self.active = True
            self.peak, self.peak_area = score, area
            self.context.event(
                KIND, "start", score=round(score, 4), frame=out, data=_data(boxes, area)
            )
        elif self.active and boxes and score > self.peak:
            self.peak, self.peak_area = score, area
        elif self.active and not boxes and now - self.last_motion >= self.config["end_after"]:
            self._end()

    def _end(self) -> None:
        self.active = False
        self.context.event(
            KIND, "end", score=round(self.peak, 4), data={"peak_area": self.peak_area}
        )

    def close(self) -> None:
        if getattr(self, "active", False):
            self._end()


def _grey(picture: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY) if picture.ndim == 3 else picture
    return cv2.GaussianBlur(grey, (5, 5), 0)


def _data(boxes: list[tuple[int, int, int, int]], area: int) -> dict[str, Any]:
    largest = sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)[:MAX_BOXES]
    return {"area": area, "boxes": [list(b) for b in largest]}
