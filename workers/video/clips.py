"""Clips around events: one MP4 per event, from ``preroll`` before it to ``postroll`` after.

A recorder in clip mode reads its camera's packets all the time and writes none until an
event of its triggers starts. Then it rewinds its packet wire by the pre-roll (the wire
keeps that much: ``PacketReader.rewind``), so the clip begins at the oldest keyframe
within ``preroll`` seconds before the event, and writes every packet, copied as the
camera sent it (nothing decoded or encoded), until ``postroll`` seconds after the last
open event ended.

Events whose windows overlap share one clip: an event that starts while a clip is being
written joins it; one that starts within ``preroll`` after a clip's end would reach back
into it, so a clip is not closed at once: the packets after its end are held in memory
(``preroll`` seconds of them at most) and written if such an event comes (the clip goes
on without a break), or dropped when none came in time (the clip ends exactly at its
post-roll). A clip is cut into two files only where any segment is (a new stream, a
gap), or after an hour.

``ClipCutter`` decides; the recorder feeds it events and packets and carries out the
rewinds it asks for. Times are the packets' wall-clock arrival times and the events'
own, both Unix seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ipc.packets import CodecParams, Packet
from .segmenter import PacketSegmenter
from .segments import Segment

if TYPE_CHECKING:
    from ..block import Log

CLOSE_MARGIN = 0.5
"""Seconds a clip's end is held past ``preroll`` for an event that is on its way."""


@dataclass
class ClipReport:
    """What the recorder tells the daemon about one file of a clip."""

    events: list[str]
    path: str
    start: float
    end: float | None  # None while it is written; equal to start for a file that is gone


@dataclass
class _Clip:
    events: list[str] = field(default_factory=list)
    files: dict[str, float] = field(default_factory=dict)  # path -> start, files still open


class ClipCutter:
    """Events and packets in, clip files out (through a PacketSegmenter)."""

    IDLE, RECORDING, HOLDING = "idle", "recording", "holding"

    def __init__(
        self,
        segments: PacketSegmenter,
        preroll: float,
        postroll: float,
        report: Callable[[ClipReport], None],
        log: Log,
        clock: Callable[[], float] = time.time,
    ):
        self.segments = segments
        self.preroll = preroll
        self.postroll = postroll
        self.report = report
        self.log = log
        self.clock = clock
        self.state = self.IDLE
        self.open: set[str] = set()  # events started and not ended
        self.until = -math.inf  # the clip goes on to here once nothing is open
        self.clip: _Clip | None = None
        self.held: list[tuple[Packet, CodecParams]] = []
        self.clips = 0
        segments.on_start = self._file_started
        segments.on_finish = self._file_finished

    # -- events ---------------------------------------------------------------------------

    def event(self, event: dict) -> float | None:
        """Take one event of the triggers; the seconds to rewind the input by, if a new
        clip starts (the pre-roll, plus how long ago the event was)."""
        phase, event_id, at = event.get("phase"), str(event.get("id")), float(event.get("at", 0))
        if phase == "end":
            if event_id in self.open:
                self.open.discard(event_id)
                self.until = max(self.until, at + self.postroll)
            return None
        if phase not in ("start", "moment"):
            return None
        if phase == "start":
            self.open.add(event_id)
        else:
            self.until = max(self.until, at + self.postroll)
        rewind = None
        if self.state == self.IDLE:
            self.clip = _Clip()
            self.clips += 1
            self.state = self.RECORDING
            rewind = self.preroll + max(0.0, self.clock() - at)
            self.log.info("clip for %s %s: from %.1f s before", event.get("kind"), event_id, rewind)
        elif self.state == self.HOLDING:
            self._write_held()
            self.state = self.RECORDING
        assert self.clip is not None  # recording or holding: a clip is open
        if event_id not in self.clip.events:
            self.clip.events.append(event_id)
            for path, start in self.clip.files.items():
                self.report(ClipReport(list(self.clip.events), path, start, None))
        return rewind

    # -- packets --------------------------------------------------------------------------

    def take(self, packet: Packet, codec: CodecParams) -> bool:
        """One packet of the input; True if it was written to a clip."""
        if self.state == self.IDLE:
            return False
        at = packet.time_ns / 1e9
        if self.state == self.RECORDING:
            if self.open or at <= self.until:
                return self.segments.take(packet, codec)
            self.state = self.HOLDING
        if at > self.until + self.preroll + CLOSE_MARGIN:
            self.finish()
            return False
        self.held.append((packet, codec))
        return False

    def _write_held(self) -> None:
        held, self.held = self.held, []
        for packet, codec in held:
            self.segments.take(packet, codec)

    def finish(self) -> None:
        """Close the clip being written (its end is its post-roll): back to idle."""
        self.held = []
        self.segments.finish("the clip's post-roll is over")
        self.state = self.IDLE
        self.clip = None
        self.until = -math.inf
        self.open.clear()

    # -- the segmenter's word on files ----------------------------------------------------

    def _file_started(self, segment: Segment, codec: CodecParams) -> None:
        if self.clip is None:
            return
        start = segment.start_ns / 1e9
        self.clip.files[str(segment.path)] = start
        self.report(ClipReport(list(self.clip.events), str(segment.path), start, None))

    def _file_finished(self, segment: Segment) -> None:
        if self.clip is None:
            return
        self.clip.files.pop(str(segment.path), None)
        end = segment.end_ns / 1e9 if segment.size else segment.start_ns / 1e9
        self.report(
            ClipReport(list(self.clip.events), str(segment.path), segment.start_ns / 1e9, end)
        )
