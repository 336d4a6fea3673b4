"""INTEGRATOR: a minimal stand-in for ``workers/video/encode.py``'s ``FrameEncoder``.

The camera branch builds the real encoder (presets, rates, the hardware encoder with
fallback). The recorder was written against its API before it landed on main; once it
has, import ``FrameEncoder`` from ``.encode`` in ``workers/blocks/recorder.py`` and
delete this file. The API the recorder relies on:

    FrameEncoder(width, height, fps, codec="h264", preset=..., bitrate=...)
    .params -> CodecParams           (Annex B extradata: SPS/PPS)
    .encode(bgr, pts) -> [packet]    (pts in params.time_base; packet has data, pts,
                                      dts, duration, keyframe)
    .flush() -> [packet]
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np

from ..ipc.packets import CodecParams

TIME_BASE = (1, 90000)


class EncodedPacket(NamedTuple):
    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool


class FrameEncoder:
    """libx264 with global headers, a keyframe every two seconds, no B-frames."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        codec: str = "h264",
        preset: str = "veryfast",
        bitrate: int = 2_000_000,
    ):
        if codec != "h264":
            raise ValueError(f"this stand-in encodes h264 only, not {codec!r}")
        context = av.CodecContext.create("libx264", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = Fraction(*TIME_BASE)
        context.framerate = Fraction(fps).limit_denominator(1000)
        context.bit_rate = bitrate
        context.flags |= av.codec.context.Flags.global_header
        keyint = max(1, round(2 * fps))
        context.options = {
            "preset": preset,
            "tune": "zerolatency",
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0",
        }
        context.open()
        self._context = context
        self.params = CodecParams(
            "h264", width, height, TIME_BASE, bytes(context.extradata or b""), "yuv420p", bitrate
        )

    def encode(self, bgr: np.ndarray, pts: int) -> list[EncodedPacket]:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = self._context.time_base
        return [_packet(p) for p in self._context.encode(frame)]

    def flush(self) -> list[EncodedPacket]:
        return [_packet(p) for p in self._context.encode(None)]


def _packet(packet: av.Packet) -> EncodedPacket:
    assert packet.pts is not None and packet.dts is not None, "libx264 stamps every packet"
    return EncodedPacket(
        bytes(packet), packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe
    )
