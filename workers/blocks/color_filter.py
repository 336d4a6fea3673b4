"""The colour filter block: keeps the pixels whose colour is in an HSV range, blacks out the rest.

HSV separates colour (hue) from brightness, so one range picks "red" under changing
light. OpenCV's hue runs 0-179. Red sits at both ends of the hue circle: a range whose
low hue is above its high hue wraps around (``hsv_low = [170, …]``, ``hsv_high = [10, …]``
keeps 170-179 and 0-10).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..block import Block, Param, int_list

_HSV = int_list(3, 0, 255)


def _hsv_triple(value: Any) -> str | None:
    """3 integers: hue 0 to 179, saturation and value 0 to 255"""
    return _HSV(value) or (f"hue must be 0-179, not {value[0]}" if value[0] > 179 else None)


class ColorFilter(Block):
    """Outputs its input with everything outside ``hsv_low``..``hsv_high`` black."""

    params = {
        "hsv_low": Param(
            list,
            default=[0, 120, 70],
            doc="[hue 0-179, saturation, value] lower bound",
            check=_hsv_triple,
        ),
        "hsv_high": Param(
            list,
            default=[10, 255, 255],
            doc="[hue 0-179, saturation, value] upper bound;"
            " a hue below hsv_low's wraps around through 0",
            check=_hsv_triple,
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        low, high = params.get("hsv_low", [0, 0, 0]), params.get("hsv_high", [179, 255, 255])
        return [
            f"hsv_low's {name} ({low[i]}) is above hsv_high's ({high[i]}): nothing would pass"
            for i, name in ((1, "saturation"), (2, "value"))
            if low[i] > high[i]
        ]

    def setup(self) -> None:
        low, high = self.config["hsv_low"], self.config["hsv_high"]
        if low[0] <= high[0]:
            ranges = [(low, high)]
        else:  # wraps around the hue circle: low..179 and 0..high
            ranges = [(low, [179, *high[1:]]), ([0, *low[1:]], high)]
        self._ranges = [(np.array(lo, np.uint8), np.array(hi, np.uint8)) for lo, hi in ranges]
        self._hsv: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._extra: np.ndarray | None = None

    def output_like(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], np.dtype]:
        return frames[0].shape, frames[0].dtype

    def process(self, frames: list[np.ndarray]) -> np.ndarray:
        out = np.empty_like(frames[0])
        self.process_into(frames, out)
        return out

    def process_into(self, frames: list[np.ndarray], out: np.ndarray) -> bool:
        frame = frames[0]
        mask = self._mask_of(frame)
        out.fill(0)
        cv2.copyTo(frame, mask, dst=out)
        return True

    def _mask_of(self, frame: np.ndarray) -> np.ndarray:
        """Non-zero where the pixel's colour is in range. Buffers are reused frame to frame."""
        if frame.ndim == 2:
            bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            bgr = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        else:
            bgr = frame
        self._hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV, dst=_reuse(self._hsv, bgr.shape))
        shape = frame.shape[:2]
        (low, high), *more = self._ranges
        self._mask = cv2.inRange(self._hsv, low, high, dst=_reuse(self._mask, shape))
        for low, high in more:
            self._extra = cv2.inRange(self._hsv, low, high, dst=_reuse(self._extra, shape))
            cv2.bitwise_or(self._mask, self._extra, dst=self._mask)
        return self._mask


def _reuse(buffer: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The same uint8 buffer while frames keep their size: no allocation per frame."""
    if buffer is None or buffer.shape != shape:
        return np.empty(shape, np.uint8)
    return buffer
