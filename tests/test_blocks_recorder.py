"""The recorder on real video: H.264 packets copied into MP4 segments (checked with ffprobe
and PyAV), frames encoded, MJPEG .avi, latest.jpg, the limits on storage, and a disk that
really fills up (a tiny tmpfs in a private mount namespace).

These tests call the block directly with real packets from libx264; tests/
test_recorder_graph.py runs it in a graph, fed through a real packet wire.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from blockhost import RecordingContext, params
from video import (
    annexb_units,
    decoded_frames,
    encode_clip,
    ffprobe,
    mp4_samples,
    play,
)

from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.workers.blocks.recorder import SNAPSHOT, Recorder
from pipelined.workers.blocks.testsrc import TestScene
from pipelined.workers.ipc.packets import CodecParams, Packet
from pipelined.workers.picture import side_by_side_whole
from pipelined.workers.video.segments import Namer
from pipelined.workers.video.storage import Limits, Storage

NS = 1_000_000_000


def recorder(directory: Path, name: str = "rec", **overrides: Any) -> Recorder:
    values = params(Recorder, **{"directory": str(directory), "min_free_bytes": 0, **overrides})
    block = Recorder(name, values, RecordingContext())
    block.setup()
    return block


class Camera:
    """Hands a recorder packets as the packet wire would: numbered, stamped, in order.

    Each ``send`` goes on where the last one ended: packet numbers, timestamps (a clip
    sent twice plays twice) and the arrival clock.
    """

    def __init__(self, block: Recorder, start_ns: int | None = None):
        self.block = block
        self.number = 0
        self.generation = 0
        self.clock_ns = start_ns if start_ns is not None else time.time_ns()
        self.next_dts = 0
        self.sent: list[Packet] = []

    def send(self, extradata: bytes, packets: list, codec: str = "h264",
             size: tuple[int, int] = (320, 240), new_stream: bool = True,
             pace: float = 0.0) -> None:  # fmt: skip
        if new_stream:
            self.generation += 1
        params = CodecParams(codec, *size, (1, 90000), extradata)
        shift = self.next_dts - packets[0][2]
        base = self.clock_ns - self.next_dts * NS // 90000
        for data, pts, dts, key in packets:
            pts, dts = pts + shift, dts + shift
            self.number += 1
            self.clock_ns = base + dts * NS // 90000
            packet = Packet(self.number, data, pts, dts, 0, key, self.generation, self.clock_ns)
            self.sent.append(packet)
            self.block.process_packet(packet, params)
            if pace:
                time.sleep(pace)
        self.clock_ns += NS // 25
        self.next_dts = self.sent[-1].dts + 90000 // 25

    def pause(self, seconds: float) -> None:
        self.clock_ns += int(seconds * NS)


def segments(directory: Path, name: str = "rec") -> list[Path]:
    return [s.path for s in Namer(name).scan(directory)]


# -- copy: packets as they came ---------------------------------------------------------------


def test_packets_are_copied_into_segments_cut_at_keyframes(tmp_path):
    extradata, packets = encode_clip(100, gop=10)  # 4 s at 25 fps, a keyframe every 0.4 s
    block = recorder(tmp_path, segment_seconds=1.0)
    camera = Camera(block)
    camera.send(extradata, packets)
    block.close()

    files = segments(tmp_path)
    assert len(files) == 4  # 1.2 s (the first keyframe past 1 s), 1.2, 1.2 and 0.4 s
    recorded = []
    for path in files:
        probe = ffprobe(path)
        assert probe["errors"] == ""
        assert (probe["codec"], probe["width"], probe["height"]) == ("h264", 320, 240)
        samples = mp4_samples(path)
        assert samples[0][1], f"{path.name} does not start with a keyframe"
        assert len(decoded_frames(path)) == len(samples) == probe["frames"]
        recorded += [units for units, _, _ in samples]
    assert recorded == [annexb_units(p[0]) for p in packets]  # nothing re-encoded or lost
    assert [ffprobe(p)["frames"] for p in files] == [30, 30, 30, 10]


def test_a_segment_is_named_by_its_start_and_its_mtime_is_its_end(tmp_path):
    extradata, packets = encode_clip(50, gop=10)
    start = 1_700_000_000 * NS + 123_456_789  # 2023-11-14T22:13:20.123Z
    block = recorder(tmp_path, segment_seconds=1.0, snapshot_interval=0, max_age_seconds=0)
    Camera(block, start_ns=start).send(extradata, packets)
    block.close()
    first, second = Namer("rec").scan(tmp_path)
    assert first.name == "rec-20231114T221320.123Z.mp4"
    assert first.start_ns == start // 1_000_000 * 1_000_000
    assert abs(first.duration - 1.2) < 0.001 and abs(second.duration - 0.8) < 0.001
    assert second.start_ns - first.end_ns < 0.002 * NS  # back to back: no gap between them


def test_a_new_resolution_starts_a_new_segment(tmp_path):
    block = recorder(tmp_path, segment_seconds=60)
    camera = Camera(block)
    camera.send(*encode_clip(20, gop=10))
    camera.send(*encode_clip(20, size=(256, 192), gop=10), size=(256, 192))
    block.close()
    sizes = [(ffprobe(p)["width"], ffprobe(p)["height"], ffprobe(p)["frames"]) for p in
             segments(tmp_path)]  # fmt: skip
    assert sizes == [(320, 240, 20), (256, 192, 20)]


def test_a_gap_ends_a_segment_and_no_segment_spans_it(tmp_path):
    extradata, packets = encode_clip(40, gop=10)
    block = recorder(tmp_path, segment_seconds=60, gap_seconds=2.0)
    camera = Camera(block)
    camera.send(extradata, packets[:20])
    before_gap = camera.clock_ns
    camera.pause(5.0)  # a camera that reconnected: the same stream, five seconds later
    camera.send(extradata, packets[20:], new_stream=False)
    camera.number += 15  # the reader was lapped: 15 packets it never saw
    camera.send(extradata, packets[:20], new_stream=False)
    block.close()

    first, second, third = Namer("rec").scan(tmp_path)
    assert first.end_ns <= before_gap and second.start_ns >= before_gap + 5 * NS - NS // 25
    assert [ffprobe(s.path)["frames"] for s in (first, second, third)] == [20, 20, 20]
    assert all(mp4_samples(s.path)[0][1] for s in (first, second, third))


def test_packets_before_the_first_keyframe_are_skipped(tmp_path):
    extradata, packets = encode_clip(30, gop=10)
    block = recorder(tmp_path)
    Camera(block).send(extradata, packets[3:])  # a stream joined in the middle of a GOP
    block.close()
    [path] = segments(tmp_path)
    assert ffprobe(path)["frames"] == 20 and ffprobe(path)["errors"] == ""


def test_an_mjpeg_camera_is_copied_too(tmp_path):
    from video import scene_jpegs

    jpegs = scene_jpegs(10)
    block = recorder(tmp_path)
    Camera(block).send(b"", [(j, i * 3600, i * 3600, True) for i, j in enumerate(jpegs)],
                       codec="mjpeg")  # fmt: skip
    block.close()
    [path] = segments(tmp_path)
    assert [units[0] for units, _, _ in mp4_samples(path)] == jpegs


def test_latest_jpg_is_a_decoded_keyframe_at_most_once_a_second(tmp_path):
    extradata, packets = encode_clip(75, gop=5)  # 3 s, a keyframe every 0.2 s
    block = recorder(tmp_path, snapshot_interval=1.0)
    latest = tmp_path / SNAPSHOT
    seen = set()

    def watch() -> None:
        while not done.is_set():
            try:  # an inode number can come back for the next file: the time cannot
                stat = latest.stat()
                seen.add((stat.st_ino, stat.st_mtime_ns))
            except FileNotFoundError:
                pass
            time.sleep(0.005)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.monotonic()
    try:
        Camera(block).send(extradata, packets, pace=0.04)
    finally:
        elapsed = time.monotonic() - began
        done.set()
        watcher.join()
        block.close()
    assert 3 <= len(seen) <= int(elapsed) + 1  # at 0, 1, 2… s: at most one a second
    picture = cv2.imread(str(latest))
    assert picture.shape == (240, 320, 3)
    b, g, r = (picture[..., i].astype(int) for i in range(3))
    assert np.count_nonzero((r > 150) & (g < 90) & (b < 90)) > 0.5 * (240 // 6) ** 2


def test_a_stream_that_is_not_video_is_refused_in_status_and_nothing_is_written(tmp_path):
    block = recorder(tmp_path, snapshot_interval=0)
    block.context.inputs = ["counter"]
    camera = Camera(block)
    camera.send(b"", [(b"1234", i, i, True) for i in range(5)], codec="counter")
    assert block.context.reasons == [
        "input 'counter' sends 'counter' packets, which is not video a recording can hold"
        " (h264, hevc, mjpeg); nothing is written"
    ]
    assert list(tmp_path.iterdir()) == []
    camera.send(*encode_clip(10, gop=10))  # the camera comes back with video
    block.close()
    assert block.context.reasons[-1] is None and len(segments(tmp_path)) == 1


# -- frames: h264 and mjpeg -------------------------------------------------------------------


def feed(block: Recorder, frames: list[list[np.ndarray]], fps: float) -> None:
    """Hand the frames over at ``fps``, as a camera upstream would."""
    for inputs in frames:
        block.process(inputs)
        time.sleep(1 / fps)


def scene_frames(count: int, size: tuple[int, int] = (320, 240)) -> list[list[np.ndarray]]:
    scene = TestScene(*size)
    return [[scene.render(n)] for n in range(count)]


def test_frames_side_by_side_are_encoded_to_h264(tmp_path):
    block = recorder(tmp_path, codec="h264", fps=25, snapshot_interval=0)
    scene = TestScene(321, 241)
    grey = np.full((120, 81), 200, np.uint8)  # grey at about half the height: 163 wide
    frames = [[scene.render(n), grey] for n in range(30)]
    began = time.monotonic()
    feed(block, frames, fps=25)
    fed = time.monotonic() - began  # what the file must last: its time is the wall clock's
    block.close()

    [path] = segments(tmp_path)
    probe = ffprobe(path)
    assert probe["errors"] == "" and probe["codec"] == "h264"
    assert (probe["width"], probe["height"], probe["frames"]) == (484, 240, 30)  # 4:2:0: 241 -> 240
    assert abs(probe["duration"] - fed) < 0.25  # plays in real time, however fast it came
    frame = decoded_frames(path)[15].astype(int)
    left, right = frame[:, :320], frame[:, 320:]
    red = (left[..., 2] > 150) & (left[..., 1] < 90) & (left[..., 0] < 90)
    assert np.count_nonzero(red) > 0.7 * (240 // 6) ** 2
    assert abs(right.mean() - 200) < 8


def test_latest_jpg_of_several_inputs_names_each_and_thinning_is_skipped(tmp_path):
    values = params(Recorder, directory=str(tmp_path), min_free_bytes=0, codec="mjpeg", fps=5)
    context = RecordingContext(inputs=["camera", "edges"])
    block = Recorder("rec", values, context)
    block.setup()
    dark = np.full((240, 320, 3), 60, np.uint8)
    dark.flags.writeable = False  # as a frame in shared memory comes
    feed(block, [[dark, np.full((240, 320), 60, np.uint8)]] * 20, fps=200)
    block.close()
    latest = cv2.imread(str(tmp_path / SNAPSHOT))
    assert latest.shape == (240, 640, 3)
    for corner in (latest[:30, :80], latest[:30, 320:400]):  # a label in each picture's corner
        assert (corner < 10).mean() > 0.3 and (corner > 200).mean() > 0.03  # black band, white text
    assert abs(latest[100:, :320].mean() - 60) < 3 and abs(latest[100:, 320:].mean() - 60) < 3
    # Thinned to 5 fps: what was let go is said to be skipped; what was written, delivered.
    assert context.skipped_count >= 1 and context.delivered_count >= 1
    assert context.skipped_count + context.delivered_count == 20


def test_mjpeg_keeps_writing_avi_files_cut_every_segment_seconds(tmp_path):
    block = recorder(tmp_path, codec="mjpeg", fps=50, segment_seconds=1.0, snapshot_interval=0)
    feed(block, scene_frames(120, (160, 120)), fps=50)
    block.close()
    files = segments(tmp_path)
    assert len(files) >= 2 and all(p.suffix == ".avi" for p in files)
    counts = [play(p)[0] for p in files]
    assert sum(counts) == 120 and all(c <= 1.0 * 50 + 2 for c in counts)
    assert play(files[0])[1] == (120, 160, 3)


# -- storage ----------------------------------------------------------------------------------


def fill(directory: Path, name: str, start_ns: int, count: int, size: int = 10_000) -> list:
    """``count`` earlier segments of ``name``, ten seconds each, from ``start_ns``."""
    namer, paths = Namer(name), []
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        begin = start_ns + i * 10 * NS
        path = directory / namer.name(begin, "mp4")
        path.write_bytes(b"x" * size)
        os.utime(path, ns=(begin + 10 * NS, begin + 10 * NS))
        paths.append(path)
    return paths


def test_the_oldest_go_past_max_total_bytes_and_nothing_but_own_files(tmp_path):
    old = fill(tmp_path, "rec", time.time_ns() - 3600 * NS, 5, size=100_000)
    names = ["notes.txt", "other-20200101T000000.000Z.mp4", "rec-2-20200101T000000.000Z.mp4",
             "rec-latest.mp4"]  # fmt: skip
    foreign = [tmp_path / name for name in names]
    for path in foreign:
        path.write_bytes(b"y" * 100_000)
    block = recorder(tmp_path, max_total_bytes=350_000, segment_seconds=1.0, snapshot_interval=0)
    Camera(block).send(*encode_clip(90, gop=10))  # three segments of about 34 KB
    block.close()
    kept = segments(tmp_path)
    assert old[:3] == [p for p in old if not p.exists()]  # the oldest went first
    assert old[3:] == kept[:2] and len(kept) == 2 + 3
    assert sum(p.stat().st_size for p in kept[:-1]) <= 350_000  # all but the newest fit
    assert all(path.exists() for path in foreign)


def test_segments_past_max_age_go_and_a_restart_remembers_them(tmp_path):
    now = time.time_ns()
    ancient = fill(tmp_path, "rec", now - 10 * 86400 * NS, 2)
    recent = fill(tmp_path, "rec", now - 3600 * NS, 1)
    legacy = tmp_path / "rec-20200101-000000-0001.avi"  # the recorder before segments
    legacy.write_bytes(b"z" * 2000)
    os.utime(legacy, ns=(ancient[0].stat().st_mtime_ns,) * 2)
    block = recorder(tmp_path, max_age_seconds=86400, snapshot_interval=0)
    Camera(block).send(*encode_clip(10, gop=10))
    block.close()
    assert not any(p.exists() for p in [*ancient, legacy]) and recent[0].exists()

    # A restart: the new recorder knows the old segments and prunes them, oldest first.
    restarted = recorder(tmp_path, max_total_bytes=1, snapshot_interval=0)
    assert [s.path for s in restarted.storage.index] == segments(tmp_path)
    Camera(restarted).send(*encode_clip(10, gop=10))
    restarted.close()
    assert not recent[0].exists() and len(segments(tmp_path)) == 1


def test_pruning_never_walks_the_folder_again(tmp_path, monkeypatch):
    fill(tmp_path, "rec", time.time_ns() - 3600 * NS, 200, size=1000)
    scans = []
    real = os.scandir
    monkeypatch.setattr(
        "pipelined.workers.video.segments.os.scandir", lambda p: scans.append(p) or real(p)
    )
    block = recorder(tmp_path, max_total_bytes=150_000, segment_seconds=1.0, snapshot_interval=0)
    Camera(block).send(*encode_clip(100, gop=10))
    block.close()
    assert scans == [tmp_path]  # once, at the start
    assert block.storage.deleted > 50 and len(segments(tmp_path)) < 150


def test_a_long_backlog_is_deleted_a_bounded_number_at_a_time(tmp_path):
    fill(tmp_path, "rec", time.time_ns() - 30 * 86400 * NS, 150, size=100)
    storage = Storage(tmp_path, Namer("rec"), Limits(max_age_seconds=86400), logging.getLogger())
    counts = []
    while storage.index.oldest() is not None:
        storage.make_room(time.time_ns())  # each call short: the watchdog must not fire
        counts.append(storage.deleted)
    assert counts == [64, 128, 150] and segments(tmp_path) == []


# -- what cannot be written -------------------------------------------------------------------


def test_bad_parameters_are_refused_at_load_with_the_reason():
    text = (
        '[blocks.cam]\ntype = "camera"\nsource = "testsrc"\n'
        '[blocks.a]\ntype = "recorder"\ninput = "cam"\ncodec = "h265"\n'
        '[blocks.b]\ntype = "recorder"\ninput = "cam"\nsegment_seconds = 0\n'
        '[blocks.c]\ntype = "recorder"\ninput = "cam"\ncodec = "copy"\n'
    )
    with pytest.raises(GraphError) as info:
        parse_graph(text, "g.toml")
    problems = "\n".join(info.value.problems)
    assert "block 'a'" in problems and "must be one of auto, copy, h264, mjpeg, not 'h265'" in (
        problems
    )
    assert "block 'b'" in problems and "segment_seconds" in problems and "not 0" in problems
    assert "block 'c': takes encoded video from 'cam', but 'cam'" in problems


def test_copy_is_the_default_only_for_one_input_that_has_packets():
    defaults = {n: p.default for n, p in Recorder.params.items()}
    assert Recorder.input_kinds(defaults, [True]) == ["packets"]
    assert Recorder.input_kinds(defaults, [False]) == ["frames"]
    assert Recorder.input_kinds(defaults, [True, True]) == ["frames", "frames"]
    assert Recorder.input_kinds(defaults | {"codec": "h264"}, [True]) == ["frames"]
    assert Recorder.input_kinds(defaults | {"codec": "copy"}, [False]) == ["packets"]


def test_a_directory_that_cannot_be_made_stops_recording_not_the_block(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    block = recorder(blocker / "recordings", retry_interval=0.1)
    extradata, packets = encode_clip(20, gop=10)
    camera = Camera(block)
    camera.send(extradata, packets[:10])
    [reason] = block.context.reasons
    assert reason.startswith("recording stopped: ") and "trying again every 0.1 s" in reason
    blocker.unlink()
    blocker.mkdir()
    time.sleep(0.15)
    camera.send(extradata, packets[10:], new_stream=False)
    assert block.context.reasons[-1] is None
    block.close()
    assert len(segments(blocker / "recordings")) == 1


FULL_DISK = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_blocks_recorder import Camera, recorder, segments
    from video import encode_noise

    disk = Path(sys.argv[1])
    directory = disk / "rec"
    block = recorder(directory, segment_seconds=1.0, min_free_bytes=2 * 2**20,
                     retry_interval=0.3, max_total_bytes=0, snapshot_interval=0)
    extradata, packets = encode_noise(25, gop=5)  # a second, about 1.2 MB
    camera = Camera(block)
    result = {"free": [], "files": []}

    def free():
        stat = os.statvfs(disk)
        return stat.f_bavail * stat.f_frsize

    # 1. The recording itself would fill the disk: the oldest segments go, it goes on.
    for second in range(12):
        camera.send(extradata, packets, new_stream=second == 0, pace=0.01)
        result["free"].append(free())
        result["files"].append([p.name for p in segments(directory)])
    result["reasons_while_pruning"] = list(block.context.reasons)
    result["deleted"] = block.storage.deleted

    # 2. Another program fills the disk: the recorder gives up its own old files to keep
    # min_free_bytes; when it fills again, none are left, and the recording stops.
    filler = disk / "filler"

    def fill():
        try:
            with open(filler, "ab") as f:
                while True:
                    f.write(b"\\0" * 65536)
        except OSError as exc:
            return exc.strerror

    result["filler_error"] = fill()
    camera.send(extradata, packets, new_stream=False, pace=0.01)
    result["left_after_filler"] = [p.name for p in segments(directory)]
    result["reasons_after_filler"] = list(block.context.reasons)
    for _ in range(10):
        fill()
        camera.send(extradata, packets, new_stream=False, pace=0.01)
        if block.context.reasons:
            break
    result["filled_again"] = block.context.reasons[-1] if block.context.reasons else None
    result["left_when_full"] = [p.name for p in segments(directory)]

    # 3. Space comes back: recording resumes by itself after retry_interval.
    filler.unlink()
    time.sleep(0.35)
    camera.send(extradata, packets, new_stream=False, pace=0.01)
    result["after_space_came_back"] = block.context.reasons[-1]
    block.close()
    result["final"] = [p.name for p in segments(directory)]
    print(json.dumps(result))
    """
)


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def test_a_small_disk_keeps_the_newest_recordings_and_a_full_one_stops_and_resumes(tmp_path):
    if not _can_mount_tmpfs():
        pytest.skip("needs root (or CAP_SYS_ADMIN) for unshare --mount and a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    # The tmpfs lives in the child's own mount namespace: it vanishes with the child,
    # even if the test fails.
    command = (
        f"mount -t tmpfs -o size=8m tmpfs {mount} &&"
        f" exec {sys.executable} {script} {mount} {Path(__file__).parent}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["reasons_while_pruning"] == []  # never stopped while it could make room
    assert result["deleted"] >= 5
    assert min(result["free"]) > 2**20  # min_free_bytes (2 MiB), less one second's growth
    files = result["files"]
    assert len(files[-1]) <= 6 and files[-1][-1] not in files[5]  # the newest are kept
    assert files[-1][0] not in files[5]  # and the oldest have gone

    assert result["filler_error"] == "No space left on device"
    assert len(result["left_after_filler"]) < len(files[-1])  # the oldest made room
    assert result["reasons_after_filler"] == []
    assert result["filled_again"].startswith("recording stopped: disk full in ")
    assert len(result["left_when_full"]) <= 1  # at most the one it was writing
    assert result["after_space_came_back"] is None
    assert result["final"]
    assert not list(mount.iterdir())  # the tmpfs went away with its namespace


@pytest.mark.parametrize("codec", ["h264", "mjpeg"])
def test_a_frame_overwritten_while_it_was_taken_is_never_written(tmp_path, codec):
    """The recorder's input is a view into the wire: when the writer lapped it while the
    picture was made, neither latest.jpg nor a segment gets it."""
    block = recorder(tmp_path, codec=codec, fps=50, snapshot_interval=1.0)
    frame = TestScene(320, 240).render(0)
    try:
        block.context.whole = False
        for _ in range(5):
            block.process([frame])
            time.sleep(0.03)
        assert not (tmp_path / SNAPSHOT).exists()
        assert not [p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".avi")]
        block.context.whole = True
        block.process([frame])
        assert (tmp_path / SNAPSHOT).exists()
    finally:
        block.close()


def test_latest_jpg_of_several_inputs_is_made_before_the_check_and_only_if_whole(tmp_path):
    """The labelled latest.jpg is made of the recorder's own copies, taken before it asks
    whether the first input is still whole: a writer that overwrites the frame at the
    check changes nothing written, and one that overwrote it before gets nothing written."""
    values = params(Recorder, directory=str(tmp_path), min_free_bytes=0, codec="mjpeg")
    context = RecordingContext(inputs=["camera", "edges"])
    block = Recorder("rec", values, context)
    block.setup()
    first = np.full((240, 320, 3), 60, np.uint8)
    other = np.full((240, 320), 60, np.uint8)
    try:
        context.whole = False
        block.process([first, other])
        assert not (tmp_path / SNAPSHOT).exists()
        context.whole = True

        def overwritten_at_the_check() -> bool:
            first.fill(250)  # the writer laps the view just after the copies were taken
            return True

        context.intact = overwritten_at_the_check  # type: ignore[method-assign]
        block.process([first, other])
    finally:
        block.close()
    latest = cv2.imread(str(tmp_path / SNAPSHOT))
    assert latest.shape == (240, 640, 3)
    assert abs(latest[100:, :320].mean() - 60) < 3  # the copy, not what came after


def test_side_by_side_whole_is_a_copy_checked_after_it_was_made():
    frame = np.zeros((4, 6, 3), np.uint8)
    picture = side_by_side_whole([frame], lambda: True)
    assert picture is not None and not np.may_share_memory(picture, frame)
    assert side_by_side_whole([frame], lambda: False) is None
