"""``pipectl export``: a recorder's segments over a time range joined into one file.

Nothing is decoded or encoded: the packets of each segment are copied in order (PyAV,
imported only by this verb). pipectl reads the segment files itself, so it must be able
to (root, the daemon's user, or a member of its group: the service writes them 0640).
The file begins at the last keyframe at or before ``--since`` (a picture cannot begin
elsewhere without re-encoding) and ends with the last picture before ``--until``. Time
in the file is time in the recording: a gap between segments stays a gap (players hold
the last picture over it). A range in which the stream changes (another resolution or
codec) cannot be one stream: the error says where to split it.

It is written to ``.FILE.part`` beside ``FILE`` and renamed when complete, with its index
at the front (``faststart``), so a browser can play it as it downloads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .when import show

FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
CONTIGUOUS = 1.0
"""Seconds between one segment's end and the next one's start still counted as no gap."""


class ExportError(Exception):
    """The range cannot be exported as asked; ``str()`` says why and what to do."""


@dataclass
class Exported:
    segments: int
    packets: int
    seconds: float
    start: float  # Unix seconds of the first picture
    bytes: int


def export(recordings: list[dict[str, Any]], since: float, until: float, out: Path) -> Exported:
    """Join ``recordings`` (entries of the ``recordings`` command, oldest first) into ``out``."""
    import av

    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ExportError(f"{out}: the file must end in {', '.join(FORMATS)}")
    if not recordings:
        raise ExportError(f"no recording between {show(since)} and {show(until)}")
    begun = [i for i, entry in enumerate(recordings) if entry["start"] <= since]
    recordings = recordings[begun[-1] :] if begun else recordings  # since's own keyframe
    partial = out.with_name(f".{out.name}.part")
    joiner = _Joiner(since, until)
    try:
        with av.open(str(partial), "w", format=fmt, options={"movflags": "+faststart"}) as output:
            for entry in recordings:
                joiner.add(output, entry)
        if joiner.packets == 0:
            raise ExportError(f"no picture between {show(since)} and {show(until)}")
        os.replace(partial, out)
    except av.error.FFmpegError as exc:
        raise ExportError(f"{out}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Exported(
        joiner.segments, joiner.packets, joiner.seconds, joiner.first_time or since,
        out.stat().st_size,
    )  # fmt: skip


class _Joiner:
    """Copies the packets of one segment after another, on one timeline."""

    def __init__(self, since: float, until: float):
        self.since, self.until = since, until
        self.stream: Any = None
        self.shape: tuple[str, int, int, bytes] | None = None
        self.first_time: float | None = None  # the Unix time of the file's time 0
        self.last_end = Fraction(0)  # where the previous segment's last picture ended
        self.last_dts = -1
        self.segments = self.packets = 0
        self.seconds = 0.0

    def add(self, output: Any, entry: dict[str, Any]) -> None:
        import av

        path = entry["path"]
        try:
            container = av.open(path)
        except PermissionError:
            raise ExportError(
                f"{path}: permission denied: export reads the recordings itself; run it as"
                " the daemon's user, root, or a member of the daemon's group"
            ) from None
        with container:
            source = container.streams.video[0]
            self._check_stream(output, source, entry)
            packets = self._within(container, source, entry)
            if packets:
                self._copy(output, packets, float(entry["start"]), source.time_base)

    def _copy(self, output: Any, packets: list, start: float, source_tb: Fraction) -> None:
        """Mux ``packets`` (with their seconds from the segment's start) after the last."""
        if self.first_time is None:
            self.first_time = start + float(packets[0][0])
        offset = Fraction(start - self.first_time)
        if abs(offset - self.last_end) < CONTIGUOUS:
            offset = self.last_end  # back to back: no gap where there was none
        tb = self.stream.time_base
        for seconds, packet in packets:
            at = offset + seconds
            shown = at + (packet.pts - packet.dts) * source_tb if packet.pts is not None else at
            dts = max(round(at / tb), self.last_dts + 1)
            packet.stream, packet.time_base = self.stream, tb
            packet.dts, packet.pts = dts, max(dts, round(shown / tb))
            packet.duration = round((packet.duration or 0) * source_tb / tb)
            output.mux(packet)
            self.last_dts = dts
            self.packets += 1
        last_seconds, last = packets[-1]
        self.last_end = offset + last_seconds + (last.duration or 0) * tb
        self.segments += 1
        self.seconds = float(self.last_end)

    def _check_stream(self, output: Any, source: Any, entry: dict[str, Any]) -> None:
        context = source.codec_context
        shape = (context.name, context.width, context.height, bytes(context.extradata or b""))
        if self.stream is None or self.shape is None:
            self.stream = output.add_stream_from_template(source)
            self.stream.time_base = source.time_base
            self.shape = shape
        elif shape != self.shape:
            at = show(float(entry["start"]))
            raise ExportError(
                f"the recording changes at {at} ({self.shape[0]} {self.shape[1]}x"
                f"{self.shape[2]} -> {shape[0]} {shape[1]}x{shape[2]}): one file holds one"
                f" stream; export up to it (--until '{at}') and from it (--since '{at}')"
                " separately"
            )

    def _within(self, container: Any, source: Any, entry: dict[str, Any]) -> list:
        """The segment's packets in the range, from the last keyframe at or before since,
        each with its time (seconds from the segment's start)."""
        import av

        start, tb = float(entry["start"]), source.time_base
        packets: list[tuple[float, Any]] = []
        first_dts = None
        try:
            for packet in container.demux(source):
                if packet.dts is None or not packet.size:
                    continue
                if first_dts is None:
                    first_dts = packet.dts
                seconds = (packet.dts - first_dts) * tb
                if start + seconds > self.until:
                    break
                if packet.is_keyframe and start + seconds <= self.since:
                    packets = []  # a later keyframe before since: begin there
                packets.append((seconds, packet))
        except av.error.FFmpegError:
            pass  # a segment still being written ends in a fragment cut short
        return packets
