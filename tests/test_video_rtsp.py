"""Video end to end: a daemon records a real RTSP camera without re-encoding it.

GStreamer's RTSP server (``rtsp_server.py``) encodes H.264 live and keeps every byte it
sent; a daemon runs ``camera (rtsp) -> recorder (copy)``. The files are checked with
ffprobe and PyAV against what the server sent; then the server is killed and started
again, as a camera that loses power: the recording resumes in a new segment and the
gap shows, in the files and in ``pipectl recordings``; ``pipectl export`` joins a range
of the segments into one playable file. Small pictures and 2 s segments keep it cheap.
"""

from __future__ import annotations

import itertools
import time

import pytest
import rtsp_server
from harness.daemon import RunningDaemon, wait_for
from harness.graphs import graph
from rtsp_server import RtspServer
from video import decoded_frames, ffprobe, mp4_samples

from pipelined.workers.video.bitstream import nal_units
from pipelined.workers.video.segments import Namer, Segment

pytestmark = pytest.mark.skipif((why := rtsp_server.unavailable()) is not None, reason=str(why))

FPS = 15
GOP = 15  # a keyframe a second
SEGMENT = 2.0  # seconds
DOWN = 3.0  # seconds the camera is off: more than the recorder's gap_seconds (2)
DEADLINE = 90.0  # for an outcome on a busy two-core box; never a speed


def iso(seconds: float) -> str:
    """Local time to the millisecond, as pipectl reads it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds)) + f"{seconds % 1:.3f}"[1:]


def at(sent: list[bytes], units: list[bytes], after: int) -> int | None:
    """Where ``units`` are, unit for unit and in order, in ``sent`` past ``after``; None
    if nowhere. Single units repeat (delimiters, parameter sets, a slice of a still
    background, a whole session: the server's encoder starts afresh on each connection),
    so every place the first one occurs is tried."""
    for i in range(after + 1, len(sent)):
        if sent[i] == units[0] and sent[i : i + len(units)] == units:
            return i
    return None


def whole(segments: list[Segment], after_ns: int = 0) -> list[Segment]:
    """The segments started after ``after_ns`` and closed (not the one being written)."""
    return [s for s in segments[:-1] if s.start_ns > after_ns]


def test_an_rtsp_camera_is_recorded_as_sent_across_a_restart_and_exported(tmp_path):
    folder, namer = tmp_path / "rec", Namer("rec")
    server = RtspServer.h264(size=(320, 240), fps=FPS, gop=GOP).start()
    d = RunningDaemon(
        graph(
            f'[blocks.cam]\ntype = "camera"\nsource = "{server.url}"\nsize = [320, 240]\n'
            f"fps = {FPS}\nretry_max = 1.0\n",
            f'[blocks.rec]\ntype = "recorder"\ninput = "cam"\ncodec = "copy"\n'
            f'directory = "{folder}"\nsegment_seconds = {SEGMENT}\nmin_free_bytes = 0\n',
        )
    ).start()
    try:
        d.wait_all_running()
        wait_for(lambda: len(whole(namer.scan(folder))) >= 3, DEADLINE, "3 segments")

        # The camera loses power, and comes back after DOWN seconds on the same address.
        server.stop()
        down = time.time_ns()
        time.sleep(DOWN)
        server.start()
        up = time.time_ns()
        wait_for(lambda: len(whole(namer.scan(folder), up)) >= 2, DEADLINE,
                 "2 segments after the camera came back")  # fmt: skip
        cam = d.block("cam")
        table = d.pipectl("recordings", "rec", "--since", "-10m")
        parts = [s for s in namer.scan(folder) if s.start_ns < down][1:-1]  # whole ones
        joined = tmp_path / "joined.mp4"
        export = d.pipectl("export", "rec", "--since", iso(parts[0].start_ns / 1e9),
                         "--until", iso(parts[-1].end_ns / 1e9 - 0.01), str(joined))  # fmt: skip
        assert d.stop() == 0  # the recorder closes the segment it was writing
    finally:
        d.close()
        sent = nal_units(server.sent())  # every session's bytes, before and after the restart
        server.close()
    segments = namer.scan(folder)
    before = [s for s in segments if s.start_ns < down]
    after = [s for s in segments if s.start_ns >= up]
    assert cam["reason"] is None and cam["restarts"] == 0  # reconnected, not restarted

    # Every segment: H.264 as the camera sent it, starting with a keyframe.
    first = -1
    for segment in segments:
        probe = ffprobe(segment.path)
        assert probe["errors"] == "", f"{segment.name}: {probe['errors']}"
        assert (probe["codec"], probe["width"], probe["height"]) == ("h264", 320, 240)
        samples = mp4_samples(segment.path)
        keys = [i for i, (_, key, _) in enumerate(samples) if key]
        assert keys[0] == 0, f"{segment.name} starts without a keyframe"
        assert all(b - a == GOP for a, b in itertools.pairwise(keys))
        units = [u for unit_list, _, _ in samples for u in unit_list]
        found = at(sent, units, first)  # each segment after the one before
        assert found is not None, f"{segment.name} is not a run of what the camera sent"
        first = found
        if segment in before[1:-1] or segment in after[:-1]:  # not cut short by an end
            assert len(samples) == SEGMENT * FPS, segment.name  # from keyframe to keyframe
            assert abs(probe["duration"] - SEGMENT) < 0.2, segment.name

    # The restart: a new segment, none spans the time the camera was off, the gap shows.
    assert before + after == segments and len(after) >= 2
    assert before[-1].end_ns <= down + 0.5e9  # the last picture before the cut
    assert (after[0].start_ns - before[-1].end_ns) / 1e9 > DOWN - 0.5
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    gap = next(i for i, line in enumerate(lines) if "(a gap of " in line)
    assert before[-1].name in lines[gap - 1] and after[0].name in lines[gap + 1]

    # The export: one playable file, the packets of its segments back to back.
    assert export.returncode == 0, export.stderr
    assert f"{len(parts)} segments joined" in export.stdout
    probe = ffprobe(joined)
    assert probe["errors"] == "" and probe["codec"] == "h264"
    assert probe["frames"] == len(decoded_frames(joined)) == len(parts) * SEGMENT * FPS
    assert abs(probe["duration"] - len(parts) * SEGMENT) < 0.2
    copied = [units for s in parts for units, _, _ in mp4_samples(s.path)]
    assert [units for units, _, _ in mp4_samples(joined)] == copied
