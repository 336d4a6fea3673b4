"""Fragmented MP4 files from encoded packets, as cameras send them: the one place that muxes.

A camera (RTSP, or libx264 with global headers) gives H.264/H.265 in Annex B: start
codes before each NAL unit, and SPS/PPS as Annex B ``extradata``. MP4 wants an avcC/hvcC
record and length-prefixed NAL units; FFmpeg's mov muxer converts both, but only when
the stream's codec parameters carry the Annex B headers as extradata, and PyAV 18 has
no setter that reaches the muxer (``add_mux_stream`` has none; a codec context's
``extradata`` is not copied for a stream that is never encoded). So the stream is made
from a template: the headers are demuxed from memory by FFmpeg's own raw H.264/H.265
demuxer, whose stream then carries exactly the extradata the muxer needs
(``add_stream_from_template`` copies the codec parameters whole). A camera that sends
its SPS/PPS in-band only (empty extradata) has them read from its first keyframe. A
source that already gives avcC/hvcC and length-prefixed packets (an MP4 file) is turned
into Annex B first, so every stream takes the same way.

The file is fragmented (``frag_keyframe+empty_moov+default_base_moof``, and a fragment
at least every ``FRAGMENT_SECONDS``): the header is written first, and each fragment is
a self-contained ``moof``+``mdat`` written in one go as it is complete (``flush_packets``,
a buffer larger than a fragment) and synced (``fdatasync``, at most once a second). A
SIGKILL or a power cut loses at most the fragment being written; everything before it
plays.
"""

from __future__ import annotations

import io
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..ipc.packets import CodecParams

MUXABLE = ("h264", "hevc", "mjpeg")
"""The codecs an MP4 segment takes (FFmpeg's names)."""
FRAGMENT_SECONDS = 1.0
"""The longest fragment: what a power cut can cost, at most."""
WRITE_BUFFER = 8 * 1024 * 1024
"""Bytes FFmpeg gathers before it writes: more than a fragment (a second at 8 Mbit/s is
1 MB), so that each fragment reaches the file in one write() and a kill between two
writes cannot leave half a fragment at its end."""
SYNC_INTERVAL = 1.0
"""Seconds between fdatasync calls: a fragment reaches the card within about this."""
START_CODE = b"\x00\x00\x00\x01"
_RAW_FORMATS = {"h264": "h264", "hevc": "hevc"}


class MuxError(Exception):
    """A stream that cannot be written to MP4 as given; ``str()`` says why."""


class Mp4Writer:
    """One fragmented MP4 file of one stream; packets go in as the camera sent them.

    ``first`` is the first packet's data, a keyframe: with the extradata it tells the
    muxer the stream's headers. Timestamps are in ``params.time_base`` and must not go
    backwards (the recorder starts each file at 0).
    """

    def __init__(self, path: Path, params: CodecParams, first: bytes):
        if params.codec not in MUXABLE:
            raise MuxError(
                f"cannot write {params.codec!r} video to MP4: the codecs it takes here are"
                f" {', '.join(MUXABLE)}"
            )
        self.path = path
        self.params = params
        self.time_base = Fraction(*params.time_base)
        self._length_size = _length_size(params)
        self._file = open(path, "xb", buffering=0)  # noqa: SIM115 (closed in close())
        try:
            self._container: av.container.OutputContainer | None = av.open(
                self._file, "w", format="mp4", options=_options(params.codec),
                buffer_size=WRITE_BUFFER,
            )  # fmt: skip
            self._stream = self._add_stream(first)
        except BaseException:
            self._file.close()
            path.unlink(missing_ok=True)
            raise
        self._fd = self._file.fileno()
        self._synced_size = 0
        self._next_sync = 0.0
        self.packets = 0

    def _add_stream(self, first: bytes) -> Any:
        params = self.params
        container = self._container
        assert container is not None, "a stream is added right after the file is opened"
        if params.codec not in _RAW_FORMATS:  # MJPEG: every packet stands alone
            stream = container.add_mux_stream(
                params.codec, width=params.width, height=params.height
            )
        else:
            headers = (
                self._annexb(params.extradata, headers=True)
                if params.extradata  # alone: every segment of a stream gets the same record
                else self._annexb(first)  # a camera that sends SPS/PPS in-band only
            )
            try:
                with av.open(io.BytesIO(headers), format=_RAW_FORMATS[params.codec]) as demux:
                    stream = container.add_stream_from_template(
                        demux.streams.video[0], width=params.width, height=params.height
                    )
            except (av.error.FFmpegError, IndexError) as exc:
                raise MuxError(
                    f"the {params.codec} stream's headers (SPS/PPS) cannot be read: {exc}"
                ) from None
        stream.time_base = self.time_base
        return stream

    def _annexb(self, data: bytes, headers: bool = False) -> bytes:
        if self._length_size is None:
            return data
        if headers:
            return parameter_sets_to_annexb(self.params.codec, data)
        return length_prefixed_to_annexb(data, self._length_size)

    def write(self, data: bytes, pts: int, dts: int, duration: int, keyframe: bool) -> None:
        """Add one packet; raises OSError (ENOSPC included) when the file cannot grow."""
        packet = av.Packet(self._annexb(data))
        packet.stream = self._stream
        packet.time_base = self.time_base
        packet.pts, packet.dts, packet.duration = pts, dts, duration
        packet.is_keyframe = keyframe
        if self._container is None:
            raise MuxError("write() after close()")
        self._container.mux(packet)
        self.packets += 1
        self._sync_fragments()

    def _sync_fragments(self) -> None:
        """fdatasync once a fragment has landed (the file grew), at most every second."""
        now = time.monotonic()
        if now < self._next_sync:
            return
        size = os.fstat(self._fd).st_size
        if size > self._synced_size:
            os.fdatasync(self._fd)
            self._synced_size, self._next_sync = size, now + SYNC_INTERVAL

    @property
    def size(self) -> int:
        """Bytes on the disk so far: the header and every complete fragment."""
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        """Write the last fragment and the index at the end, and sync. Safe to call twice.

        The file stays whole up to its last flushed fragment even if this fails (a full
        disk): the error is raised after everything is released.
        """
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            container.close()
            os.fdatasync(self._fd)
        finally:
            self._file.close()


def _options(codec: str) -> dict[str, str]:
    flags = "empty_moov+default_base_moof"
    if codec in _RAW_FORMATS:  # a fragment starts at each keyframe; MJPEG: all are
        flags = "frag_keyframe+" + flags
    return {
        "movflags": flags,
        "frag_duration": str(int(FRAGMENT_SECONDS * 1e6)),
        "flush_packets": "1",
    }


def _length_size(params: CodecParams) -> int | None:
    """The NAL length size when extradata is an avcC/hvcC record (an MP4 source), else None."""
    extra = params.extradata
    if params.codec not in _RAW_FORMATS or not extra or extra[0] != 1:
        return None  # Annex B headers start with a start code (a zero byte)
    where = 4 if params.codec == "h264" else 21
    if len(extra) <= where:
        raise MuxError(f"the {params.codec} extradata is a truncated configuration record")
    return (extra[where] & 3) + 1


def parameter_sets_to_annexb(codec: str, record: bytes) -> bytes:
    """An avcC (H.264) or hvcC (H.265) record's parameter sets, with start codes."""
    units: list[bytes] = []
    try:
        if codec == "h264":
            at, count = 6, record[5] & 0x1F
            for group in range(2):  # SPS, then PPS
                for _ in range(count):
                    size = int.from_bytes(record[at : at + 2], "big")
                    units.append(record[at + 2 : at + 2 + size])
                    at += 2 + size
                if group == 0:
                    count, at = record[at], at + 1
        else:
            at, arrays = 23, record[22]
            for _ in range(arrays):
                count = int.from_bytes(record[at + 1 : at + 3], "big")
                at += 3
                for _ in range(count):
                    size = int.from_bytes(record[at : at + 2], "big")
                    units.append(record[at + 2 : at + 2 + size])
                    at += 2 + size
    except IndexError:
        raise MuxError(f"the {codec} extradata is a truncated configuration record") from None
    return b"".join(START_CODE + unit for unit in units)


def length_prefixed_to_annexb(data: bytes, length_size: int) -> bytes:
    """NAL units each after a big-endian length (MP4) -> each after a start code."""
    out = bytearray()
    at, end = 0, len(data)
    while at + length_size <= end:
        size = int.from_bytes(data[at : at + length_size], "big")
        at += length_size
        out += START_CODE
        out += data[at : at + size]
        at += size
    return bytes(out)
