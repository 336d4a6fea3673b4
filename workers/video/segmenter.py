"""A stream of packets cut into MP4 segments: at keyframes, and wherever the stream breaks.

A segment starts at a keyframe and ends:

- at the first keyframe ``segment_seconds`` (of the stream's own time) after its start;
- when the stream changes (a new generation of codec parameters: another resolution
  or codec): the next segment starts at the new stream's first keyframe;
- at a gap: packets lost (the reader was lapped: their numbers jump), packets that
  arrive more than ``gap_seconds`` after the one before (a camera that reconnected),
  or timestamps that go back or jump ahead. No segment spans a gap, so a gap in the
  recording is a gap between files.

Each file's timestamps start at 0. When a segment is closed its modification time is set
to the end of its last picture (``segments.py``: the name says the start, the mtime the
end), and it joins the storage's index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from ..ipc.packets import NO_PTS, CodecParams, Packet
from .mux import Mp4Writer
from .segments import Segment
from .storage import Storage

if TYPE_CHECKING:
    from ..block import Log

CHECK_INTERVAL = 1.0
"""Seconds between storage checks while a segment is written."""
MIN_SEGMENT_BYTES = 1024
"""A segment that ends smaller holds no fragment, only a header: it is deleted."""


@dataclass
class _Open:
    """The segment being written."""

    writer: Mp4Writer
    generation: int
    start_ns: int
    first_dts: int
    last_dts: int
    last_duration: int = 0
    packets: int = 0

    @property
    def time_base(self) -> Fraction:
        return self.writer.time_base

    def seconds(self, ticks: int) -> float:
        return float(ticks * self.time_base)


class PacketSegmenter:
    """Packets of one input (in order, as the packet wire delivers them) -> segments."""

    def __init__(
        self,
        storage: Storage,
        segment_seconds: float,
        gap_seconds: float,
        log: Log,
        on_start: Callable[[Segment, CodecParams], None] | None = None,
        on_finish: Callable[[Segment], None] | None = None,
    ):
        self.storage = storage
        self.segment_seconds = segment_seconds
        self.gap_seconds = gap_seconds
        self.log = log
        self.on_start = on_start
        self.on_finish = on_finish
        self.open: _Open | None = None
        self._last: Packet | None = None
        self._next_check = 0.0
        self._interval = 0  # ticks between the last two pictures
        self.segments = 0
        self.waiting_for_keyframe = 0

    def take(self, packet: Packet, codec: CodecParams) -> bool:
        """Write ``packet`` (False: skipped until a keyframe starts a segment).

        Raises ``DiskFull`` or ``OSError`` when the disk cannot take it (the segment is
        then closed), ``MuxError`` for a stream MP4 cannot hold.
        """
        cut = self._cut(packet)
        self._last = packet
        if cut is not None and self.open is not None:
            self.finish(cut)
        if self.open is None:
            if not packet.keyframe:
                self.waiting_for_keyframe += 1
                return False
            self._start(packet, codec)
        assert self.open is not None
        try:
            self._write(self.open, packet)
            self._check_storage()
        except OSError:
            self.finish("the disk refused a write")
            raise
        return True

    def _cut(self, packet: Packet) -> str | None:
        """Why ``packet`` cannot go on in the open segment, or None if it can."""
        seg, last = self.open, self._last
        if seg is None or last is None:
            return None
        if packet.generation != seg.generation:
            return "the stream changed"
        if packet.number != last.number + 1:
            return f"a gap: {packet.number - last.number - 1} packets were lost (lapped)"
        late = (packet.time_ns - last.time_ns) / 1e9
        if late > self.gap_seconds:
            return f"a gap: no packet for {late:.1f} s"
        dts = _dts(packet, seg.time_base)
        if dts <= seg.last_dts:
            return "a gap: the timestamps went back"
        if seg.seconds(dts - seg.last_dts) > self.gap_seconds:
            return f"a gap: the timestamps jumped {seg.seconds(dts - seg.last_dts):.1f} s"
        if packet.keyframe and seg.seconds(dts - seg.first_dts) >= self.segment_seconds:
            return ""  # the segment is long enough: the ordinary cut
        return None

    def _start(self, packet: Packet, codec: CodecParams) -> None:
        self.storage.make_room(time.time_ns())
        path = self.storage.new_path(packet.time_ns, "mp4")
        writer = Mp4Writer(path, codec, packet.data)
        dts = _dts(packet, writer.time_base)
        self.open = _Open(writer, packet.generation, packet.time_ns, dts, dts - 1)
        self.segments += 1
        self._next_check = time.monotonic() + CHECK_INTERVAL
        self.log.info("recording to %s (%s %dx%d)", path, codec.codec, codec.width,
                      codec.height)  # fmt: skip
        if self.on_start is not None:
            self.on_start(Segment(packet.time_ns, path.name, packet.time_ns, 0, path), codec)

    def _write(self, seg: _Open, packet: Packet) -> None:
        dts = _dts(packet, seg.time_base)
        pts = max(packet.pts, dts)  # no pts (or a broken one): shown when decoded
        if seg.packets:
            self._interval = dts - seg.last_dts
        # Cameras rarely say how long a picture lasts; the muxer needs it for the last
        # one of a fragment, and the one before is the best guess.
        duration = packet.duration or self._interval
        seg.writer.write(
            packet.data, pts - seg.first_dts, dts - seg.first_dts, duration, packet.keyframe
        )
        seg.last_dts, seg.last_duration = dts, duration
        seg.packets += 1

    def _check_storage(self) -> None:
        now = time.monotonic()
        if now < self._next_check or self.open is None:
            return
        self._next_check = now + CHECK_INTERVAL
        self.storage.make_room(time.time_ns(), self.open.writer.size)

    def finish(self, why: str = "") -> Segment | None:
        """Close the open segment (if any) and add it to the index; the segment or None."""
        seg, self.open = self.open, None
        if seg is None:
            return None
        path = seg.writer.path
        try:
            seg.writer.close()
        except OSError as exc:  # a full disk: what was flushed before stays playable
            self.log.warning("%s: closing it failed (%s); it plays up to its last fragment",
                             path.name, exc)  # fmt: skip
        size = path.stat().st_size if path.exists() else 0
        if size < MIN_SEGMENT_BYTES:
            path.unlink(missing_ok=True)
            if self.on_finish is not None:  # size 0: it is gone
                self.on_finish(Segment(seg.start_ns, path.name, seg.start_ns, 0, path))
            return None
        end_ns = seg.start_ns + int(seg.seconds(self._span(seg)) * 1e9)
        os.utime(path, ns=(end_ns, end_ns))
        segment = Segment(seg.start_ns, path.name, end_ns, size, path)
        self.storage.add(segment)
        if self.on_finish is not None:
            self.on_finish(segment)
        if why:
            self.log.info("%s ends after %.1f s: %s", path.name, segment.duration, why)
        return segment

    @staticmethod
    def _span(seg: _Open) -> int:
        """The segment's length in ticks: to the end of its last picture."""
        return seg.last_dts - seg.first_dts + seg.last_duration


def _dts(packet: Packet, time_base: Fraction) -> int:
    """The packet's decoding time; from its pts, or its arrival time, when it has none."""
    if packet.dts != NO_PTS:
        return packet.dts
    if packet.pts != NO_PTS:
        return packet.pts
    return int(packet.time_ns / 1e9 / time_base)
