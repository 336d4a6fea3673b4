"""What a camera decodes, on a clock the test controls; and what packets say unopened."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from pipelined.workers.video.bitstream import (
    annex_b,
    jpeg_size,
    nal_units,
    parameter_sets,
    sequence_sets,
)
from pipelined.workers.video.policy import DecodePolicy, Want


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_decoded_without_readers_and_everything_by_default() -> None:
    policy = DecodePolicy(fps=30, decode_fps=0, live=True)
    assert policy.want(False, 1.0, False) is Want.NOTHING
    assert policy.want(True, None, False) is Want.EVERYTHING
    assert policy.want(True, 0.1, True) is Want.EVERYTHING  # every frame asked: all of them


@pytest.mark.parametrize(
    ("decode_fps", "interval", "intra_only", "want"),
    [
        (5, None, False, Want.EVERYTHING),  # keyframes not measured yet
        (5, 1.0, False, Want.EVERYTHING),  # one a second is not five
        (1, 1.0, False, Want.KEYFRAMES),
        (1, 1.08, False, Want.KEYFRAMES),  # a camera's clock is not exact
        (1, 1.2, False, Want.EVERYTHING),
        (0.5, 2.0, False, Want.KEYFRAMES),
        (5, None, True, Want.KEYFRAMES),  # MJPEG: every packet a keyframe
    ],
)
def test_keyframes_alone_when_they_come_often_enough(decode_fps, interval, intra_only, want):
    policy = DecodePolicy(fps=30, decode_fps=decode_fps, live=True)
    assert policy.want(True, interval, intra_only) is want


def test_decode_fps_converts_that_many_frames_a_second_of_a_live_source() -> None:
    clock = Clock()
    policy = DecodePolicy(fps=30, decode_fps=5, live=True, clock=clock)
    converted = []
    for n in range(90):  # 3 s at 30 fps, every frame decoded
        clock.now = 100.0 + n / 30
        assert policy.decode_now(Want.EVERYTHING, backlog=0)
        if policy.convert_now(Want.EVERYTHING, backlog=0):
            converted.append(n)
    assert len(converted) == 16  # at 0, 0.2, …, 3.0 s (less a frame): 5 a second
    assert all(5 <= b - a <= 7 for a, b in itertools.pairwise(converted))


def test_in_keyframe_mode_only_the_due_keyframes_are_decoded() -> None:
    clock = Clock()
    policy = DecodePolicy(fps=30, decode_fps=5, live=True, clock=clock)
    decoded = []
    for n in range(60):  # MJPEG at 30 fps for 2 s: each packet a keyframe
        clock.now = 100.0 + n / 30
        if policy.decode_now(Want.KEYFRAMES, backlog=0):
            decoded.append(n)
            assert policy.convert_now(Want.KEYFRAMES, backlog=0)
    assert len(decoded) == 11  # at 0, 0.2, …, 2.0 s (less a frame)


def test_a_live_source_converts_the_newest_frame_only() -> None:
    policy = DecodePolicy(fps=30, decode_fps=0, live=True, clock=Clock())
    assert not policy.convert_now(Want.EVERYTHING, backlog=3)  # newer ones wait
    assert not policy.decode_now(Want.KEYFRAMES, backlog=1)
    assert policy.convert_now(Want.EVERYTHING, backlog=0)
    files = DecodePolicy(fps=30, decode_fps=0, live=False, clock=Clock())
    assert all(files.convert_now(Want.EVERYTHING, backlog=3) for _ in range(10))  # every one
    # Decoding starts at the last keyframe: the decoder catches up, the newest is shown.
    start = DecodePolicy(fps=30, decode_fps=0, live=True, clock=Clock())
    shown = [start.convert_now(Want.EVERYTHING, backlog=b) for b in (4, 3, 2, 1, 0)]
    assert shown == [False, False, False, False, True]


def test_a_decoder_that_cannot_catch_up_still_converts_as_many_as_asked() -> None:
    """A box too busy for the stream: two packets always wait. Waiting for none to wait
    would never show a frame; the due ones are shown, a little late."""
    clock = Clock()
    policy = DecodePolicy(fps=30, decode_fps=5, live=True, clock=clock)
    converted = []
    for n in range(60):  # 2 s
        clock.now = 100.0 + n / 30
        if policy.convert_now(Want.EVERYTHING, backlog=2):
            converted.append(n)
    assert len(converted) == 10 and converted[0] == 1  # 5 a second, after the first look
    assert policy.want(False, 1.0, False) is Want.NOTHING  # decoding stops, then starts:
    assert not policy.convert_now(Want.EVERYTHING, backlog=2)  # it catches up again first


@pytest.mark.parametrize(("taken", "dropped"), [(17, 0), (15, 5)])
def test_a_decoder_a_moment_late_catches_up_and_one_a_quarter_group_late_skips_ahead(
    taken, dropped
):
    """The feed's hand-off, packet by packet: a group of 20 is offered, the decoder takes
    ``taken`` of them, the next keyframe comes. 3 waiting (a moment's delay) stay to be
    decoded; 5 (a quarter of the group) go, and decoding goes on from the keyframe."""
    import av

    from pipelined.workers.blocks.sources import parse_source
    from pipelined.workers.ipc.packets import CodecParams
    from pipelined.workers.video.feed import Feed, Item
    from pipelined.workers.video.source import OpenSettings

    feed = Feed(parse_source("rtsp://127.0.0.1:9/cam"), OpenSettings(5.0, 5.0), None)
    feed.want = Want.EVERYTHING
    params = CodecParams("h264", 320, 240, (1, 90000), b"")

    def offer(n: int) -> None:
        feed._offer(Item(av.Packet(bytes([n])), params, 1, keyframe=n % 20 == 0))

    for n in range(20):
        offer(n)
    assert [bytes(feed.take(0).packet)[0] for _ in range(taken)] == list(range(taken))
    offer(20)  # the next keyframe
    waiting = [bytes(feed.take(0).packet)[0] for _ in range(feed.backlog())]
    assert feed.dropped == dropped
    assert waiting == ([20] if dropped else [*range(taken, 20), 20])


SPS = bytes.fromhex("6742c00dda0507ec05a830303528000003000800000300f478a155")
PPS = bytes.fromhex("68ce3c80")


def test_nal_units_and_parameter_sets_of_an_annex_b_packet() -> None:
    idr = bytes.fromhex("65888400ff")
    packet = b"\x00\x00\x00\x01\x09\x10" + annex_b([SPS, PPS]) + b"\x00\x00\x01" + idr
    assert nal_units(packet) == [b"\x09\x10", SPS, PPS, idr]
    assert parameter_sets("h264", packet) == [SPS, PPS]
    assert sequence_sets("h264", [SPS, PPS]) == frozenset([SPS])
    assert parameter_sets("h264", b"\x01\x64\x00\x1f") == []  # avcC extradata: not Annex B
    assert parameter_sets("mjpeg", packet) == []


def test_the_size_of_a_jpeg_is_read_from_its_header() -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((120, 160, 3), np.uint8))
    assert ok and jpeg_size(jpeg.tobytes()) == (160, 120)
    assert jpeg_size(memoryview(jpeg.tobytes())) == (160, 120)
    assert jpeg_size(b"not a jpeg") is None
