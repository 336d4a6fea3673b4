"""Putting several frames side by side in one BGR picture, for the screen and the recorder."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Any frame a block may send (grey, BGR, BGRA; uint8 or not) as 8-bit BGR."""
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 if frame.dtype.kind == "f" else 1.0)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def side_by_side(frames: list[np.ndarray]) -> np.ndarray:
    """The frames left to right, each scaled to the first frame's height."""
    height = frames[0].shape[0]
    row = []
    for frame in frames:
        bgr = as_bgr(frame)
        h, w = bgr.shape[:2]
        if h != height:
            width = max(1, round(w * height / h))
            interpolation = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
            bgr = cv2.resize(bgr, (width, height), interpolation=interpolation)
        row.append(bgr)
    return row[0] if len(row) == 1 else cv2.hconcat(row)


def side_by_side_whole(frames: list[np.ndarray], intact: Callable[[], bool]) -> np.ndarray | None:
    """``side_by_side``, as the block's own copy, or None when the first frame (a view
    into the wire) was overwritten while it was taken: nothing torn leaves a sink.

    The check comes after the picture is made: whatever was read before it is whole.
    """
    picture = side_by_side(frames)
    if np.may_share_memory(picture, frames[0]):
        picture = picture.copy()
    return picture if intact() else None


LABEL_SCALE = 1 / 480
"""A label's font scale per pixel of picture height: legible on 240 to 1080 lines."""


def labelled(frames: list[np.ndarray], names: list[str]) -> np.ndarray:
    """The frames side by side, each with its name in its top-left corner (on a dark
    band, legible on any picture): which picture is which input, at a glance."""
    height = frames[0].shape[0]
    scale = max(0.4, height * LABEL_SCALE)
    thickness = max(1, round(scale * 1.5))
    pictures = []
    for frame, name in zip(frames, names, strict=False):
        picture = np.array(as_bgr(frame))  # our own copy: the input may be a read-only view
        h = picture.shape[0]
        size = scale * h / height  # the same size once scaled to the first's height
        (w, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
        pad = max(2, th // 3)
        cv2.rectangle(picture, (0, 0), (w + 2 * pad, th + base + 2 * pad), (0, 0, 0), -1)
        cv2.putText(
            picture, name, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255),
            thickness, cv2.LINE_AA,
        )  # fmt: skip
        pictures.append(picture)
    return side_by_side(pictures + [np.array(as_bgr(f)) for f in frames[len(pictures) :]])


def fit_within(image: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    """``image`` scaled down, keeping its shape, so it fits the box; never scaled up."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w, max_height / h)
    if scale >= 1.0:
        return image
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
