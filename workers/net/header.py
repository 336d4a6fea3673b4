"""The header every sample of a remote wire carries, in its Zenoh attachment.

The payload is the frame's or packet's bytes, as they are (a JPEG, an H.264 packet, raw
pixels); the attachment says what they are, so that the receiving box can check them
before anything reaches its wires::

    magic "PLZ1", version, kind (h264, jpeg, raw), flags (keyframe, params follow)
    stream    the publisher's random id for this run: a second publisher on the key shows
    sequence  1, 2, … per stream: gaps are frames (or packets) lost on the way
    time_ns   when the frame was taken, wall clock (CLOCK_REALTIME) of the sending box
    pts, dts, duration, generation   a packet's place in its stream (h264)
    shape (up to 4 dimensions) and numpy dtype of the frame (raw; jpeg: the picture's)
    sender    the publishing session's Zenoh id (16 bytes): which peer sent it
    then, when flagged, the stream's codec parameters (JSON, as on a packet wire)

``parse`` refuses anything else with a reason a person can act on: a sample published
by something that is not pipelined, a newer header version, a shape that is not one.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"PLZ1"
VERSION = 1
KINDS = {"h264": 1, "jpeg": 2, "raw": 3}
_NAMES = {v: k for k, v in KINDS.items()}
FLAG_KEYFRAME = 1
FLAG_PARAMS = 2
MAX_DIMS = 4
MAX_PARAMS = 8192
_FIXED = struct.Struct("<4sBBBBQQqqqQI4I8s16sI")
# magic, version, kind, flags, ndim, stream, seq, time_ns, pts, dts, duration, generation,
# shape (4 x u32), dtype (8 bytes), sender (16 bytes), params length


class HeaderError(ValueError):
    """A sample whose header is not one pipelined writes; the message says why."""


@dataclass(frozen=True)
class Header:
    kind: str
    stream: int
    seq: int
    time_ns: int
    shape: tuple[int, ...] = ()
    dtype: str = "|u1"
    keyframe: bool = True
    pts: int = 0
    dts: int = 0
    duration: int = 0
    generation: int = 0
    sender: bytes = b""
    params: bytes = b""  # CodecParams.to_bytes(), on keyframes and generation changes

    def pack(self) -> bytes:
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_PARAMS if self.params else 0)
        dims = (*self.shape, *(0,) * (MAX_DIMS - len(self.shape)))
        fixed = _FIXED.pack(
            MAGIC, VERSION, KINDS[self.kind], flags, len(self.shape), self.stream, self.seq,
            self.time_ns, self.pts, self.dts, self.duration, self.generation, *dims,
            self.dtype.encode("ascii"), self.sender[:16], len(self.params),
        )  # fmt: skip
        return fixed + self.params

    @property
    def nbytes(self) -> int:
        """The bytes a raw frame of this shape and dtype takes."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def parse(raw: bytes | None) -> Header:
    """The header of a sample's attachment; HeaderError saying what is wrong with it."""
    if raw is None:
        raise HeaderError("it carries no pipelined header (published by something else?)")
    if len(raw) < _FIXED.size or raw[:4] != MAGIC:
        raise HeaderError("its attachment is not a pipelined header (published by something else?)")
    (
        _, version, kind, flags, ndim, stream, seq, time_ns, pts, dts, duration, generation,
        d0, d1, d2, d3, dtype, sender, params_length,
    ) = _FIXED.unpack_from(raw)  # fmt: skip
    if version != VERSION:
        raise HeaderError(
            f"its header is version {version}; this pipelined reads version {VERSION}:"
            " run the same pipelined on both boxes"
        )
    if kind not in _NAMES:
        raise HeaderError(f"it says it is of kind {kind}, which is none of h264, jpeg, raw")
    if ndim > MAX_DIMS:
        raise HeaderError(f"its frame has {ndim} dimensions; a wire takes at most {MAX_DIMS}")
    if seq == 0:
        raise HeaderError("its sequence number is 0; pipelined counts from 1")
    if params_length > MAX_PARAMS or len(raw) != _FIXED.size + params_length:
        raise HeaderError("its header's length does not add up")
    shape = (d0, d1, d2, d3)[:ndim]
    text = dtype.rstrip(b"\0").decode("ascii", "replace")
    try:
        parsed = np.dtype(text)
    except TypeError:
        raise HeaderError(f"its frame type {text!r} is not a numpy dtype") from None
    if parsed.hasobject or parsed.itemsize == 0 or parsed.fields is not None:
        raise HeaderError(f"its frame type {text!r} cannot travel on a wire (plain numbers only)")
    return Header(
        kind=_NAMES[kind],
        stream=stream,
        seq=seq,
        time_ns=time_ns,
        shape=shape,
        dtype=parsed.str,
        keyframe=bool(flags & FLAG_KEYFRAME),
        pts=pts,
        dts=dts,
        duration=duration,
        generation=generation,
        sender=sender,
        params=bytes(raw[_FIXED.size :]) if flags & FLAG_PARAMS else b"",
    )
