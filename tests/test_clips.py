"""Clips around events: the cutting policy with packets whose times the test sets, and
the whole chain in a daemon: testsrc's square moving through the motion block's region,
a clip recorder rewinding the camera's packet wire, one MP4 per event (ffprobe)."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from harness.daemon import RunningDaemon

from pipelined.workers.ipc.packets import CodecParams, Packet
from pipelined.workers.video.clips import ClipCutter, ClipReport
from pipelined.workers.video.segments import Segment

CODEC = CodecParams("h264", 64, 48, (1, 90000))


class Segments:
    """What the cutter drives: the packets it writes, and the files it closes."""

    def __init__(self) -> None:
        self.written: list[float] = []
        self.files: list[tuple[float, float]] = []
        self.on_start = self.on_finish = None
        self._open: float | None = None

    def take(self, packet: Packet, codec: CodecParams) -> bool:
        at = packet.time_ns / 1e9
        if self._open is None:
            self._open = at
            self.on_start(
                Segment(packet.time_ns, f"c{at}", packet.time_ns, 0, Path(f"/c{at}")), codec
            )
        self.written.append(at)
        return True

    def finish(self, why: str = "") -> None:
        if self._open is not None:
            start, end = self._open, self.written[-1]
            self.files.append((start, end))
            self._open = None
            self.on_finish(
                Segment(int(start * 1e9), f"c{start}", int(end * 1e9), 1, Path(f"/c{start}"))
            )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def cutter(preroll=2.0, postroll=1.0):
    segments, reports, clock = Segments(), [], Clock()
    cut = ClipCutter(segments, preroll, postroll, reports.append, logging.getLogger("t"), clock)
    return cut, segments, reports, clock


def feed(cut: ClipCutter, clock: Clock, start: float, end: float, step: float = 0.1) -> None:
    n = round(start / step)
    while n * step <= end + 1e-9:
        clock.now = n * step
        cut.take(Packet(n, b"x", n, n, 1, n % 10 == 0, 1, int(n * step * 1e9)), CODEC)
        n += 1


def test_a_clip_runs_from_the_rewind_to_the_post_roll_after_the_end():
    cut, segments, reports, clock = cutter(preroll=2.0, postroll=1.0)
    feed(cut, clock, 0, 10)
    assert segments.written == []  # nothing is written while nothing happens
    clock.now = 10.0
    rewind = cut.event({"id": "a", "kind": "motion", "phase": "start", "at": 9.5})
    assert rewind == pytest.approx(2.5)  # the pre-roll, and the half second the event took
    feed(cut, clock, 7.5, 12)  # the wire delivers again from 7.5 s (the rewound keyframe)
    cut.event({"id": "a", "phase": "end", "at": 12.0})
    feed(cut, clock, 12.1, 20)
    assert segments.files == [(7.5, pytest.approx(13.0))]  # the end + 1 s post-roll
    assert reports[0] == ClipReport(["a"], "/c7.5", 7.5, None)  # linked while it is written
    assert reports[-1].end == pytest.approx(13.0)


def test_events_whose_windows_overlap_share_one_clip_without_a_break():
    cut, segments, reports, clock = cutter(preroll=2.0, postroll=1.0)
    clock.now = 10.0
    cut.event({"id": "a", "phase": "start", "at": 10.0})
    feed(cut, clock, 8, 11)
    cut.event({"id": "a", "phase": "end", "at": 11.0})
    feed(cut, clock, 11.1, 13.5)  # past the post-roll (12 s): held, not written
    assert segments.written[-1] == pytest.approx(12.0)
    clock.now = 13.5
    assert cut.event({"id": "b", "phase": "start", "at": 13.5}) is None  # joins: no rewind
    feed(cut, clock, 13.6, 15)
    cut.event({"id": "b", "phase": "end", "at": 15.0})
    feed(cut, clock, 15.1, 25)
    assert len(segments.files) == 1  # one clip for both
    written = segments.written
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(written))
    assert segments.files[0] == (8.0, pytest.approx(16.0))
    assert reports[-1].events == ["a", "b"]


def test_an_event_after_the_window_closed_starts_a_clip_of_its_own():
    cut, segments, _, clock = cutter(preroll=1.0, postroll=0.5)
    clock.now = 5.0
    cut.event({"id": "a", "phase": "moment", "at": 5.0})
    feed(cut, clock, 4, 10)
    clock.now = 10.0
    assert cut.event({"id": "b", "phase": "moment", "at": 10.0}) == pytest.approx(1.0)
    feed(cut, clock, 9, 15)
    assert segments.files == [(4.0, pytest.approx(5.5)), (9.0, pytest.approx(10.5))]


def test_an_open_event_keeps_the_clip_going():
    cut, segments, _, clock = cutter(preroll=1.0, postroll=0.5)
    clock.now = 1.0
    cut.event({"id": "a", "phase": "start", "at": 1.0})
    feed(cut, clock, 0, 60)
    assert segments.files == [] and segments.written[-1] == pytest.approx(60.0)


# -- the whole chain ------------------------------------------------------------------------

GRAPH = """
[blocks.camera]
type = "camera"
source = "testsrc"
size = [320, 240]
fps = 15
encode = {codec = "h264", keyframe_interval = 0.5, preroll = 3}

# The red square crosses the frame every 4 s; the region is its right end, so motion
# starts and ends there once a cycle, and nothing else moves in it.
[blocks.motion]
type = "motion"
input = "camera"
region = [0.8, 0.2, 0.2, 0.3]
end_after = 0.5

[blocks.clips]
type = "recorder"
input = "camera"
mode = "clips"
triggers = ["motion:motion"]
preroll = 1.5
postroll = 0.5
directory = "clips"
"""


def ffprobe(path: Path) -> dict:
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe (Debian's ffmpeg)")
def test_motion_in_the_synthetic_scene_makes_one_clip_per_event_from_its_preroll():
    with RunningDaemon(GRAPH) as d:
        d.start()
        d.wait_all_running()

        def ended_with_clip():
            events = d.call("events", blocks=["motion"], order="oldest")["events"]
            done = [e for e in events if not e["active"] and e["clips"] and e["clips"][0]["end"]]
            return done[:2] if len(done) >= 2 else None

        first, second = d.until(ended_with_clip, 60, "two motion events with closed clips")
    for event in (first, second):
        (clip,) = event["clips"]
        path = Path(clip["path"])
        assert path.name.startswith("clips-") and path.parent.name == "clips"
        before = event["start"] - clip["start"]
        # starts about preroll (1.5 s) before: at the oldest keyframe (every 0.5 s) within it
        assert 0.9 <= before <= 1.6, (before, event, clip)
        probe = ffprobe(path) if path.exists() else None
        assert probe is None or probe["streams"][0]["codec_name"] == "h264"
        length = (event["end"] - event["start"]) + before + 0.5
        if probe is not None:
            assert abs(float(probe["format"]["duration"]) - length) < 0.6, (probe, event, clip)
    assert first["clips"][0]["path"] != second["clips"][0]["path"]  # one clip each
    assert first["snapshot"] and first["snapshot"].endswith(f"{first['id']}.jpg")
