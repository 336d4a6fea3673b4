"""Reading back what the recorder wrote, the way a user would: with cv2.VideoCapture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def play(path: str | Path) -> tuple[int, tuple[int, ...], list[np.ndarray]]:
    """Frame count in the header, the first frame's shape, and every frame that decodes."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return declared, frames[0].shape if frames else (), frames


# -- encoded video: what a recording holds, checked with ffprobe and PyAV ---------------------


def annexb_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B packet (each after a 3- or 4-byte start code)."""
    import re

    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    units = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        units.append(data[start:end].rstrip(b"\x00") if i + 1 < len(starts) else data[start:end])
    return units


def mp4_samples(path: str | Path) -> list[tuple[list[bytes], bool, float]]:
    """Each sample of an MP4's video stream: its NAL units (4-byte lengths), keyframe, pts (s).

    For MJPEG the one "unit" is the whole JPEG.
    """
    import av

    samples = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if not packet.size:
                continue
            data = bytes(packet)
            units = [data]
            if stream.codec_context.name in ("h264", "hevc"):
                units, at = [], 0
                while at + 4 <= len(data):
                    size = int.from_bytes(data[at : at + 4], "big")
                    units.append(data[at + 4 : at + 4 + size])
                    at += 4 + size
            samples.append((units, packet.is_keyframe, float(packet.pts * stream.time_base)))
    return samples


def decoded_frames(path: str | Path) -> list[np.ndarray]:
    """Every picture PyAV decodes from the file, as BGR."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def ffprobe(path: str | Path) -> dict:
    """ffprobe's view of the first video stream, frames counted by decoding them all;
    ``errors`` is whatever ffprobe complained about (nothing, for a sound file)."""
    import json
    import subprocess

    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames:format=duration", "-of", "json",
         str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    info = json.loads(done.stdout or "{}")
    stream = (info.get("streams") or [{}])[0]
    return {
        "codec": stream.get("codec_name"),
        "width": stream.get("width"),
        "height": stream.get("height"),
        "frames": int(stream.get("nb_read_frames", 0)),
        "duration": float(info.get("format", {}).get("duration", 0)),
        "errors": done.stderr.strip(),
    }


def encode_clip(
    count: int,
    size: tuple[int, int] = (320, 240),
    gop: int = 10,
    encoder: str = "libx264",
    fps: int = 25,
    in_band: bool = False,
) -> tuple[bytes, list[tuple[bytes, int, int, bool]]]:
    """testsrc encoded as a camera sends it: Annex B extradata, and (data, pts, dts, keyframe)
    per packet in a 1/90000 time base. ``in_band``: no extradata, SPS/PPS in each keyframe
    (as some cameras send them)."""
    from fractions import Fraction

    import av

    from pipelined.workers.blocks.testsrc import TestScene

    context = av.CodecContext.create(encoder, "w")
    context.width, context.height, context.pix_fmt = *size, "yuv420p"
    context.time_base = Fraction(1, 90000)
    context.framerate = Fraction(fps)
    if not in_band:
        context.flags |= av.codec.context.Flags.global_header
    keys = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    if encoder == "libx265":
        context.options = {"x265-params": keys + ":log-level=error"}
    else:
        context.options = {"preset": "ultrafast", "x264-params": keys}
    context.open()
    scene = TestScene(*size, fps=fps)
    packets = []
    for n in range(count + 1):
        frame = None
        if n < count:
            frame = av.VideoFrame.from_ndarray(scene.render(n), format="bgr24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = n * 90000 // fps, context.time_base
        for p in context.encode(frame):
            packets.append((bytes(p), p.pts, p.dts, p.is_keyframe))
    return b"" if in_band else bytes(context.extradata), packets


def scene_jpegs(count: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    """testsrc's frames as JPEGs: what an MJPEG camera sends."""
    from pipelined.workers.blocks.testsrc import TestScene

    scene = TestScene(*size)
    return [cv2.imencode(".jpg", scene.render(n))[1].tobytes() for n in range(count)]


def encode_noise(count: int, size: tuple[int, int] = (320, 240), gop: int = 5, fps: int = 25):
    """Random pictures encoded like ``encode_clip``: packets that do not shrink (~46 KB at
    320x240), to fill a disk quickly."""
    from fractions import Fraction

    import av

    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = *size, "yuv420p"
    context.time_base, context.framerate = Fraction(1, 90000), Fraction(fps)
    context.flags |= av.codec.context.Flags.global_header
    context.options = {"preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}"}
    context.open()
    rng = np.random.default_rng(1)
    packets = []
    for n in range(count + 1):
        frame = None
        if n < count:
            picture = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = n * 90000 // fps, context.time_base
        for p in context.encode(frame):
            packets.append((bytes(p), p.pts, p.dts, p.is_keyframe))
    return bytes(context.extradata), packets
