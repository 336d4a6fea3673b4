"""The recorder in a running graph, fed H.264 through a real packet wire: byte-identical
segments, a new segment at a new resolution and after a gap, a SIGKILL mid-segment, and
finding the recordings again (the ``recordings`` command, pipectl recordings and export).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest
from harness.daemon import RunningDaemon, wait_for
from harness.graphs import graph
from video import annexb_units, decoded_frames, encode_clip, ffprobe, mp4_samples

from pipelined.ctl.protocol import CommandError
from pipelined.workers.ipc.packets import CodecParams
from pipelined.workers.video.mux import Mp4Writer
from pipelined.workers.video.segments import Namer, Segment

VIDEO = "userblocks.video_blocks"
FPS = 25
SWITCH_AT = 200  # frames: 8 s in, the camera goes from 320x240 to 256x192
PAUSE_AT = 300  # frames: 12 s in, the camera stops for PAUSE seconds (a reconnect)
PAUSE = 4.0


def camera_log(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def copied_runs(segments: list[Segment], log: list[dict]) -> list[tuple[int, int]]:
    """Where each segment's samples sit in the camera's log, as (first index, count).

    Fails unless every sample is, NAL unit for NAL unit, the packet the camera sent,
    and each segment is an unbroken run of the camera's packets.
    """
    sent = [annexb_units(bytes.fromhex(p["data"])) for p in log]
    runs = []
    for segment in segments:
        units = [u for u, _, _ in mp4_samples(segment.path)]
        first = sent.index(units[0])
        assert units == sent[first : first + len(units)], f"{segment.name} differs from the camera"
        runs.append((first, len(units)))
    return runs


def test_a_camera_is_recorded_through_the_packet_wire_and_found_again(tmp_path):
    log_path, folder, namer = tmp_path / "cam.log", tmp_path / "rec", Namer("rec")
    d = RunningDaemon(
        graph(
            f'[blocks.cam]\ntype = "{VIDEO}:H264Camera"\nfps = {FPS}\ngop = {FPS}\n'
            f"switch_after = {SWITCH_AT}\npause_after = {PAUSE_AT}\npause_seconds = {PAUSE}\n"
            f'log = "{log_path}"\n',
            f'[blocks.rec]\ntype = "recorder"\ninput = "cam"\ndirectory = "{folder}"\n'
            "segment_seconds = 2\nmin_free_bytes = 0\n",
        )
    ).start()
    try:
        d.wait_all_running()
        wait_for(lambda: len(camera_log(log_path)) > PAUSE_AT + 3 * FPS, 120, "the pause over")
        rec = d.block("rec")
        assert rec["state"] == "RUNNING" and rec["reason"] is None
        assert rec["detail"].startswith("h264 256x192 -> rec-")

        # SIGKILL mid-segment: what it was writing plays up to its last fragment.
        killed = wait_for(lambda: (s := namer.scan(folder)[-1]).duration > 0.9 and s, 30,
                          "a segment that has a fragment on the disk")  # fmt: skip
        os.kill(rec["pid"], signal.SIGKILL)
        wait_for(lambda: (b := d.block("rec"))["restarts"] == 1 and b["state"] == "RUNNING",
                 60, "the recorder restarted")  # fmt: skip
        wait_for(lambda: len([s for s in namer.scan(folder) if s > killed]) >= 2, 60,
                 "two segments after the kill")  # fmt: skip

        listing = d.call("recordings")
        table = d.pipectl("recordings", "rec", "--since", "-10m")
        export_ok = _export(d, tmp_path, listing)
        assert d.stop() == 0  # the recorder closes its last segment
    finally:
        d.close()

    segments = namer.scan(folder)
    log = camera_log(log_path)
    # Every segment sound, starting with a keyframe, and nothing but the camera's bytes.
    for segment in segments:
        probe = ffprobe(segment.path)
        assert probe["errors"] == "", f"{segment.name}: {probe['errors']}"
        assert mp4_samples(segment.path)[0][1], f"{segment.name} starts without a keyframe"
    runs = copied_runs(segments, log)
    sizes = [(ffprobe(s.path)["width"], ffprobe(s.path)["height"]) for s in segments]
    # The new resolution starts a new segment: no segment holds both sizes.
    switch = next(i for i, p in enumerate(log) if p["generation"] == 2)
    assert any(first == switch for first, _ in runs)
    assert sizes == sorted(sizes, reverse=True) and {(320, 240), (256, 192)} == set(sizes)
    # The pause is a gap between two segments, which no segment spans.
    pause = next(i for i in range(1, len(log)) if log[i]["time_ns"] - log[i - 1]["time_ns"] > 2e9)
    assert any(first == pause for first, _ in runs)
    gaps = [b.start_ns - a.end_ns for a, b in itertools.pairwise(segments)]
    assert max(gaps) > (PAUSE - 1) * 1e9
    # The killed segment plays up to its last fragment.
    killed_now = next(s for s in segments if s.name == killed.name)
    assert len(decoded_frames(killed_now.path)) == ffprobe(killed_now.path)["frames"] > 0

    # The recordings command, pipectl's table and export.
    assert listing["recorders"] == [{"block": "rec", "directory": str(folder)}]
    assert [e["file"] for e in listing["recordings"]] == [
        s.name for s in segments if s.start_ns <= listing["recordings"][-1]["start"] * 1e9 + 1e6
    ]
    entry = listing["recordings"][0]
    assert set(entry) == {"block", "file", "path", "start", "end", "duration", "bytes"}
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "BLOCK", "START", "(local", "time)", "LENGTH", "SIZE", "FILE",
    ]  # fmt: skip
    assert "(a gap of " in table.stdout and listing["recordings"][0]["file"] in table.stdout
    export_ok()


def _export(d: RunningDaemon, tmp_path: Path, listing: dict):
    """Export segments of one stream back to back, and a range across the change of size."""
    entries = listing["recordings"]
    run = _same_stream(entries)
    first, last = run[0], run[-1]
    same = d.pipectl("export", "rec", "--since", _iso(first["start"]), "--until",
                   _iso(last["end"] - 0.01), str(tmp_path / "joined.mp4"))  # fmt: skip
    across = d.pipectl("export", "rec", "--since", _iso(entries[0]["start"]), "--until",
                     _iso(entries[-1]["end"]), str(tmp_path / "all.mp4"))  # fmt: skip
    outside = d.pipectl("export", "rec", "--since", "2001-01-01", "--until", "2001-01-02",
                      str(tmp_path / "none.mp4"))  # fmt: skip

    def check() -> None:
        assert same.returncode == 0, same.stderr
        assert f"{len(run)} segments joined" in same.stdout
        probe = ffprobe(tmp_path / "joined.mp4")
        assert probe["errors"] == ""
        assert probe["frames"] == sum(ffprobe(Path(e["path"]))["frames"] for e in run)
        assert abs(probe["duration"] - (last["end"] - first["start"])) < 0.5  # arrival jitter
        joined = [u for u, _, _ in mp4_samples(tmp_path / "joined.mp4")]
        parts = [u for e in run for u, _, _ in mp4_samples(e["path"])]
        assert joined == parts  # copied, not re-encoded
        assert across.returncode == 1 and "the recording changes at" in across.stderr
        assert "export up to it (--until" in across.stderr
        assert not (tmp_path / "all.mp4").exists() and not list(tmp_path.glob(".*.part"))
        assert outside.returncode == 1 and "no recording between" in outside.stderr

    return check


def _pages(d: RunningDaemon) -> list[dict]:
    """The recordings of 'rec', one page of one segment at a time, as pipectl pages."""
    found: list[dict] = []
    while True:
        args = {"after": f"rec/{found[-1]['file']}"} if found else {}
        page = d.call("recordings", blocks=["rec"], limit=1, **args)
        found += page["recordings"]
        if not page["more"] or len(found) >= 4:
            return found


def _same_stream(entries: list[dict]) -> list[dict]:
    """The longest run (up to three) of whole segments, back to back, of one size."""
    best: list[dict] = []
    run: list[dict] = []
    for entry in entries[1:-1]:  # not the first (it may be short) nor the one being written
        probe = ffprobe(Path(entry["path"]))
        shape = (probe["width"], probe["height"])
        if run and (shape != run[-1]["shape"] or entry["start"] - run[-1]["end"] > 0.5):
            run = []
        run.append(entry | {"shape": shape})
        best = max(best, run[-3:], key=len)
    assert len(best) >= 2, f"no two segments of one stream back to back in {entries}"
    return best


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds)) + (f"{seconds % 1:.3f}"[1:])


def test_an_mp4_clip_is_copied_and_a_source_that_is_not_video_is_refused(tmp_path):
    clip = tmp_path / "clip.mp4"
    extradata, packets = encode_clip(50, gop=10)  # 2 s
    writer = Mp4Writer(clip, CodecParams("h264", 320, 240, (1, 90000), extradata), packets[0][0])
    for data, pts, dts, key in packets:
        writer.write(data, pts, dts, 3600, key)
    writer.close()
    d = RunningDaemon(
        graph(
            f'[blocks.clip]\ntype = "{VIDEO}:ClipCamera"\nclip = "{clip}"\n',
            '[blocks.rec]\ntype = "recorder"\ninput = "clip"\ndirectory = "rec"\n'
            "segment_seconds = 1\nmin_free_bytes = 0\n",
            '[blocks.counter]\ntype = "userblocks.runtime_blocks:PacketCounter"\nfps = 20\n',
            '[blocks.notvideo]\ntype = "recorder"\ninput = "counter"\ndirectory = "nv"\n',
        )
    ).start()
    try:
        d.wait_state("rec", "RUNNING")
        refused = wait_for(lambda: (b := d.block("notvideo"))["reason"] and b, 60, "a reason")
        state = d.dir / "state"  # relative folders: under the daemon's state directory
        wait_for(lambda: len(Namer("rec").scan(state / "rec")) >= 4, 60, "four segments")
        rec = d.block("rec")
        pages = _pages(d)
        everything = d.call("recordings", blocks=["rec"])["recordings"]
        newest = d.call("recordings", order="newest", limit=2)
        with pytest.raises(CommandError) as not_a_recorder:
            d.call("recordings", blocks=["clip"])
        with pytest.raises(CommandError) as bad_limit:
            d.call("recordings", limit=0)
        written = {s.path: s.path.read_bytes() for s in Namer("rec").scan(state / "rec")[:-1]}
        nothing = not (state / "nv").exists() or not list((state / "nv").iterdir())
    finally:
        d.close()  # and its folder: what is looked at below was read before
    assert [e["file"] for e in pages] == [e["file"] for e in everything[: len(pages)]]
    assert len(pages) >= 4 and len({e["file"] for e in pages}) == len(pages)
    assert newest["more"] and [e["start"] for e in newest["recordings"]] == sorted(
        (e["start"] for e in newest["recordings"]), reverse=True
    )
    assert not_a_recorder.value.code == "bad_request"
    assert "block 'clip' is a 'userblocks.video_blocks:ClipCamera', not a recorder" in (
        not_a_recorder.value.message
    )
    assert bad_limit.value.code == "bad_request" and "'limit'" in bad_limit.value.message
    assert refused["state"] == "RUNNING" and refused["reason"] == (
        "input 'counter' sends 'counter' packets, which is not video a recording can hold"
        " (h264, hevc, mjpeg); nothing is written"
    )
    assert nothing
    assert rec["reason"] is None
    clip_units = [u for u, _, _ in mp4_samples(clip)]
    assert len(written) >= 3
    for name, data in written.items():
        segment = tmp_path / name.name
        segment.write_bytes(data)
        probe = ffprobe(segment)
        assert probe["errors"] == "" and probe["frames"] in (25, 30)
        units = [u for u, _, _ in mp4_samples(segment)]
        at = clip_units.index(units[0])
        assert units == (clip_units * 3)[at : at + len(units)]  # the clip, looped, as it is
