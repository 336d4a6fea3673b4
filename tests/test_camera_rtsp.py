"""The camera on a real RTSP server sending H.264: packets as sent, decoding as asked.

The server is GStreamer's (``rtsp_server.py``); the camera block runs in the test process
with a real packet wire in /dev/shm, read back by a real ``PacketReader``. Only the
block's context is a stand-in: it records what the block reports, and says whether
anyone reads the frames (``readers``), as the runtime would from the frame wire.
"""

from __future__ import annotations

import itertools
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import av
import cv2
import numpy as np
import pytest
import rtsp_server
from camerahost import DEADLINE, rig_fixture  # noqa: F401 - the rig fixture
from harness.daemon import TOKEN, RunningDaemon, free_port
from rtsp_server import RtspServer, encode_clip
from userblocks.video_blocks import read_dump

from pipelined.workers.ipc.packets import Packet
from pipelined.workers.video.bitstream import nal_units, parameter_sets

pytestmark = pytest.mark.skipif((why := rtsp_server.unavailable()) is not None, reason=str(why))


@pytest.fixture
def h264() -> Iterator[RtspServer]:
    with RtspServer.h264(size=(320, 240), fps=15, gop=15) as server:
        yield server


def keyframe_numbers(packets: list[Packet]) -> list[int]:
    return [p.number for p in packets if p.keyframe]


def vcl(units: list[bytes]) -> list[bytes]:
    """The NAL units that carry pictures (slices): what re-encoding would change."""
    return [u for u in units if u[0] & 0x1F in (1, 5)]


# -- packets ---------------------------------------------------------------------------------


def test_packets_arrive_as_the_server_sent_them_with_keyframes_at_its_gop(rig, h264):
    r = rig(h264.url)
    r.run_until(lambda: len(r.packets) >= 50, "50 packets")
    packets = r.packets
    assert packets[0].keyframe  # a reader starts at a keyframe
    keys = keyframe_numbers(packets)
    assert len(keys) >= 3 and {b - a for a, b in itertools.pairwise(keys)} == {15}  # the GOP
    assert [p.number for p in packets] == list(range(packets[0].number, packets[-1].number + 1))

    codec = r.reader.params(packets[0].generation)
    assert (codec.codec, codec.width, codec.height) == ("h264", 320, 240)
    assert codec.time_base == (1, 90000)
    in_band = parameter_sets("h264", packets[0].data)
    assert in_band and parameter_sets("h264", codec.extradata) == in_band  # the SDP's SPS/PPS

    sent = nal_units(h264.sent())
    got = [u for p in packets for u in nal_units(p.data)]
    start = sent.index(got[0])
    assert sent[start : start + len(got)] == got  # every NAL unit, byte for byte, in order
    pts = [p.pts for p in packets]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


def test_no_decoding_while_no_one_reads_the_frames(rig, h264):
    r = rig(h264.url)
    r.run_until(lambda: len(r.packets) >= 40, "40 packets")
    assert r.cam.decoded == 0 and r.frames == []
    assert r.context.details[-1].endswith("; not decoding: no one reads its frames")

    r.context.readers = True  # a reader attaches: decoding starts, at the last keyframe
    r.run_until(lambda: len(r.frames) >= 10, "10 frames")
    assert "decoding every frame in software" in r.context.details[-1]
    ball = r.frames[-1]
    assert ball.std() > 10  # the moving ball on black, decoded

    r.context.readers = False  # and it goes
    r.run_for(0.5)  # the camera asks a few times a second
    decoded, frames = r.cam.decoded, len(r.frames)
    r.run_until(lambda: len(r.packets) >= 80, "80 packets")
    assert r.cam.decoded <= decoded + 1 and len(r.frames) <= frames + 1
    assert r.context.details[-1].endswith("not decoding: no one reads its frames")


def test_decode_fps_converts_only_as_many_frames_as_asked(rig, h264):
    r = rig(h264.url, decode_fps=3)
    r.context.readers = True
    r.run_until(lambda: len(r.frames) >= 2, "2 frames")
    start, frames, decoded = time.monotonic(), len(r.frames), r.cam.decoded
    r.run_for(3.0)
    seconds = time.monotonic() - start
    converted = len(r.frames) - frames
    assert 1 <= converted <= 3 * seconds + 1
    # one keyframe a second is not enough for 3 a second: every packet is decoded
    assert r.cam.decoded - decoded > converted
    assert "decoding every frame (converting 3 a second)" in r.context.details[-1]


def test_a_decoder_too_slow_for_the_camera_still_gives_frames_a_group_behind_at_most(
    rig, h264, monkeypatch
):
    """A box too busy for its cameras: each packet takes longer to decode than the camera
    takes to send the next. The decoder drops what waits at a keyframe once it is a
    quarter of a group behind, and converts what is due; it neither stops giving frames
    nor falls ever further behind."""
    from pipelined.workers.video.decode import Decoder

    decode = Decoder.decode

    def slow(self, packet):
        time.sleep(1.3 / 15)  # the camera sends 15 a second; this decodes 11.5
        return decode(self, packet)

    monkeypatch.setattr(Decoder, "decode", slow)
    r = rig(h264.url, decode_fps=5)
    r.context.readers = True
    r.run_until(lambda: len(r.frames) >= 1, "a first frame")
    feed = r.cam._feed
    frames, dropped, start = len(r.frames), feed.dropped, time.monotonic()
    most = 0
    while time.monotonic() - start < 4.0:
        r.step()
        most = max(most, feed.backlog())
    assert len(r.frames) - frames >= 4  # 5 a second asked; a few, not none
    assert feed.dropped > dropped  # whole groups of pictures went
    assert most <= 15  # never more than one group (15 packets) behind
    assert len(r.packets) >= 50  # and the packet wire got every packet meanwhile
    numbers = [p.number for p in r.packets]
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    r.run_until(lambda: "too slow" in r.context.details[-1], "the status to say so")
    assert r.context.details[-1].endswith(
        "decoding every frame (converting 5 a second) in software (no hardware decoder works"
        " here), too slow for the stream: dropping groups of pictures"
    )


def test_keyframes_alone_when_they_come_often_enough(rig, h264):
    r = rig(h264.url, decode_fps=1)
    r.context.readers = True
    r.run_until(lambda: "keyframes only" in str(r.context.details[-1:]), "keyframe mode")
    feed = r.cam._feed
    r.run_for(0.2)  # what was handed over before the switch is gone
    handed, decoded = feed.handed, r.cam.decoded
    keys = len(keyframe_numbers(r.packets))
    r.run_until(lambda: len(keyframe_numbers(r.packets)) >= keys + 3, "3 more keyframes")
    new_keys = len(keyframe_numbers(r.packets)) - keys
    assert feed.handed - handed <= new_keys + 1  # the P-frames never leave the feed
    assert 1 <= r.cam.decoded - decoded <= new_keys + 1
    assert r.frames and r.frames[-1].std() > 10
    assert "decoding keyframes only (one every 1 s, at most 1 a second)" in r.context.details[-1]


# -- a camera that hangs, dies and comes back ---------------------------------------------


def test_a_hung_server_is_reconnected_and_says_why(rig, h264):
    r = rig(h264.url, stall_timeout=1.0, timeout=1.0, retry_max=1.0)
    r.run_until(lambda: len(r.packets) >= 20, "20 packets")
    generation = r.packets[-1].generation
    h264.pause()  # SIGSTOP: the connection stays open, nothing comes
    try:
        r.run_until(lambda: len(r.context.reasons) >= 2, "two reasons")
        shown = f"waiting for source {h264.url}"
        assert r.context.reasons[0] == f"{shown}: no packet for 1 s"
        assert r.context.reasons[1] == f"{shown}: no answer within 1 s"  # nor to a new one
    finally:
        h264.resume()
    count = len(r.packets)
    r.run_until(lambda: len(r.packets) >= count + 20, "packets after the hang")
    assert r.context.reasons[-1] is None
    after = r.packets[count:]
    assert after[0].keyframe and after[0].generation > generation  # a new generation


def test_a_killed_server_coming_back_gives_a_new_generation(rig, h264):
    r = rig(h264.url, retry_max=1.0)
    r.context.readers = True
    r.run_until(lambda: len(r.frames) >= 5, "5 frames")
    generation = r.packets[-1].generation
    h264.stop()  # SIGKILL
    r.run_until(lambda: "connection refused" in str(r.context.reasons[-1:]), "refused")
    assert r.context.reasons[0].startswith(f"waiting for source {h264.url}: ")
    h264.start()  # back on the same port
    count, frames = len(r.packets), len(r.frames)
    r.run_until(lambda: len(r.frames) >= frames + 5, "frames after the restart")
    assert r.context.reasons[-1] is None
    assert r.packets[count].keyframe and r.packets[count].generation == generation + 1
    assert r.reader.params(generation + 1).codec == "h264"


def test_a_stream_without_video_is_waited_for_saying_so(rig):
    with RtspServer.audio() as server:
        r = rig(server.url)
        r.run_until(lambda: r.context.reasons, "a reason")
        assert r.context.reasons[0] == (
            f"waiting for source {server.url}: the source carries no video FFmpeg can read"
            " (it has audio only)"
        )


def test_a_server_without_the_path_says_so(rig, h264):
    r = rig(h264.url + "-nothing")
    r.run_until(lambda: r.context.reasons, "a reason")
    assert r.context.reasons[0].endswith(
        "the server has no such stream (404 Not Found): check the path"
    )


# -- streams that change ---------------------------------------------------------------------


def test_a_resolution_change_mid_stream_is_a_new_generation(rig):
    small = encode_clip(size=(320, 240), fps=15, gop=15, seconds=2)
    large = encode_clip(size=(480, 272), fps=15, gop=15, seconds=2, start=30)
    with RtspServer.clip_of(small + large, fps=15) as server:
        r = rig(server.url)
        r.context.readers = True

        def sizes() -> list[tuple[int, int]]:
            seen = []
            for p in r.packets:
                c = r.reader.params(p.generation)
                if not seen or seen[-1] != (c.width, c.height):
                    seen.append((c.width, c.height))
            return seen

        r.run_until(lambda: len(sizes()) >= 3, "two changes of size")
        one, two = (320, 240), (480, 272)
        assert sizes()[:3] in ([one, two, one], [two, one, two])
        firsts = [p for q, p in itertools.pairwise(r.packets) if p.generation != q.generation]
        assert all(p.keyframe for p in firsts)  # a generation starts at a keyframe
        for p in firsts:
            c = r.reader.params(p.generation)
            assert parameter_sets("h264", c.extradata) == parameter_sets("h264", p.data)
        assert r.frames[-1].shape == (240, 320, 3)  # the camera's size, whatever it sent


def test_a_clip_is_relayed_nal_for_nal(rig):
    clip = encode_clip(size=(320, 240), fps=15, gop=10, seconds=2)
    with RtspServer.clip_of(clip, fps=15) as server:
        r = rig(server.url)
        r.run_until(lambda: len(r.packets) >= 45, "45 packets")
    sent = [vcl(nal_units(au.data)) for au in clip]
    got = [vcl(nal_units(p.data)) for p in r.packets]
    start = sent.index(got[0])
    for i, units in enumerate(got):
        assert units == sent[(start + i) % len(sent)], f"packet {i} differs"
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = r.reader.params(r.packets[0].generation).extradata
    frames = [f for p in r.packets for f in decoder.decode(av.Packet(p.data))]
    assert len(frames) >= len(r.packets) - 1  # every packet decodes (an encoder delays none)


# -- hardware decoding: none here, so what is proven is the fallback -----------------------


@pytest.mark.parametrize(
    ("hwaccel", "how"),
    [
        ("auto", "in software (no hardware decoder works here)"),
        ("h264_v4l2m2m", "in software (h264_v4l2m2m: "),
        ("off", "in software"),
    ],
)
def test_without_a_hardware_decoder_it_decodes_in_software_and_says_so(rig, h264, hwaccel, how):
    r = rig(h264.url, hwaccel=hwaccel)
    r.context.readers = True
    r.run_until(lambda: len(r.frames) >= 3, "3 frames")
    assert f"decoding every frame {how}" in r.context.details[-1]
    assert r.cam._decoder.hardware is None


# -- in a running graph: the page's live view is a reader while someone watches ----------


def not_decoding(block: dict) -> bool:
    return (block["detail"] or "").endswith("not decoding: no one reads its frames")


def test_in_a_graph_the_camera_decodes_only_while_someone_watches(tmp_path, h264):
    dump, port = tmp_path / "camera.pkt", free_port()
    text = (
        f'[blocks.camera]\ntype = "camera"\nsource = "{h264.url}"\nsize = [320, 240]\n'
        f'[blocks.dump]\ntype = "userblocks.video_blocks:PacketDump"\ninput = "camera"\n'
        f'path = "{dump}"\n'
    )
    with RunningDaemon(text, http=f"127.0.0.1:{port}") as d:
        d.start().wait_all_running()
        d.until(lambda: len(read_dump(dump)) >= 30, DEADLINE, "30 packets recorded")
        # the detail comes with the camera's next report, which may follow the packets
        d.until(lambda: not_decoding(d.block("camera")), DEADLINE, "the camera to say so")
        assert d.block("camera")["frames_out"] == 0  # packets only: nobody reads the frames

        def snapshot() -> bytes | None:
            url = f"http://127.0.0.1:{port}/live/camera.jpg"
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return answer.read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 503, exc  # no frame yet: the decoder is starting
                return None

        jpeg = d.until(snapshot, DEADLINE, "a snapshot of the live camera")
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (240, 320, 3) and picture.std() > 10
        d.until(lambda: d.block("camera")["frames_out"] > 0, DEADLINE, "frames counted")
        d.until(
            lambda: not_decoding(d.block("camera")),
            DEADLINE,
            "decoding to stop once the viewer left",
        )
        before = d.block("camera")["frames_out"]
        count = len(read_dump(dump))
        d.until(lambda: len(read_dump(dump)) >= count + 15, DEADLINE, "15 more packets")
        assert d.block("camera")["frames_out"] <= before + 1
