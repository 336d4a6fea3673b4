"""Frames encoded once: the encoder, the ``encode`` key, and the runtime that fills a
block's packet wire with it. Real libx264 on real frames, read back with PyAV."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from harness.daemon import RunningDaemon
from userblocks.video_blocks import read_dump

from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.workers.blocks.testsrc import TestScene
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.packets import PacketReader, PacketWire, PacketWriter
from pipelined.workers.video.bitstream import parameter_sets
from pipelined.workers.video.encode import Encoder, EncoderError, EncoderThread
from pipelined.workers.video.options import EncodeOptions, parse_encode

SECOND = 1_000_000_000
DUMP = "userblocks.video_blocks:PacketDump"


def decode_all(packets, extradata: bytes) -> list[np.ndarray]:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = extradata
    frames = [f for p in packets for f in decoder.decode(av.Packet(p))]
    frames += decoder.decode(None)
    return [f.to_ndarray(format="bgr24") for f in frames]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(a, b))


# -- the encoder -----------------------------------------------------------------------------


def test_frames_in_packets_out_decodable_with_a_keyframe_every_interval():
    scene = TestScene(320, 240, fps=30)
    encoder = Encoder(EncodeOptions(keyframe_interval=1.0), 320, 240, fps=30)
    source = [scene.render(i) for i in range(75)]
    packets = []
    for i, frame in enumerate(source):
        packets += encoder.encode(frame, 5 * SECOND + i * SECOND // 30)
    packets += encoder.flush()

    assert len(packets) == 75  # no B-frames, no delay: a packet for every frame
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 30, 60]
    assert [p.pts for p in packets] == [i * 3000 for i in range(75)]  # 1/90000 from 0
    params = encoder.params
    assert (params.codec, params.width, params.height, params.time_base) == (
        "h264", 320, 240, (1, 90000),
    )  # fmt: skip
    sets = parameter_sets("h264", params.extradata)
    assert len(sets) == 2 and all(parameter_sets("h264", packets[i].data) == sets for i in (0, 30))
    decoded = decode_all([p.data for p in packets], params.extradata)
    assert len(decoded) == 75
    assert min(psnr(a, b) for a, b in zip(source, decoded, strict=False)) > 30
    assert encoder.how == "with libx264 (no hardware encoder works here)"


def test_keyframes_follow_the_clock_not_the_frame_count():
    encoder = Encoder(EncodeOptions(keyframe_interval=1.0), 64, 48, fps=30)
    times = [i * SECOND // 10 for i in range(10)] + [SECOND + i * SECOND // 40 for i in range(80)]
    black = np.zeros((48, 64, 3), np.uint8)
    keys = [t for t in times for p in encoder.encode(black, t) if p.keyframe]
    assert keys == [0, SECOND, 2 * SECOND]  # 10 fps, then 40 fps: still one a second


def test_grey_and_odd_sized_frames_are_encoded_and_other_frames_refused():
    encoder = Encoder(EncodeOptions(), 65, 49)
    assert (encoder.width, encoder.height) == (64, 48)  # 4:2:0: the odd row and column go
    grey = np.full((49, 65), 200, np.uint8)
    packets = encoder.encode(grey, 0) + encoder.flush()
    [frame] = decode_all([p.data for p in packets], encoder.params.extradata)
    assert frame.shape == (48, 64, 3) and abs(int(frame.mean()) - 200) < 5
    with pytest.raises(EncoderError, match="float32"):
        Encoder(EncodeOptions(), 64, 48).encode(np.zeros((48, 64, 3), np.float32), 0)
    with pytest.raises(EncoderError, match="4 channels"):
        Encoder(EncodeOptions(), 64, 48).encode(np.zeros((48, 64, 4), np.uint8), 0)
    with pytest.raises(EncoderError, match="a 32x32 frame into an encoder of 64x48"):
        Encoder(EncodeOptions(), 64, 48).encode(np.zeros((32, 32, 3), np.uint8), 0)


def test_a_hardware_encoder_that_is_not_there_falls_back_to_libx264_saying_so():
    encoder = Encoder(EncodeOptions(encoder="h264_v4l2m2m"), 64, 48)
    assert encoder.hardware is None
    assert encoder.how.startswith("with libx264 (h264_v4l2m2m: ")
    assert encoder.encode(np.zeros((48, 64, 3), np.uint8), 0)[0].keyframe


def test_the_encoder_thread_fills_a_packet_wire_with_a_generation_per_size(names: RunNames):
    wire = PacketWire.create(names, "enc", EncodeOptions().ring_bytes(), 1)
    writer = PacketWriter(names, "enc")
    reader = PacketReader(names, "enc", 0)
    thread = EncoderThread(EncodeOptions(keyframe_interval=0.5), writer, fps=20)
    try:
        scene = TestScene(160, 120, fps=20)
        for i in range(20):
            thread.offer(scene.render(i), time.monotonic_ns())
            time.sleep(0.05)
        for _ in range(10):
            thread.offer(np.zeros((240, 320, 3), np.uint8), time.monotonic_ns())
            time.sleep(0.05)
        thread.close()  # flushes
        packets = []
        while (p := reader.read(timeout=0)) is not None:
            packets.append(p)
        generations = sorted({p.generation for p in packets})
        assert generations == [1, 2]
        assert [(reader.params(g).width, reader.params(g).height) for g in generations] == [
            (160, 120),
            (320, 240),
        ]
        first = next(p for p in packets if p.generation == 2)
        assert first.keyframe  # a new size starts at a keyframe
        assert thread.status.startswith("encoding h264 with libx264")
        assert thread.encoded + thread.dropped == 30
    finally:
        thread.close()
        reader.close()
        writer.close()
        wire.close()


# -- the encode key --------------------------------------------------------------------------


def test_encode_options_from_a_name_or_a_table():
    assert parse_encode("h264") == (EncodeOptions(), [])
    options, problems = parse_encode({"codec": "h264", "bit_rate": 4_000_000, "preset": "fast"})
    assert problems == [] and options == EncodeOptions(bit_rate=4_000_000, preset="fast")
    assert EncodeOptions().ring_bytes() == 2_031_616  # 2 Mbit/s for 5 + 2 + 1 seconds


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("h266", "encode.codec must be one of h264, not 'h266'"),
        (True, "encode must be a codec name"),
        ({"codec": "h264", "bitrate": 1}, "encode has no key 'bitrate'"),
        ({"bit_rate": 10}, "encode.bit_rate must be an integer from 100000 to 1e+08, not 10"),
        ({"keyframe_interval": 0}, "encode.keyframe_interval must be a number from 0.1 to 60"),
        ({"preset": "warp"}, "encode.preset must be one of ultrafast"),
        # the encoders listed after it are this FFmpeg's own (x86-64 and aarch64 differ)
        ({"encoder": "x264"}, "encode.encoder must be auto or an encoder of h264 ("),
    ],
)
def test_wrong_encode_keys_are_refused_at_load(value, problem):
    if isinstance(value, dict):  # an inline table
        toml = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    else:
        toml = json.dumps(value)
    text = f'[blocks.cam]\ntype = "camera"\nencode = {toml}\n'
    with pytest.raises(GraphError) as info:
        parse_graph(text, "g.toml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"g.toml: block 'cam': {problem}")


def test_encode_gives_a_block_a_packet_wire_only_where_there_are_frames_to_encode():
    g = parse_graph(
        '[blocks.cam]\ntype = "camera"\nencode = "h264"\n'
        '[blocks.red]\ntype = "color_filter"\ninput = "cam"\n'
        'encode = { codec = "h264", bit_rate = 1000000 }\n',
        "g.toml",
    )
    assert g.blocks["cam"].encode == EncodeOptions()
    assert g.blocks["cam"].packet_bytes == EncodeOptions().ring_bytes()
    assert g.blocks["red"].packet_bytes == EncodeOptions(bit_rate=1_000_000).ring_bytes()
    with pytest.raises(GraphError) as info:
        parse_graph(
            '[blocks.cam]\ntype = "camera"\nsource = "rtsp://cam/x"\nencode = "h264"\n'
            '[blocks.rec]\ntype = "recorder"\ninput = "cam"\nencode = "h264"\n',
            "g.toml",
        )
    assert info.value.problems == [
        "g.toml: block 'cam': publishes its source's own encoded packets already (an rtsp://"
        " camera, a file, a device asked for MJPEG or H264): remove encode",
        "g.toml: block 'rec': type 'recorder' has no output to encode: remove encode",
    ]


# -- in a running graph ----------------------------------------------------------------------


def test_a_graph_encodes_the_synthetic_camera_and_a_filter_once(tmp_path: Path):
    cam, red = tmp_path / "cam.pkt", tmp_path / "red.pkt"
    text = (
        '[blocks.camera]\ntype = "camera"\nsize = [320, 240]\nfps = 15\n'
        'encode = { codec = "h264", keyframe_interval = 1.0 }\n'
        '[blocks.red]\ntype = "color_filter"\ninput = "camera"\n'
        'encode = { codec = "h264", keyframe_interval = 0.5, bit_rate = 500000 }\n'
        f'[blocks.cam_dump]\ntype = "{DUMP}"\ninput = "camera"\npath = "{cam}"\n'
        f'[blocks.red_dump]\ntype = "{DUMP}"\ninput = "red"\npath = "{red}"\n'
    )
    with RunningDaemon(text) as d:
        d.start().wait_all_running()
        d.until(lambda: len(read_dump(cam)) >= 50 and len(read_dump(red)) >= 30, 90, "packets")
        camera = d.block("camera")
    assert "encoding h264 with libx264 (no hardware encoder works here)" in camera["detail"]
    assert "a keyframe every 1 s" in camera["detail"]
    for path, interval in ((cam, 1.0), (red, 0.5)):
        packets = read_dump(path)
        params = json.loads(Path(f"{path}.g1.json").read_text())
        assert (params["codec"], params["width"], params["height"]) == ("h264", 320, 240)
        assert packets[0]["keyframe"]
        keys = [p["pts"] for p in packets if p["keyframe"]]
        gaps = [(b - a) / 90000 for a, b in itertools.pairwise(keys)]
        assert gaps and all(interval - 0.01 <= g <= interval + 0.2 for g in gaps), gaps
        frames = decode_all([p["data"] for p in packets], bytes.fromhex(params["extradata"]))
        assert len(frames) == len(packets)
    reds = decode_all([p["data"] for p in read_dump(red)], bytes.fromhex(params["extradata"]))
    b, g, r = (reds[-1][..., i].astype(int) for i in range(3))
    assert np.count_nonzero((r > 150) & (g < 90) & (b < 90)) > 500  # the red square, kept
