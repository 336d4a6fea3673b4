"""The packet wire: keyframe starts, pre-roll, lapped readers, torn bytes, generations.

The races are made certain with the reader's ``after_copy`` hook: the test's writer
overwrites the very packet the reader is taking, between its copy and its check.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelined.workers.ipc.names import SHM_DIR, RunNames
from pipelined.workers.ipc.packets import (
    CodecParams,
    PacketReader,
    PacketTooLarge,
    PacketWire,
    PacketWireError,
    PacketWriter,
    packet_wire_bytes,
)
from pipelined.workers.ipc.segment import run_entries, unlink_run

STANDINS = Path(__file__).parent / "packet_standins.py"
PARAMS = CodecParams(
    "h264", 1920, 1080, (1, 90000), extradata=b"\x01\x64\x00\x28sps", bit_rate=4_000_000
)
RING = 64 * 1024


@pytest.fixture
def wire(names: RunNames) -> Iterator[PacketWire]:
    w = PacketWire.create(names, "cam", RING, readers=3, index_slots=64)
    yield w
    w.unlink()
    w.close()


@pytest.fixture
def writer(names: RunNames, wire: PacketWire) -> Iterator[PacketWriter]:
    w = PacketWriter(names, "cam")
    w.set_params(PARAMS)
    yield w
    w.close()


def gop(
    writer: PacketWriter, count: int, size: int = 1000, time_ns: int | None = None
) -> list[int]:
    """One group of pictures: a keyframe, then ``count - 1`` others; returns the numbers."""
    numbers = []
    for i in range(count):
        n = writer.packets + 1
        data = n.to_bytes(8, "little") * (size // 8)
        numbers.append(
            writer.write(data, pts=n * 3000, dts=n * 3000, duration=3000, keyframe=i == 0,
                         time_ns=None if time_ns is None else time_ns + i * 33_000_000)
        )  # fmt: skip
    return numbers


def drain(reader: PacketReader) -> list:
    packets = []
    while (p := reader.read(timeout=0)) is not None:
        packets.append(p)
    return packets


def test_packets_arrive_whole_in_order_with_their_metadata(names, writer):
    reader = PacketReader(names, "cam", 0)
    try:
        numbers = gop(writer, 5) + gop(writer, 5, size=3000)
        got = drain(reader)
        assert [p.number for p in got] == numbers
        for p in got:
            assert p.data == p.number.to_bytes(8, "little") * (len(p.data) // 8)
            assert (p.pts, p.dts, p.duration) == (p.number * 3000, p.number * 3000, 3000)
            assert p.generation == 1 and p.time_ns > 0
        assert [p.keyframe for p in got] == [True, False, False, False, False] * 2
        assert reader.params(1) == PARAMS
        assert (reader.dropped, reader.gaps) == (0, 0)
    finally:
        reader.close()


def test_a_new_reader_starts_at_the_newest_keyframe(names, writer):
    gop(writer, 4)
    second = gop(writer, 4)
    gop_head = second[0]
    writer.write(b"p" * 100, pts=1, dts=1)  # mid-group when the reader arrives
    reader = PacketReader(names, "cam", 0)
    try:
        got = drain(reader)
        assert got[0].number == gop_head and got[0].keyframe
        assert [p.number for p in got] == [*second, writer.packets]
    finally:
        reader.close()


def test_a_reader_waits_for_the_first_keyframe(names, writer):
    reader = PacketReader(names, "cam", 0)
    try:
        writer.write(b"not a keyframe", pts=1, dts=1)
        assert reader.read(timeout=0.05) is None
        first = gop(writer, 2)
        assert [p.number for p in drain(reader)] == first
    finally:
        reader.close()


def test_bytes_overwritten_while_copied_are_never_delivered(names, writer):
    """The writer laps the reader between its copy and its check, every time."""
    gop(writer, 3, size=8000)
    lap = {"armed": True}

    def overwrite() -> None:
        if lap.pop("armed", False):
            gop(writer, 6, size=8000)  # 48 KB more through a 64 KiB ring: packet 1 is gone

    reader = PacketReader(names, "cam", 0, after_copy=overwrite)
    try:
        got = drain(reader)
        # The keyframe it was copying was overwritten: it jumps to the newest keyframe.
        assert got and got[0].keyframe and got[0].number == 4
        for p in got:
            assert p.data == p.number.to_bytes(8, "little") * (len(p.data) // 8)
        assert reader.gaps == 1 and reader.dropped == 3
    finally:
        reader.close()


def test_a_reader_lapped_in_the_index_loses_whole_groups(names, writer):
    reader = PacketReader(names, "cam", 0)
    try:
        gop(writer, 4)
        assert reader.read(timeout=0).number == 1  # it has started, then falls behind
        for _ in range(20):  # 80 packets through a 64-line index
            gop(writer, 4, size=100)
        got = drain(reader)
        assert got[0].keyframe, "after a gap the first packet is a keyframe"
        assert got[-1].number == writer.packets
        assert [p.number for p in got] == list(range(got[0].number, writer.packets + 1))
        assert reader.gaps == 1
        assert 1 + reader.dropped + len(got) == writer.packets
    finally:
        reader.close()


def test_with_no_newer_keyframe_a_lapped_reader_skips_to_the_next_one(names, writer):
    reader = PacketReader(names, "cam", 0)
    try:
        gop(writer, 1)
        assert reader.read(timeout=0).keyframe
        for i in range(70):  # one long group: no keyframe newer than where the reader is
            writer.write(bytes(100), pts=i, dts=i)
        assert drain(reader) == []  # nothing it could decode
        assert reader.gaps == 1
        key = gop(writer, 2)
        got = drain(reader)
        assert [p.number for p in got] == key and got[0].keyframe
        assert 1 + reader.dropped + len(got) == writer.packets
    finally:
        reader.close()


def test_rewind_starts_at_the_oldest_whole_keyframe_within_the_window(names, writer):
    second = 1_000_000_000
    t0 = 1_700_000_000 * second
    firsts = [gop(writer, 3, size=500, time_ns=t0 + k * second)[0] for k in range(6)]
    reader = PacketReader(names, "cam", 0)
    try:
        # The newest packet is at t0 + 5 s + 66 ms: 2.5 s back reaches the group of t0 + 3 s.
        assert reader.rewind(2.5)
        assert reader.read(timeout=0).number == firsts[3]
        assert reader.rewind(60)  # more than the wire holds: the oldest whole keyframe
        assert reader.read(timeout=0).number == firsts[0]
    finally:
        reader.close()
    # Past the ring: the oldest groups are overwritten, and rewind never returns them.
    for k in range(6, 30):
        gop(writer, 3, size=2000, time_ns=t0 + k * second)
    reader = PacketReader(names, "cam", 1)
    try:
        assert reader.rewind(3600)
        first = reader.read(timeout=0)
        assert first.keyframe and first.number > firsts[-1]
        assert first.data == first.number.to_bytes(8, "little") * (len(first.data) // 8)
    finally:
        reader.close()


def test_generations_carry_the_codec_parameters(names, writer):
    reader = PacketReader(names, "cam", 0)
    try:
        gop(writer, 2)
        small = CodecParams("h264", 640, 360, (1, 90000), extradata=b"\x01small")
        assert writer.set_params(small) == 2
        gop(writer, 2)
        got = drain(reader)
        assert [p.generation for p in got] == [1, 1, 2, 2]
        assert reader.params(1) == PARAMS and reader.params(2) == small
        for g in range(3, 8):
            writer.set_params(CodecParams("hevc", g, g, (1, 25)))
        other = PacketReader(names, "cam", 1)
        try:
            assert other.params(1) is None  # four generations are kept, older ones are gone
            assert other.params(7) == CodecParams("hevc", 7, 7, (1, 25))
        finally:
            other.close()
    finally:
        reader.close()


def test_bad_use_is_refused_with_a_reason(names, wire, writer):
    with pytest.raises(PacketTooLarge, match="more than half the ring"):
        writer.write(bytes(RING // 2 + 1), keyframe=True)
    fresh = PacketWriter(names, "cam")  # a successor of a writer that already set params
    fresh.close()
    with pytest.raises(PacketWireError, match="does not exist"):
        PacketReader(names, "nowhere", 0)
    with pytest.raises(PacketWireError, match=r"reader slots 0\.\.2, not 3"):
        PacketReader(names, "cam", 3)


def test_set_params_comes_before_the_first_packet(names, wire):
    w = PacketWriter(names, "cam")
    try:
        with pytest.raises(PacketWireError, match="set_params"):
            w.write(b"x", keyframe=True)
    finally:
        w.close()


def test_a_successor_writer_carries_on_the_numbering(names, writer):
    gop(writer, 3)
    successor = PacketWriter(names, "cam")
    try:
        assert successor.generation == 1
        assert successor.write(b"next", keyframe=True) == 4
    finally:
        successor.close()


def test_names_modes_and_cleanup(names):
    old = os.umask(0)
    try:
        w = PacketWire.create(names, "door", 8192, readers=2, index_slots=16)
    finally:
        os.umask(old)
    entries = sorted(run_entries(names))
    assert entries == [
        f"pipelined.test.{names.run}.pkt.door",
        f"sem.pipelined.test.{names.run}.pkt.door.r0",
        f"sem.pipelined.test.{names.run}.pkt.door.r1",
    ]
    assert {stat.S_IMODE(os.stat(f"{SHM_DIR}/{e}").st_mode) for e in entries} == {0o600}
    assert os.stat(f"{SHM_DIR}/{entries[0]}").st_size == packet_wire_bytes(8192, 2, 16)
    w.close()
    unlink_run(names)
    assert run_entries(names) == []


def _standin(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(STANDINS), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _last_line(proc: subprocess.Popen[str], timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_processes_flat_out_nothing_torn_gaps_only_at_keyframes(names):
    """A writer flat out and readers fast and slow, each in its own process."""
    w = PacketWire.create(names, "cam", 256 * 1024, readers=2, index_slots=256)
    procs: list[subprocess.Popen[str]] = []
    try:
        for index, sleep in (("0", "0"), ("1", "0.002")):
            proc = _standin("reader", names.instance, names.run, "cam", index, "--sleep", sleep)
            procs.append(proc)
        writer = _standin("writer", names.instance, names.run, "cam", "--packets", "20000",
                          "--gop", "15", "--max-size", "20000")  # fmt: skip
        procs.append(writer)
        for proc in procs:
            assert json.loads(proc.stdout.readline())["ready"]
        last = _last_line(writer)["last"]
        fast, slow = (_last_line(p) for p in procs[:2])
        for res in (fast, slow):
            numbers = res["numbers"]
            assert numbers and numbers == sorted(set(numbers))
            assert res["torn"] == 0
            assert res["after_gap_not_key"] == 0
            assert numbers[-1] == last
        assert slow["gaps"] > 0, "the slow reader was never lapped: the test proved nothing"
        assert slow["counted_gaps"] >= slow["gaps"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        w.unlink()
        w.close()
