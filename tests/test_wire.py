"""The wire between real processes: fan-out, slow and dead peers, torn frames, limits."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import posix_ipc
import pytest

from pipelined.workers.ipc import _atomics
from pipelined.workers.ipc.names import SHM_DIR, RunNames
from pipelined.workers.ipc.segment import run_entries
from pipelined.workers.ipc.wire import (
    TRIES,
    FrameTooLarge,
    Wire,
    WireError,
    WireReader,
    WireWriter,
    wire_bytes,
)

SHAPE = "48,64,3"
SLOT = 48 * 64 * 3


def ready(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, f"stand-in ended before it was ready: {proc.communicate()[1]}"
    return json.loads(line)


def result(proc: subprocess.Popen, timeout: float = 60) -> dict:
    """The stand-in's last line. Not communicate(): that skips what readline() buffered."""
    proc.wait(timeout)  # its output is a few KiB: it fits the pipe, so this cannot block
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def start_writer(procs, names, frames: int, *extra: str, block: str = "cam", shape: str = SHAPE):
    """The writer stand-in: ``frames`` frames of ``shape`` (H,W,C) onto ``block``'s wire."""
    args = [names.instance, names.run, block, "--frames", str(frames), "--shape", shape]
    return procs.standin("writer", *args, *extra)


def start_readers(procs, names, count: int, *extra: str, block: str = "cam"):
    readers = [
        procs.standin("reader", names.instance, names.run, block, str(i), *extra)
        for i in range(count)
    ]
    for r in readers:
        ready(r)
    return readers


def check_reader(res: dict, last: int) -> None:
    """In order, never torn, and every frame either seen or counted as dropped."""
    seqs = res["seqs"]
    assert seqs, "the reader saw no frame"
    assert seqs == sorted(set(seqs)), "frames out of order or repeated"
    assert res["torn"] == 0
    assert seqs[-1] == last
    assert len(seqs) + res["dropped"] == seqs[-1] - seqs[0] + 1


@pytest.fixture
def wire(names: RunNames):
    w = Wire.create(names, "cam", SLOT, readers=3)
    yield w
    w.unlink()
    w.close()


def test_fan_out_to_three_reader_processes(names, wire, procs):
    until = ("--until", "300", "--idle", "60")  # a busy box may pause a reader for seconds
    readers = [
        procs.standin("reader", names.instance, names.run, "cam", "0", *until),
        procs.standin("reader", names.instance, names.run, "cam", "1", "--copy", *until),
        procs.standin("reader", names.instance, names.run, "cam", "2", *until),
    ]
    for r in readers:
        ready(r)
    writer = start_writer(procs, names, 300, "--fps", "200")
    assert ready(writer)["first"] == 1
    assert result(writer)["last"] == 300
    for r in readers:
        check_reader(result(r), last=300)
    stats = wire.stats()
    assert stats["frames"] == 300
    assert [r["frames"] > 0 for r in stats["readers"]] == [True] * 3


def test_slow_reader_does_not_hold_back_writer_or_others(names, wire, procs):
    slow = procs.standin(
        "reader", names.instance, names.run, "cam", "0", "--copy", "--sleep", "1", "--frames", "3"
    )
    fast = procs.standin(
        "reader", names.instance, names.run, "cam", "1", "--until", "200", "--idle", "60"
    )
    ready(slow)
    ready(fast)
    writer = start_writer(procs, names, 200, "--fps", "100")
    ready(writer)
    # Held back to the slow reader's pace, the writer would need 200 s.
    done = result(writer, timeout=40)
    assert done["last"] == 200
    fast_res = result(fast)
    check_reader(fast_res, last=200)
    assert len(fast_res["seqs"]) > 20
    slow_res = result(slow)
    assert len(slow_res["seqs"]) == 3
    assert slow_res["torn"] == 0
    assert slow_res["dropped"] > 0


def test_killed_reader_blocks_nobody(names, wire, procs):
    victim, survivor = start_readers(procs, names, 2, "--until", "300", "--idle", "60")
    writer = start_writer(procs, names, 300, "--fps", "100")
    ready(writer)
    victim.send_signal(signal.SIGKILL)
    assert result(writer, timeout=40)["last"] == 300
    check_reader(result(survivor), last=300)


def test_writer_killed_mid_frame_never_tears_and_successor_carries_on(names, wire, procs):
    first = start_writer(procs, names, 10)
    ready(first)
    assert result(first)["last"] == 10
    (reader,) = start_readers(procs, names, 1, "--until", "15", "--idle", "60")
    half = procs.standin("half-writer", names.instance, names.run, "cam", "--shape", SHAPE)
    assert ready(half)["seq"] == 11
    half.send_signal(signal.SIGKILL)
    half.wait(10)
    successor = start_writer(procs, names, 5, "--fps", "50")
    assert ready(successor)["first"] == 11
    assert result(successor)["last"] == 15
    res = result(reader)
    assert res["torn"] == 0
    assert res["seqs"][0] == 10  # the newest complete frame, not the half-written one
    assert res["seqs"][-1] == 15


def test_no_torn_frames_under_flat_out_writes(names, procs):
    shape = (480, 640, 3)
    Wire.create(names, "big", int(np.prod(shape)), readers=2, slots=3).close()
    view = procs.standin(
        "reader", names.instance, names.run, "big", "0", "--sleep", "0.003", "--idle", "3"
    )
    copy = procs.standin("reader", names.instance, names.run, "big", "1", "--copy")
    ready(view)
    ready(copy)
    writer = start_writer(
        procs, names, 1500, "--loan", block="big", shape=",".join(map(str, shape))
    )
    ready(writer)
    assert result(writer)["last"] == 1500
    for res in (result(view), result(copy)):
        assert res["torn"] == 0
        assert res["seqs"][-1] == 1500


def test_zero_copy_view_learns_it_was_overwritten(names, wire):
    writer = WireWriter(names, "cam")
    reader = WireReader(names, "cam", 0)
    try:
        frame = np.arange(SLOT, dtype=np.uint8).reshape(48, 64, 3)
        writer.write(frame, timestamp_ns=123)
        view = reader.read(timeout=1)
        assert view.seq == 1 and view.timestamp_ns == 123
        assert np.array_equal(view.array, frame) and view.intact()
        assert not view.array.flags.writeable
        for _ in range(wire.layout.slots):
            writer.write(np.zeros_like(frame))
        assert not view.intact()
        copied = reader.read_copy(timeout=1)
        assert copied.array.flags.writeable and copied.intact()
        assert reader.dropped == wire.layout.slots - 1
    finally:
        writer.close()
        reader.close()


def test_a_copy_the_writer_laps_every_time_gives_up_at_its_deadline(names, wire):
    """A writer that overwrites each frame while it is being copied (made certain by the
    reader's hook): read_copy returns None at its deadline, never a torn frame, never
    spins past it, and counts each copy it threw away; with no deadline it waits for the
    doorbell between rounds of TRIES and takes the first frame left whole."""
    writer = WireWriter(names, "cam")
    frame = np.zeros((48, 64, 3), np.uint8)
    laps = {"left": 10**9}

    def lap() -> None:
        if laps["left"] > 0:
            laps["left"] -= 1
            for _ in range(wire.layout.slots):
                writer.write(frame)

    reader = WireReader(names, "cam", 0, after_copy=lap)
    try:
        writer.write(frame)
        start = time.monotonic()
        assert reader.read_copy(timeout=0.3) is None
        assert 0.3 <= time.monotonic() - start < 10
        assert reader.lapped > 0
        assert wire.stats()["readers"][0]["lapped"] == reader.lapped
        laps["left"], before = 3 * TRIES + 5, reader.lapped
        whole = reader.read_copy(timeout=None)
        assert whole is not None and whole.seq == writer.frames
        assert reader.lapped - before == 3 * TRIES + 5
    finally:
        writer.close()
        reader.close()


def test_loaned_write_fills_the_slot_in_place(names, wire):
    writer = WireWriter(names, "cam")
    reader = WireReader(names, "cam", 0)
    try:
        out = writer.borrow((48, 64, 3), np.uint8)
        out[...] = 7
        assert reader.read(timeout=0) is None  # nothing is published before publish()
        assert writer.publish() == 1
        assert (reader.read(timeout=1).array == 7).all()
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize(
    "shape,dtype",
    [((SLOT,), np.uint8), ((10, 20), np.uint16), ((2, 3, 4, 5), np.float32),
     ((7,), np.float64), ((48, 64), np.bool_), ((5, 5), np.complex64), ((0,), np.uint8)],
)  # fmt: skip
def test_any_shape_and_dtype_up_to_the_slot(names, wire, shape, dtype):
    rng = np.random.default_rng(1)
    frame = (rng.random(shape) * 100).astype(dtype)
    writer = WireWriter(names, "cam")
    reader = WireReader(names, "cam", 0)
    try:
        writer.write(frame)
        got = reader.read_copy(timeout=1)
        assert got.array.dtype == frame.dtype and got.array.shape == frame.shape
        assert np.array_equal(got.array, frame)
    finally:
        writer.close()
        reader.close()


def test_frame_bigger_than_slot_is_refused_with_sizes(names, wire):
    writer = WireWriter(names, "cam")
    try:
        with pytest.raises(FrameTooLarge) as err:
            writer.write(np.zeros((49, 64, 3), np.uint8))
        message = str(err.value)
        assert "'cam'" in message and "9,408" in message and f"{SLOT:,}" in message
        writer.write(np.zeros((48, 64, 3), np.uint8))  # the wire is still usable
    finally:
        writer.close()


def test_names_live_under_instance_and_run_and_owner_unlinks_all(names):
    wire = Wire.create(names, "cam", 100, readers=2)
    assert sorted(run_entries(names)) == [
        f"pipelined.test.{names.run}.wire.cam",
        f"sem.pipelined.test.{names.run}.wire.cam.r0",
        f"sem.pipelined.test.{names.run}.wire.cam.r1",
    ]
    wire.unlink()
    wire.close()
    assert run_entries(names) == []


def test_attach_to_missing_wire_says_so(names):
    with pytest.raises(WireError, match="does not exist"):
        WireReader(names, "nowhere", 0)
    with pytest.raises(WireError, match="does not exist"):
        WireWriter(names, "nowhere")


def test_attach_to_other_layout_version_says_so(names, wire):
    shm = posix_ipc.SharedMemory(names.wire("cam"))
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    _atomics.store_release(mm, 8, 99)
    mm.close()
    with pytest.raises(WireError, match="layout version 99"):
        WireReader(names, "cam", 0)


def test_reader_index_out_of_range(names, wire):
    with pytest.raises(WireError, match=r"reader slots 0\.\.2, not 3"):
        WireReader(names, "cam", 3)


def _modes(names: RunNames) -> dict[str, tuple[int, int]]:
    out = {}
    for entry in run_entries(names):
        st = os.stat(f"{SHM_DIR}/{entry}")
        out[entry] = (stat.S_IMODE(st.st_mode), st.st_gid)
    return out


def _open_as(uid: int, names: RunNames, extra_groups: list[int] | None = None) -> str:
    """Try, as another user, to read the wire's pixels and to ring a reader's doorbell.

    shm_open and sem_open are open() on /dev/shm, so plain tools make the same check the
    kernel makes for posix_ipc (the test's own Python lives under /root, out of reach).
    """
    segment = f"{SHM_DIR}/{names.wire('cam')[1:]}"
    bell = f"{SHM_DIR}/sem.{names.doorbell('cam', 0)[1:]}"
    script = (
        f"head -c 64 {segment} >/dev/null 2>&1 && echo read-ok;"
        f"printf x | dd of={bell} bs=1 seek=31 conv=notrunc status=none 2>/dev/null"
        " && echo ring-ok; true"
    )
    out = subprocess.run(
        ["/bin/sh", "-c", script],
        user=uid, group=uid, extra_groups=extra_groups or [],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return " ".join(out.stdout.split()) or "denied"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")


@needs_root
def test_another_user_cannot_touch_a_private_wire(names):
    old = os.umask(0)  # the modes must not depend on the creator's umask
    try:
        wire = Wire.create(names, "cam", 100, readers=1)
    finally:
        os.umask(old)
    try:
        assert {mode for mode, _ in _modes(names).values()} == {0o600}
        assert _open_as(65534, names) == "denied"
    finally:
        wire.unlink()
        wire.close()


@needs_root
def test_group_members_share_a_group_wire(names):
    group = 4242  # a gid with no other member on this machine
    old = os.umask(0o027)
    try:
        wire = Wire.create(names, "cam", 100, readers=1, group=group)
    finally:
        os.umask(old)
    try:
        assert set(_modes(names).values()) == {(0o660, group)}
        assert _open_as(65534, names) == "denied"
        assert _open_as(65534, names, extra_groups=[group]) == "read-ok ring-ok"
    finally:
        wire.unlink()
        wire.close()


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_full_dev_shm_is_an_error_at_creation_not_a_sigbus_later():
    code = textwrap.dedent("""
        import os
        from pipelined.workers.ipc.names import RunNames
        from pipelined.workers.ipc.wire import Wire, WireError
        names = RunNames("test", "tiny")
        try:
            Wire.create(names, "cam", 4 * 1024 * 1024, readers=2)
            print("created")
        except WireError as exc:
            print("refused:", exc)
        print("left:", os.listdir("/dev/shm"))
    """)
    script = f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -c '{code}'"
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip(f"cannot make a mount namespace here: {out.stderr.strip()}")
    assert "refused: no room in /dev/shm for wire 'cam'" in out.stdout, out.stderr
    assert "left: []" in out.stdout


def test_wire_bytes_counts_header_and_page_aligned_slots():
    assert wire_bytes(1, readers=1, slots=4) == 4096 + 4 * 4096
    assert wire_bytes(640 * 480 * 3, readers=2) == 4096 + 4 * 921600
