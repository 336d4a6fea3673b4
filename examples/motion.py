"""An example user block: boxes around whatever moves, and a ``motion`` event while it does.

Use it in a graph file kept in the same folder (see motion.toml):

    [blocks.motion]
    type = "motion:Motion"
    input = "camera"
    threshold = 25

pipelined finds a module that sits next to the graph file; a module installed in the
daemon's Python environment works too (type = "mypackage.mymodule:Motion").
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from pipelined.workers.block import Block, Param, in_range


class Motion(Block):
    """Compares each frame with the one before and draws a box around each change."""

    params = {
        "threshold": Param(int, default=25, check=in_range(1, 255), doc="grey-level change"),
        "min_area": Param(int, default=100, check=in_range(1, 10**7), doc="pixels in a box"),
        "color": Param(list, default=[0, 255, 255], doc="box colour, B G R"),
    }

    @classmethod
    def validate(cls, params: dict) -> list[str]:
        color = params["color"]
        if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            return [f"color must be three integers from 0 to 255, not {color!r}"]
        return []

    def setup(self) -> None:
        self.previous: np.ndarray | None = None
        self.moving = 0  # boxes in the last frame, for anyone who looks
        self.in_event = False  # a motion event is open
        self.last_seen = 0.0

    def process(self, frames: list[np.ndarray]) -> np.ndarray:
        frame = frames[0]
        grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        out = frame.copy()  # the input is a read-only view into shared memory
        if self.previous is not None:
            diff = cv2.absdiff(grey, self.previous)
            _, mask = cv2.threshold(diff, self.config["threshold"], 255, cv2.THRESH_BINARY)
            mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)), iterations=2)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            boxes = [cv2.boundingRect(c) for c in contours]
            boxes = [b for b in boxes if b[2] * b[3] >= self.config["min_area"]]
            for x, y, w, h in boxes:
                cv2.rectangle(out, (x, y), (x + w, y + h), tuple(self.config["color"]), 2)
            self.moving = len(boxes)
            self.tell(boxes, out)
        self.previous = grey
        return out

    def tell(self, boxes: list, picture: np.ndarray) -> None:
        """A ``motion`` event: it starts with the first boxes (the picture, boxes drawn, is
        its snapshot) and ends after a second without any."""
        now = time.monotonic()
        if boxes:
            self.last_seen = now
            if not self.in_event:  # None: over the rate, dropped (and counted)
                started = self.context.event("motion", "start", score=len(boxes), frame=picture)
                self.in_event = started is not None
        elif self.in_event and now - self.last_seen > 1.0:
            self.context.event("motion", "end")
            self.in_event = False

    def close(self) -> None:
        if getattr(self, "in_event", False):
            self.context.event("motion", "end")
