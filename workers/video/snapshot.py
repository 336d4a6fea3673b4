"""One picture out of an encoded stream, without decoding the rest: a keyframe, alone.

A keyframe (an IDR picture in H.264/H.265; every MJPEG packet) decodes without the
packets before it, so a recorder that copies packets can still keep a ``latest.jpg`` by
decoding one keyframe now and then: a fresh decoder each time, fed the stream's headers
and that one packet, then drained.
"""

from __future__ import annotations

from typing import cast

import av
import numpy as np

from ..ipc.packets import CodecParams


class SnapshotError(Exception):
    """The packet did not decode into a picture."""


def decode_keyframe(data: bytes, codec: CodecParams) -> np.ndarray:
    """The keyframe ``data`` of a stream with ``codec`` as a BGR picture (height, width, 3)."""
    try:
        decoder = cast(av.VideoCodecContext, av.CodecContext.create(codec.codec, "r"))
        if codec.extradata:
            decoder.extradata = codec.extradata
        frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
    except (av.error.FFmpegError, ValueError) as exc:
        raise SnapshotError(f"a {codec.codec} keyframe did not decode: {exc}") from None
    if not frames:
        raise SnapshotError(f"a {codec.codec} keyframe gave no picture")
    return frames[-1].to_ndarray(format="bgr24")
