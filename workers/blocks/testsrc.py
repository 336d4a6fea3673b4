"""The synthetic scene behind ``source = "testsrc"``.

A camera box with no camera still needs frames that give every block real work: a red
square for the colour filter to keep, sharp outlines for the edge detector, and a frame
counter and clock so a viewer can tell the picture is live. The scene is a function of
the frame number, so tests get the same picture for the same frame.
"""

from __future__ import annotations

import datetime

import cv2
import numpy as np

RED = (0, 0, 255)  # BGR, hue 0: what the colour filter's default range keeps
GREEN = (0, 200, 0)
BLUE = (255, 60, 0)
TEXT = (20, 20, 20)


class TestScene:
    """Renders frames of one size; the red square crosses the frame in four seconds."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, width: int, height: int, fps: float = 30.0):
        self.width = width
        self.height = height
        self.fps = fps
        self._background = _background(width, height)

    def render(self, frame_number: int) -> np.ndarray:
        out = np.empty((self.height, self.width, 3), np.uint8)
        self.render_into(out, frame_number)
        return out

    def render_into(self, out: np.ndarray, frame_number: int) -> None:
        """Draw frame ``frame_number`` into ``out`` (height x width x 3, uint8)."""
        np.copyto(out, self._background)
        t = frame_number / self.fps
        x, y, side = self.red_square(frame_number)
        cv2.rectangle(out, (x, y), (x + side - 1, y + side - 1), RED, thickness=cv2.FILLED)
        self._draw_green_circle(out, t)
        self._draw_blue_triangle(out, t)
        self._draw_text(out, frame_number)

    def red_square(self, frame_number: int) -> tuple[int, int, int]:
        """Left, top and side of the red square in a frame: it moves along the upper band."""
        side = max(4, min(self.width, self.height) // 6)
        t = frame_number / self.fps
        x = round(_bounce(t / 4.0) * (self.width - side))
        y = round(0.35 * self.height) - side // 2
        return x, y, side

    def _draw_green_circle(self, out: np.ndarray, t: float) -> None:
        radius = max(3, self.height // 10)
        angle = 2 * np.pi * t / 5.0
        cx = round(self.width * 0.25 + np.cos(angle) * self.width * 0.1)
        cy = round(self.height * 0.72 + np.sin(angle) * self.height * 0.05)
        cv2.circle(out, (cx, cy), radius, GREEN, thickness=cv2.FILLED, lineType=cv2.LINE_AA)

    def _draw_blue_triangle(self, out: np.ndarray, t: float) -> None:
        half = max(3, self.height // 10)
        cx = round(self.width * 0.75)
        cy = round(self.height * (0.62 + 0.2 * _bounce(t / 3.0)))
        points = np.array([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)])
        cv2.fillPoly(out, [points.astype(np.int32)], BLUE, lineType=cv2.LINE_AA)

    def _draw_text(self, out: np.ndarray, frame_number: int) -> None:
        scale = max(0.3, self.height / 600)
        thickness = max(1, round(scale * 1.5))
        line = round(28 * scale) + 4
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(out, f"testsrc frame {frame_number}", (6, line), font, scale, TEXT, thickness)
        cv2.putText(out, now, (6, self.height - 8), font, scale, TEXT, thickness)


def _bounce(phase: float) -> float:
    """0 -> 1 -> 0 as ``phase`` goes 0 -> 0.5 -> 1, repeating."""
    phase %= 1.0
    return 2 * phase if phase < 0.5 else 2 - 2 * phase


def _background(width: int, height: int) -> np.ndarray:
    """A light grey gradient: texture for the encoders, no colour for the filter to keep,
    and bright enough that the red square stands out in grey too (for the edges)."""
    ramp_x = np.linspace(140, 190, width, dtype=np.float32)
    ramp_y = np.linspace(0, 20, height, dtype=np.float32)
    grey = (ramp_y[:, None] + ramp_x[None, :]).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
