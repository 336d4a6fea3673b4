"""What to decode of a camera's stream, from moment to moment.

Decoding is most of what a camera costs, so it is done only as far as someone needs it:
nothing while no one reads the camera's frames; every frame by default; with
``decode_fps``, a few frames a second, and then from keyframes alone when the camera
sends them often enough. (Every P-frame needs the frames before it, so anything between
keyframes means decoding them all, and only the conversion to BGR is saved.) MJPEG, all
keyframes, costs only the frames that are due.

No FFmpeg here: the camera block imports this when the daemon loads a graph.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from .pace import Pacer


class Want(enum.Enum):
    """What the camera's thread wants its feed to hand over for decoding."""

    NOTHING = 0
    KEYFRAMES = 1
    EVERYTHING = 2


BACKLOG_UNKNOWN = 1 << 30
"""Before the first frame any backlog counts as catching up: the first frame converted is
the newest of those waiting."""
KEYFRAMES_ENOUGH = 1.1
"""Keyframes are enough when one comes at most 10% later than ``1 / decode_fps``."""


class DecodePolicy:
    """How much of the stream to decode and convert, from moment to moment."""

    def __init__(
        self,
        fps: float,
        decode_fps: float,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.decode_fps = decode_fps
        self.rate = min(fps, decode_fps) if decode_fps else fps
        self.live = live
        self._pacer = Pacer(self.rate, clock)
        self._backlog = BACKLOG_UNKNOWN  # packets waiting at the last convert_now

    def want(self, readers: bool, keyframe_interval: float | None, intra_only: bool) -> Want:
        """What to decode now: ``readers`` says whether anyone takes the frames."""
        if not readers:
            self._backlog = BACKLOG_UNKNOWN  # when decoding starts again, it catches up
            return Want.NOTHING
        if not self.decode_fps:
            return Want.EVERYTHING
        if intra_only:
            return Want.KEYFRAMES  # every packet a picture of its own
        if keyframe_interval and keyframe_interval * self.decode_fps <= KEYFRAMES_ENOUGH:
            return Want.KEYFRAMES
        return Want.EVERYTHING

    def decode_now(self, want: Want, backlog: int) -> bool:
        """Whether to decode this packet: in keyframe mode, only the due ones (the newest
        when several wait); otherwise all, since the next frames need them."""
        if want is not Want.KEYFRAMES:
            return True
        if self.live and backlog:
            return False
        return self._pacer.due()

    def convert_now(self, want: Want, backlog: int) -> bool:
        """Whether to turn this decoded frame into the camera's output.

        A live source: not while the decoder catches up (newer packets wait, fewer than
        last time: the newest is what counts); but a decoder that cannot catch up (as
        many wait each time, or more: a box too busy for the stream) still converts a
        frame when one is due, or it would never give one. A file without
        ``decode_fps`` gives every frame, paced where it is read.
        """
        if want is Want.KEYFRAMES:
            return True  # decode_now chose it
        if not self.live and not self.decode_fps:
            return True
        catching_up = self.live and 0 < backlog < self._backlog
        self._backlog = backlog
        if catching_up:
            return False
        return self._pacer.due()

    def describe(self, want: Want, keyframe_interval: float | None) -> str:
        if want is Want.NOTHING:
            return "not decoding: no one reads its frames"
        if want is Want.KEYFRAMES:
            every = f"one every {keyframe_interval:.2g} s, " if keyframe_interval else ""
            return f"decoding keyframes only ({every}at most {self.rate:g} a second)"
        if self.decode_fps:
            return f"decoding every frame (converting {self.rate:g} a second)"
        return "decoding every frame"
