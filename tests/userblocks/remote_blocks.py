"""Blocks for the remote-wire tests, loaded as ``userblocks.remote_blocks:…``.

``Bars`` is a source whose pictures say which frame they are: a band of 16 black or
white bars across the top spells the frame's number in binary, big enough to survive
JPEG and H.264, and the rest is a pattern drawn from that number. ``expected(n, shape)``
draws frame n again, so a test that reads a frame on another box can check it whole:
exactly for raw frames, closely for JPEG and H.264 (``psnr``). ``Copy`` passes its input
on unchanged. ``Loop`` (for bench/remote.py) draws 8 numbered pictures once and sends
them in turn: a source of large frames that costs next to nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelined.workers.block import Block, Param, in_range, int_list
from pipelined.workers.video.pace import Pacer

BITS = 16
BAND = 32  # rows of the band of bars


def expected(number: int, shape: tuple[int, ...]) -> np.ndarray:
    """Frame ``number`` as Bars draws it."""
    height, width = shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    picture = ((x * 2 + y + number * 7) % 200 + 28).astype(np.uint8)
    bar = width // BITS
    for bit in range(BITS):
        on = (number >> (BITS - 1 - bit)) & 1
        picture[:BAND, bit * bar : (bit + 1) * bar] = 255 if on else 0
    return np.repeat(picture[:, :, None], 3, axis=2) if len(shape) == 3 else picture


def number_of(frame: np.ndarray) -> int:
    """The frame's number, read from its band of bars."""
    grey = frame if frame.ndim == 2 else frame.mean(axis=2)
    bar = frame.shape[1] // BITS
    number = 0
    for bit in range(BITS):
        middle = grey[4 : BAND - 4, bit * bar + 4 : (bit + 1) * bar - 4]
        number = number << 1 | int(middle.mean() > 128)
    return number


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)


class Bars(Block):
    """A source of numbered pictures, ``fps`` a second."""

    min_inputs = max_inputs = 0
    params = {
        "size": Param(list, default=[320, 240], check=int_list(2, 64, 4096)),
        "fps": Param(float, default=15.0, check=in_range(1, 240)),
    }

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        width, height = params["size"]
        return width * height * 3

    def setup(self) -> None:
        self.number = 0
        self.pacer = Pacer(self.p["fps"])
        width, height = self.p["size"]
        self.shape = (height, width, 3)

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        if not self.pacer.wait(self.context.sleep):
            return None
        self.number = (self.number + 1) % (1 << BITS)
        return expected(self.number, self.shape)


class Copy(Block):
    """Its input, unchanged."""

    def process(self, frames: list[np.ndarray]) -> np.ndarray:
        return frames[0]


class Loop(Bars):
    """Eight numbered pictures drawn once, sent in turn, ``fps`` a second."""

    def setup(self) -> None:
        super().setup()
        self.pictures = [expected(n, self.shape) for n in range(1, 9)]

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        if not self.pacer.wait(self.context.sleep):
            return None
        self.number += 1
        return self.pictures[self.number % len(self.pictures)]
