"""The edge detector block: Canny edges of its input, as a single-channel image (255 = edge).

An optional Gaussian blur first keeps sensor noise and JPEG blocks from showing up as
edges. ``low`` and ``high`` are Canny's hysteresis thresholds on the gradient: pixels
above ``high`` start an edge, pixels above ``low`` continue one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..block import Block, Param, in_range


def _blur_size(value: Any) -> str | None:
    """0, or an odd number from 3 to 31"""
    if value == 0 or (value % 2 == 1 and 3 <= value <= 31):
        return None
    return f"must be 0 (no blur) or an odd number from 3 to 31, not {value}"


class EdgeDetector(Block):
    """Outputs Canny edges: one channel, the input's width and height."""

    params = {
        "low": Param(
            float, default=50.0, doc="lower hysteresis threshold", check=in_range(0, 2000)
        ),
        "high": Param(
            float, default=150.0, doc="upper hysteresis threshold", check=in_range(0, 2000)
        ),
        "blur": Param(
            int, default=5, doc="Gaussian blur kernel size; 0 = none, else odd", check=_blur_size
        ),
        "l2_gradient": Param(bool, default=False, doc="exact gradient magnitude (slower)"),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        low, high = params.get("low", 0), params.get("high", 0)
        if low > high:
            return [f"low ({low}) must not be above high ({high})"]
        return []

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        """One byte a pixel. The input's channel count is not known when the graph is
        loaded, and a grey input has as many pixels as bytes: its size always fits."""
        if not input_bytes:
            raise ValueError("edge_detector needs an input")
        return max(input_bytes)

    def setup(self) -> None:
        self._gray: np.ndarray | None = None
        self._blurred: np.ndarray | None = None

    def output_like(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], np.dtype]:
        return frames[0].shape[:2], np.dtype(np.uint8)

    def process(self, frames: list[np.ndarray]) -> np.ndarray:
        out = np.empty(frames[0].shape[:2], np.uint8)
        self.process_into(frames, out)
        return out

    def process_into(self, frames: list[np.ndarray], out: np.ndarray) -> bool:
        image = self._gray_of(frames[0])
        blur = self.config["blur"]
        if blur:
            self._blurred = cv2.GaussianBlur(
                image, (blur, blur), 0, dst=_reuse(self._blurred, image.shape)
            )
            image = self._blurred
        cv2.Canny(
            image,
            self.config["low"],
            self.config["high"],
            edges=out,
            L2gradient=self.config["l2_gradient"],
        )
        return True

    def _gray_of(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            return frame
        code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        self._gray = cv2.cvtColor(frame, code, dst=_reuse(self._gray, frame.shape[:2]))
        return self._gray


def _reuse(buffer: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if buffer is None or buffer.shape != shape:
        return np.empty(shape, np.uint8)
    return buffer
