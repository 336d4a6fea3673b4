"""What a camera's packets say about the stream, read without decoding them.

Cameras send H.264 and H.265 as Annex B: NAL units behind start codes (``00 00 01`` or
``00 00 00 01``). A keyframe usually carries the parameter sets (H.265's VPS, the SPS and
PPS) in front of its picture; a camera whose resolution is changed sends a new SPS there
without closing the stream. MJPEG packets are whole JPEG pictures, whose size is in
their frame header. These few functions find that out at the cost of scanning a packet's
first bytes: no decoder is involved.
"""

from __future__ import annotations

import re

_START = re.compile(b"\x00\x00\x01")
_H264_SPS, _H264_PPS = 7, 8
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34
_PARAMETER_SETS = {"h264": (_H264_SPS, _H264_PPS), "hevc": (_HEVC_VPS, _HEVC_SPS, _HEVC_PPS)}
_SEQUENCE = {"h264": _H264_SPS, "hevc": _HEVC_SPS}
START_CODE = b"\x00\x00\x00\x01"


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B packet, without their start codes.

    A NAL unit never ends in a zero byte (it ends with its stop bit), so zeros before a
    start code belong to the next four-byte start code and are dropped.
    """
    starts = [m.end() for m in _START.finditer(data)]
    units = []
    for i, begin in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        unit = data[begin:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def nal_type(codec: str, unit: bytes) -> int:
    """The type of one NAL unit (H.264: 5 bits; H.265: 6 bits after the forbidden bit)."""
    return unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F


def parameter_sets(codec: str, data: bytes) -> list[bytes]:
    """The parameter sets (VPS, SPS, PPS) in a packet or in extradata, in their order;
    empty for codecs without them, or extradata that is not Annex B (MP4's avcC)."""
    kinds = _PARAMETER_SETS.get(codec)
    if kinds is None or not data.startswith((b"\x00\x00\x01", START_CODE)):
        return []
    return [u for u in nal_units(data) if nal_type(codec, u) in kinds]


def sequence_sets(codec: str, units: list[bytes]) -> frozenset[bytes]:
    """The SPS among ``units``: they change with the resolution, the profile, the codec."""
    sps = _SEQUENCE.get(codec)
    return frozenset(u for u in units if nal_type(codec, u) == sps)


def annex_b(units: list[bytes]) -> bytes:
    """NAL units joined with four-byte start codes: extradata as an RTSP camera gives it."""
    return b"".join(START_CODE + u for u in units)


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header (SOF0..SOF15), or None if it has none."""
    i = 2 if bytes(data[:2]) == b"\xff\xd8" else -1
    while i >= 0 and i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if marker == 0xDA:  # start of scan: no frame header before the picture data
            return None
        i += 2 + length
    return None
