"""The recorder on real frames: files that play back, rotation, clean-up, latest.jpg, and a
disk that really fills up (a tiny tmpfs in a private mount namespace)."""

from __future__ import annotations

import json
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
from video import play

from pipelined.workers.blocks.recorder import SNAPSHOT, Recorder
from pipelined.workers.blocks.testsrc import TestScene


def recorder(directory: Path, name: str = "rec", **overrides: Any) -> Recorder:
    block = Recorder(
        name, params(Recorder, directory=str(directory), **overrides), RecordingContext()
    )
    block.setup()
    return block


def feed(block: Recorder, frames: list[list[np.ndarray]], fps: float) -> None:
    """Hand the frames over at ``fps``, as a camera upstream would."""
    for inputs in frames:
        block.process(inputs)
        time.sleep(1 / fps)


def scene_frames(count: int, size: tuple[int, int] = (320, 240)) -> list[list[np.ndarray]]:
    scene = TestScene(*size)
    return [[scene.render(n)] for n in range(count)]


def noise_frames(count: int, size: tuple[int, int] = (160, 120)) -> list[list[np.ndarray]]:
    """Frames JPEG cannot shrink much, so files grow fast and predictably."""
    rng = np.random.default_rng(1)
    return [[rng.integers(0, 256, (size[1], size[0], 3), np.uint8)] for _ in range(count)]


def videos(directory: Path, name: str = "rec") -> list[Path]:
    return sorted(directory.glob(f"{name}-*.avi"))


# -- files ------------------------------------------------------------------------------------


def test_recording_plays_back_side_by_side_with_the_right_count_and_size(tmp_path: Path) -> None:
    block = recorder(tmp_path, fps=50)
    scene = TestScene(320, 240)
    grey = np.full((120, 160), 200, np.uint8)  # single channel, half the height
    feed(block, [[scene.render(n), grey] for n in range(20)], fps=50)
    block.close()

    [path] = videos(tmp_path)
    declared, shape, frames = play(path)
    assert declared == 20 and len(frames) == 20
    assert shape == (240, 640, 3)  # 320 + 160 * 240/120 wide, at the first input's height
    left, right = frames[5][:, :320].astype(int), frames[5][:, 320:].astype(int)
    red = (left[..., 2] > 150) & (left[..., 1] < 90) & (left[..., 0] < 90)
    assert np.count_nonzero(red) > 0.8 * (240 // 6) ** 2
    assert abs(right.mean() - 200) < 5 and np.ptp(right, axis=2).max() < 12  # grey as BGR


def test_a_new_file_starts_after_max_file_seconds(tmp_path: Path) -> None:
    block = recorder(tmp_path, fps=50, max_file_seconds=0.3)
    feed(block, scene_frames(50, (160, 120)), fps=50)
    block.close()
    files = videos(tmp_path)
    assert len(files) >= 3
    counts = [play(path)[0] for path in files]
    assert sum(counts) == 50 and all(c <= 0.3 * 50 + 2 for c in counts[:-1])


def test_files_rotate_by_size_and_the_oldest_go_past_the_total(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a recording")
    (tmp_path / "other-20200101-000000-0001.avi").write_bytes(b"another recorder's file")
    block = recorder(tmp_path, fps=100, max_file_bytes=100_000, max_total_bytes=250_000)
    feed(block, noise_frames(80), fps=100)
    block.close()

    files = videos(tmp_path)
    sizes = [p.stat().st_size for p in files]
    assert 2 <= len(files) <= 4
    assert all(s < 100_000 + 48_000 for s in sizes)  # the writer buffers 32 KiB
    assert sum(sizes[:-1]) <= 250_000  # all but the file being written fit the total
    assert not any(p.name.endswith("-0001.avi") for p in files)  # the first went first
    assert (tmp_path / "notes.txt").exists()
    assert (tmp_path / "other-20200101-000000-0001.avi").exists()
    for path in files:
        declared, shape, frames = play(path)
        assert shape == (120, 160, 3) and len(frames) == declared > 0


def test_files_past_max_age_are_deleted(tmp_path: Path) -> None:
    old = tmp_path / "rec-20200101-000000-0001.avi"
    fresh = tmp_path / "rec-20200102-000000-0001.avi"
    foreign = tmp_path / "cam2-20200101-000000-0001.avi"
    namesake = tmp_path / "rec-2-20200101-000000-0001.avi"  # the block "rec-2"'s
    for path in (old, fresh, foreign, namesake):
        path.write_bytes(b"x" * 2000)
    ten_days_ago = time.time() - 10 * 86400
    for path in (old, foreign, namesake):
        os.utime(path, (ten_days_ago, ten_days_ago))
    block = recorder(tmp_path, max_age_seconds=86400)
    block.process(scene_frames(1)[0])
    block.close()
    assert not old.exists()
    assert fresh.exists() and foreign.exists() and namesake.exists()


# -- latest.jpg -------------------------------------------------------------------------------


def test_latest_jpg_is_replaced_atomically_at_most_once_a_second(tmp_path: Path) -> None:
    block = recorder(tmp_path, fps=50, snapshot_interval=1.0)
    latest = tmp_path / SNAPSHOT
    seen: set[tuple[int, int]] = set()
    broken: list[int] = []
    done = threading.Event()

    def watch() -> None:
        """Read latest.jpg as fast as possible: every read must be a whole JPEG."""
        while not done.is_set():
            try:
                stat = latest.stat()
                data = latest.read_bytes()
            except FileNotFoundError:
                continue
            seen.add((stat.st_ino, stat.st_mtime_ns))
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if not data.endswith(b"\xff\xd9") or image is None or image.shape != (240, 320, 3):
                broken.append(len(data))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        start = time.monotonic()
        scene = TestScene(320, 240)
        n = 0
        while time.monotonic() - start < 2.5:  # frames at 50 fps; snapshots at 0, 1 and 2 s
            block.process([scene.render(n)])
            n += 1
            time.sleep(0.02)
    finally:
        done.set()
        watcher.join()
        block.close()
    assert not broken
    assert 2 <= len(seen) <= 3
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".avi")) == [SNAPSHOT]


# -- what cannot be written -------------------------------------------------------------------


def test_params_that_cannot_work_together_are_refused() -> None:
    defaults = {n: p.default for n, p in Recorder.params.items()}
    assert Recorder.validate(defaults) == []
    assert Recorder.validate(defaults | {"max_file_bytes": 10, "max_total_bytes": 5}) != []
    assert Recorder.validate(defaults | {"directory": " "}) != []
    assert Recorder.params["snapshot_interval"].problem(0.5) is not None
    assert Recorder.params["snapshot_interval"].problem(0) is None


def test_a_directory_that_cannot_be_made_stops_recording_not_the_block(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    block = recorder(blocker / "recordings", retry_interval=0.1)
    frames = scene_frames(1)[0]
    block.process(frames)
    block.process(frames)
    [reason] = block.context.reasons
    assert reason.startswith("recording stopped: ") and "trying again every 0.1 s" in reason
    blocker.unlink()
    blocker.mkdir()
    time.sleep(0.15)
    block.process(frames)
    assert block.context.reasons[-1] is None
    block.close()
    assert len(videos(blocker / "recordings")) == 1


FULL_DISK = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from pipelined.workers.blocks.recorder import Recorder
    sys.path.insert(0, sys.argv[2])
    from blockhost import RecordingContext, params
    from test_blocks_recorder import noise_frames, videos

    directory = Path(sys.argv[1], "rec")
    values = params(Recorder, directory=str(directory), fps=100, retry_interval=0.3,
                    max_total_bytes=0)
    block = Recorder("rec", values, RecordingContext())
    block.setup()
    frames = noise_frames(60, (320, 240))
    result = {}

    def run(frames):
        for inputs in frames:
            block.process(inputs)  # must never raise
            time.sleep(0.01)

    # 1. The recording itself fills the disk.
    run(frames)
    result["filled_by_recording"] = list(block.context.reasons)
    result["files_after_full"] = [p.stat().st_size for p in videos(directory)]

    # 2. Space comes back: recording resumes after retry_interval.
    for path in videos(directory):
        path.unlink()
    time.sleep(0.35)
    run(frames[:5])
    result["after_cleanup"] = block.context.reasons[-1]

    # 3. Another program fills the disk: writes fail with ENOSPC.
    filler = os.path.join(sys.argv[1], "filler")
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\\0" * 65536)
    except OSError as exc:
        result["filler_error"] = exc.strerror
    time.sleep(1.1)  # the next snapshot is due
    run(frames[:10])
    result["filled_by_other"] = block.context.reasons[-1]
    block.close()
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


def test_a_full_disk_stops_recording_with_a_reason_and_recording_resumes(tmp_path: Path) -> None:
    if not _can_mount_tmpfs():
        pytest.skip("needs root (or CAP_SYS_ADMIN) for unshare --mount and a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    # The tmpfs lives in the child's own mount namespace: it vanishes with the child,
    # even if the test fails.
    command = (
        f"mount -t tmpfs -o size=2m tmpfs {mount} &&"
        f" exec {sys.executable} {script} {mount} {Path(__file__).parent}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    reasons = result["filled_by_recording"]  # one per retry while still full
    assert reasons and all(r.startswith("recording stopped: disk full in ") for r in reasons)
    assert "trying again every 0.3 s" in reasons[0]
    assert result["files_after_full"] and result["files_after_full"][0] > 1_000_000
    assert result["after_cleanup"] is None  # recording again
    assert result["filler_error"] == "No space left on device"
    assert result["filled_by_other"].startswith("recording stopped: disk full in ")
    assert not list(mount.iterdir())  # the tmpfs went away with its namespace
