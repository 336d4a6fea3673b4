"""MP4 muxing of packets as cameras send them: every frame decodes, nothing is re-encoded,
and a killed writer leaves a file that plays up to its last fragment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest
from video import annexb_units, decoded_frames, encode_clip, ffprobe, mp4_samples

from pipelined.workers.ipc.packets import CodecParams
from pipelined.workers.video.mux import Mp4Writer, MuxError


def write(path: Path, params: CodecParams, packets: list) -> None:
    writer = Mp4Writer(path, params, packets[0][0])
    first_dts = packets[0][2]
    for data, pts, dts, key in packets:
        writer.write(data, pts - first_dts, dts - first_dts, 0, key)
    writer.close()


def fragments(path: Path) -> int:
    return path.read_bytes().count(b"moof")


@pytest.mark.parametrize("encoder, codec", [("libx264", "h264"), ("libx265", "hevc")])
def test_annex_b_packets_make_an_mp4_whose_every_frame_decodes(tmp_path, encoder, codec):
    extradata, packets = encode_clip(50, gop=10, encoder=encoder)
    assert extradata.startswith(b"\x00\x00") and packets[0][0].startswith(b"\x00\x00")
    path = tmp_path / "a.mp4"
    write(path, CodecParams(codec, 320, 240, (1, 90000), extradata), packets)

    probe = ffprobe(path)
    assert probe["errors"] == ""
    assert (probe["codec"], probe["width"], probe["height"], probe["frames"]) == (
        codec, 320, 240, 50,
    )  # fmt: skip
    assert abs(probe["duration"] - 2.0) < 0.1  # 50 frames at 25 fps
    assert len(decoded_frames(path)) == 50
    samples = mp4_samples(path)
    assert [units for units, _, _ in samples] == [annexb_units(p[0]) for p in packets]
    assert [key for _, key, _ in samples] == [p[3] for p in packets] and samples[0][1]
    assert fragments(path) >= 5  # a fragment per keyframe


def test_in_band_headers_and_no_extradata_are_enough(tmp_path):
    extradata, packets = encode_clip(30, gop=10, in_band=True)
    path = tmp_path / "a.mp4"
    write(path, CodecParams("h264", 320, 240, (1, 90000), extradata), packets)
    probe = ffprobe(path)
    assert probe["errors"] == "" and probe["frames"] == 30


def test_an_mp4_sources_avcc_packets_are_muxed_the_same_way(tmp_path):
    extradata, packets = encode_clip(40, gop=10)
    first = tmp_path / "first.mp4"
    write(first, CodecParams("h264", 320, 240, (1, 90000), extradata), packets)
    with av.open(str(first)) as container:  # what a file source publishes: avcC, lengths
        stream = container.streams.video[0]
        avcc = bytes(stream.codec_context.extradata)
        tb = stream.time_base
        again = [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in container.demux(stream) if p.size]
    assert avcc[0] == 1
    second = tmp_path / "second.mp4"
    write(second, CodecParams("h264", 320, 240, (tb.numerator, tb.denominator), avcc), again)
    assert ffprobe(second)["errors"] == "" and ffprobe(second)["frames"] == 40
    assert mp4_samples(second) == mp4_samples(first)


def test_mjpeg_packets_go_into_mp4_too(tmp_path):
    from video import scene_jpegs

    jpegs = scene_jpegs(20)
    path = tmp_path / "m.mp4"
    writer = Mp4Writer(path, CodecParams("mjpeg", 320, 240, (1, 1000)), jpegs[0])
    for i, jpeg in enumerate(jpegs):
        writer.write(jpeg, i * 40, i * 40, 40, True)
    writer.close()
    probe = ffprobe(path)
    assert probe["errors"] == "" and (probe["codec"], probe["frames"]) == ("mjpeg", 20)
    assert [units[0] for units, _, _ in mp4_samples(path)] == jpegs  # byte for byte


def test_what_mp4_cannot_hold_is_refused_with_a_reason(tmp_path):
    with pytest.raises(MuxError, match="cannot write 'counter' video to MP4"):
        Mp4Writer(tmp_path / "x.mp4", CodecParams("counter", 1, 1, (1, 1000)), b"1")
    with pytest.raises(MuxError, match="headers"):
        Mp4Writer(tmp_path / "y.mp4", CodecParams("h264", 320, 240, (1, 90000)), b"junk")
    assert list(tmp_path.iterdir()) == []  # nothing half-made is left
    (tmp_path / "taken.mp4").write_bytes(b"someone's")
    extradata, packets = encode_clip(1)
    with pytest.raises(FileExistsError):  # never overwrites a file
        Mp4Writer(tmp_path / "taken.mp4", CodecParams("h264", 320, 240, (1, 90000), extradata),
                  packets[0][0])  # fmt: skip
    assert (tmp_path / "taken.mp4").read_bytes() == b"someone's"


KILLED_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from video import encode_clip
    from pipelined.workers.ipc.packets import CodecParams
    from pipelined.workers.video.mux import Mp4Writer

    extradata, packets = encode_clip(45, gop=10)
    writer = Mp4Writer(Path(sys.argv[1]), CodecParams("h264", 320, 240, (1, 90000), extradata),
                       packets[0][0])
    for i, (data, pts, dts, key) in enumerate(packets):
        writer.write(data, pts, dts, 0, key)
    print(json.dumps({"written": len(packets)}), flush=True)
    time.sleep(60)  # killed here, the last five frames' fragment still open
    """
)


def test_a_writer_killed_mid_file_leaves_every_fragment_before_the_last(tmp_path):
    script, path = tmp_path / "writer.py", tmp_path / "killed.mp4"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert json.loads(proc.stdout.readline()) == {"written": 45}
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    probe = ffprobe(path)
    assert probe["errors"] == ""
    assert probe["frames"] == 40  # four whole fragments of 10; the fifth was being written
    assert len(decoded_frames(path)) == 40
