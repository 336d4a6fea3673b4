"""Reading back what the recorder wrote, the way a user would: with cv2.VideoCapture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def play(path: str | Path) -> tuple[int, tuple[int, ...], list[np.ndarray]]:
    """Frame count in the header, the first frame's shape, and every frame that decodes."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return declared, frames[0].shape if frames else (), frames
