"""The camera block on real sources: testsrc, a video file, an MJPEG HTTP server, RTSP.

Servers here are real (a threaded http.server sending multipart JPEG; GStreamer's RTSP
server when Debian's packages are installed). Only the block's context is a stand-in,
one that records what the block reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rtsp_server
from blockhost import params
from camerahost import CameraContext as RecordingContext
from camerahost import camera, next_frame, rig_fixture  # noqa: F401 - the rig fixture
from harness.daemon import free_port

from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.workers.blocks.camera import Camera
from pipelined.workers.blocks.sources import parse_source, redact
from pipelined.workers.blocks.testsrc import TestScene
from pipelined.workers.video.source import OpenSettings, device_options, device_path


def red_pixels(frame: np.ndarray) -> np.ndarray:
    b, g, r = (frame[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 90) & (b < 90)


# -- a real MJPEG-over-HTTP camera -----------------------------------------------------------


class MjpegServer:
    """Serves testsrc frames as multipart/x-mixed-replace JPEG, like an IP camera's /video."""

    def __init__(self, port: int = 0, fps: float = 25.0, size: tuple[int, int] = (320, 240)):
        self.scene = TestScene(*size, fps=fps)
        self.fps = fps
        self.stopped = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/video":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                with contextlib.suppress(OSError):
                    server.stream(self.wfile)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stream(self, out: Any) -> None:
        n = 0
        while not self.stopped.is_set():
            ok, jpeg = cv2.imencode(".jpg", self.scene.render(n))
            assert ok
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
            out.write(part + jpeg.tobytes() + b"\r\n")
            out.flush()
            n += 1
            time.sleep(1 / self.fps)

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    server = MjpegServer()
    try:
        yield server
    finally:
        server.close()


# -- load time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("ftp://cam/stream", "unknown scheme 'ftp'"),
        ("rtsp://", "names no host"),
        ("rtsp:/cam/stream", "expected rtsp://host"),
        ("rtsp://cam:99999/stream", "malformed URL"),
        ("http://cam/a b", "spaces"),
        ("http://admin:hunter2@cam:port/x", "malformed URL"),
        (-1, "0 or more"),
        ("", "empty"),
    ],
)
def test_sources_that_can_never_work_are_refused_at_load_naming_the_source(
    source: Any, problem: str
) -> None:
    problems = Camera.validate(params(Camera, source=source))
    assert len(problems) == 1
    assert problem in problems[0]
    assert "hunter2" not in problems[0]
    if isinstance(source, str) and source.startswith("http://admin"):
        assert "admin:***@cam" in problems[0]


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("testsrc", "testsrc"),
        (0, "device"),
        ("2", "device"),
        ("/dev/video0", "device"),
        ("/dev/v4l/by-id/usb-Logitech_HD_Webcam_C270-video-index0", "device"),
        ("clip.mp4", "file"),
        ("/srv/videos/parking lot.mkv", "file"),
        ("rtsp://user:pass@cam.local:554/Streaming/Channels/101", "url"),
        ("RTSPS://cam.local/stream", "url"),
        ("http://127.0.0.1:8080/video", "url"),
    ],
)
def test_sources_that_may_work_are_accepted(source: Any, kind: str) -> None:
    assert Camera.validate(params(Camera, source=source)) == []
    assert parse_source(source).kind == kind


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"source": "clip.mp4", "fourcc": "MJPG"}, "fourcc applies to V4L2 devices"),
        ({"source": 0, "fourcc": "XVID"}, "must be empty (the device's own) or one of MJPG"),
        ({"hwaccel": "h264_v4l2m2n"}, "a hardware decoder (h264_"),
        ({"decode_fps": -1}, "must be between 0 and 240"),
    ],
)
def test_settings_that_can_never_work_are_refused_at_load(overrides: Any, problem: str) -> None:
    text = '[blocks.cam]\ntype = "camera"\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in overrides.items()
    )
    with pytest.raises(GraphError) as info:
        parse_graph(text, "g.toml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("g.toml: block 'cam': ")
    assert problem in info.value.problems[0]


@pytest.mark.parametrize(
    ("source", "fourcc", "has_packets"),
    [
        ("testsrc", "", False),
        (0, "", False),
        ("/dev/video0", "YUYV", False),
        ("/dev/video0", "MJPG", True),
        (2, "H264", True),
        ("clip.mp4", "", True),
        ("rtsp://cam/stream", "", True),
        ("http://cam/video", "", True),
    ],
)
def test_encoded_sources_get_a_packet_wire_sized_for_preroll(source, fourcc, has_packets) -> None:
    size = Camera.packet_bytes(params(Camera, source=source, fourcc=fourcc))
    assert (size is not None) == has_packets
    if has_packets:  # 8 Mbit/s for 5 s of pre-roll and a group of pictures of up to 4 s
        assert size == 9_043_968
        longer = Camera.packet_bytes(params(Camera, source=source, fourcc=fourcc, preroll=20))
        assert longer == 24_051_712


def test_passwords_are_redacted() -> None:
    assert redact("rtsp://admin:s3cr:et@cam/x") == "rtsp://admin:***@cam/x"
    assert redact("rtsp://admin@cam/x") == "rtsp://admin@cam/x"
    assert redact("http://cam:8080/x") == "http://cam:8080/x"
    assert parse_source("rtsp://u:pw@cam/x").show() == "rtsp://u:***@cam/x"


def test_output_size_comes_from_size() -> None:
    assert Camera.max_output_bytes(params(Camera, size=[1280, 720]), []) == 1280 * 720 * 3


# -- testsrc ----------------------------------------------------------------------------------


def test_testsrc_honours_size_and_fps() -> None:
    ctx = RecordingContext()
    cam = camera(ctx, size=[320, 240], fps=20)
    shape, dtype = cam.output_like([])
    assert shape == (240, 320, 3) and dtype == np.uint8
    out = np.zeros(shape, dtype)
    frames, start = 0, time.monotonic()
    while time.monotonic() - start < 2.0:
        frames += cam.process_into([], out)
    # Paced: never more than 40 frames in 2 s at 20 fps (a busy box may give fewer).
    assert 1 <= frames <= 46, frames
    assert cam.delivered_size == (320, 240) and cam.delivered_fps == 20
    assert ctx.details[-1] == "320x240 at 20 fps (asked 320x240 at 20)"  # shown in status


def test_testsrc_moves_and_shows_red_green_and_blue_shapes() -> None:
    cam = camera(RecordingContext(sleep_cap=0), size=[640, 480])
    first = next_frame(cam).copy()
    for _ in range(14):
        next_frame(cam)
    later = next_frame(cam)
    assert np.count_nonzero(first != later) > 1000  # the shapes moved

    for frame in (first, later):
        ys, xs = np.nonzero(red_pixels(frame))
        side = 480 // 6
        assert xs.max() - xs.min() + 1 == side and ys.max() - ys.min() + 1 == side
        assert len(xs) == side * side  # one solid square, nothing else is red
    b, g, r = (later[..., i].astype(int) for i in range(3))
    assert np.count_nonzero((g > 150) & (r < 80) & (b < 80)) > 1000  # green circle
    assert np.count_nonzero((b > 200) & (r < 80) & (g < 100)) > 1000  # blue triangle
    assert np.count_nonzero(later[:40].max(axis=2) < 60) > 100  # frame counter text


# -- video files ------------------------------------------------------------------------------


def make_clip(path: Path, frames: int = 10, size: tuple[int, int] = (160, 120)) -> None:
    """A clip whose frame i is flat grey 20*i + 10, so a frame tells its own index."""
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 10, size
    )
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i + 10, np.uint8))
    writer.release()


def frame_index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 10) / 20)


def test_video_file_is_resized_and_loops(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    make_clip(clip)
    cam = camera(RecordingContext(), source=str(clip), size=[320, 240], fps=200, loop=True)
    indices = []
    for _ in range(25):
        frame = next_frame(cam)
        assert frame.shape == (240, 320, 3)
        indices.append(frame_index(frame))
    assert indices == [*range(10), *range(10), *range(5)]
    assert cam.delivered_size == (160, 120)
    assert cam.delivered_fps == pytest.approx(10)
    cam.close()


def test_video_file_without_loop_finishes_and_says_so(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    make_clip(clip, frames=4)
    context = RecordingContext(sleep_cap=0.001)
    cam = camera(context, source=str(clip), size=[160, 120], fps=200, loop=False)
    assert [frame_index(next_frame(cam).copy()) for _ in range(4)] == [0, 1, 2, 3]
    out = np.empty((120, 160, 3), np.uint8)
    assert not any(cam.process_into([], out) for _ in range(3))
    assert "finished" in str(context.reasons[-1]) and "clip.avi" in str(context.reasons[-1])


def test_a_file_that_is_not_there_yet_is_waited_for(tmp_path: Path) -> None:
    clip = tmp_path / "later.avi"
    context = RecordingContext(sleep_cap=0.001)
    cam = camera(context, source=str(clip), size=[160, 120], fps=200)
    out = np.empty((120, 160, 3), np.uint8)
    assert not cam.process_into([], out)
    assert context.reasons == [f"waiting for source {clip}: no such file"]
    make_clip(clip)
    assert frame_index(next_frame(cam)) == 0
    assert context.reasons[-1] is None


@pytest.mark.parametrize("fourcc", ["", "MJPG", "H264"])
def test_a_device_that_is_not_plugged_in_is_waited_for(fourcc: str) -> None:
    context = RecordingContext(sleep_cap=0.001)
    path = "/dev/v4l/by-id/usb-No_Such_Camera-video-index0"
    cam = camera(context, source=path, fourcc=fourcc)
    out = np.empty((480, 640, 3), np.uint8)
    assert not cam.process_into([], out)
    assert context.reasons == [f"waiting for source {path}: no such device (not plugged in yet?)"]


def test_a_device_is_asked_for_its_format_size_and_rate() -> None:
    """What FFmpeg's V4L2 input is given (no camera here: its answer cannot be seen)."""
    settings = OpenSettings(3.0, 5.0, size=(1280, 720), fps=15, fourcc="MJPG")
    assert device_options(settings) == {
        "video_size": "1280x720",
        "framerate": "15",
        "input_format": "mjpeg",
    }
    assert "input_format" not in device_options(OpenSettings(3.0, 5.0))
    assert device_path(parse_source(3)) == "/dev/video3"


# -- network streams --------------------------------------------------------------------------


def test_http_mjpeg_stream_is_read(mjpeg_server: MjpegServer) -> None:
    url = f"http://127.0.0.1:{mjpeg_server.port}/video"
    cam = camera(RecordingContext(), source=url, size=[320, 240], fps=30)
    try:
        frames = [next_frame(cam).copy() for _ in range(5)]
        assert all(np.count_nonzero(red_pixels(f)) > 1000 for f in frames)  # JPEG, roughly
        assert cam.delivered_size == (320, 240)
        deadline = time.monotonic() + 30  # measured over 2 s, after 2 s of settling
        while cam.delivered_fps is None and time.monotonic() < deadline:
            next_frame(cam)
        assert cam.delivered_fps is not None and 8 < cam.delivered_fps < 40  # server: 25
    finally:
        cam.close()


def test_http_stream_that_is_down_is_waited_for_then_read(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    url = f"http://viewer:s3cret@127.0.0.1:{port}/video"
    context = RecordingContext(sleep_cap=0.001)
    cam = camera(context, source=url, size=[320, 240])
    out = np.empty((240, 320, 3), np.uint8)
    for _ in range(5):
        assert not cam.process_into([], out)
    shown = f"http://viewer:***@127.0.0.1:{port}/video"
    assert context.reasons == [f"waiting for source {shown}: connection refused"]
    backoff = [s for s in context.sleeps if s >= 0.5]
    assert backoff == [0.5, 1.0, 2.0, 4.0, 8.0]

    server = MjpegServer(port=port)
    try:
        frame = next_frame(cam)
        assert np.count_nonzero(red_pixels(frame)) > 1000
        assert context.reasons[-1] is None
    finally:
        cam.close()
        server.close()
    assert "s3cret" not in caplog.text and "s3cret" not in repr(context.reasons)


def test_a_stream_that_goes_away_is_waited_for_and_read_again() -> None:
    server = MjpegServer()
    port = server.port
    context = RecordingContext(sleep_cap=0.001)
    cam = camera(context, source=f"http://127.0.0.1:{port}/video", size=[320, 240])
    out = np.empty((240, 320, 3), np.uint8)
    try:
        next_frame(cam)
        server.close()  # the camera's server goes down mid-stream
        for _ in range(50):
            if not cam.process_into([], out) and len(context.reasons) >= 2:
                break
        shown = f"waiting for source http://127.0.0.1:{port}/video"
        assert context.reasons[0].startswith(f"{shown}: the source stopped sending frames")
        assert context.reasons[1] == f"{shown}: connection refused"
        server = MjpegServer(port=port)  # and comes back
        assert np.count_nonzero(red_pixels(next_frame(cam))) > 1000
        assert context.reasons[-1] is None
    finally:
        cam.close()
        server.close()


def test_an_mjpeg_stream_publishes_its_pictures_and_decodes_only_the_due_ones(rig, mjpeg_server):
    r = rig(f"http://127.0.0.1:{mjpeg_server.port}/video", decode_fps=5)
    r.run_until(lambda: len(r.packets) >= 10, "10 packets")
    codec = r.reader.params(r.packets[0].generation)
    assert (codec.codec, codec.width, codec.height) == ("mjpeg", 320, 240)
    assert all(p.keyframe for p in r.packets)
    assert r.packets[0].data[:2] == b"\xff\xd8"  # each packet a JPEG, as the server sent it
    assert r.cam.decoded == 0
    r.context.readers = True
    r.run_until(lambda: r.frames, "a frame")
    start, frames, decoded, packets = time.monotonic(), len(r.frames), r.cam.decoded, len(r.packets)
    r.run_for(2.0)
    seconds = time.monotonic() - start
    converted = len(r.frames) - frames
    assert 1 <= converted <= 5 * seconds + 1
    assert r.cam.decoded - decoded <= converted + 1  # the others were never decoded
    assert len(r.packets) - packets > r.cam.decoded - decoded  # yet every one was published
    assert "decoding keyframes only" in r.context.details[-1]


def test_a_file_publishes_its_packets_and_carries_its_timestamps_across_loops(rig, tmp_path):
    clip = tmp_path / "clip.avi"
    make_clip(clip, frames=10)
    r = rig(str(clip), fps=100)
    r.run_until(lambda: len(r.packets) >= 25, "25 packets")
    assert {p.generation for p in r.packets} == {1}  # a loop is no new stream
    pts = [p.pts for p in r.packets]
    assert pts == list(range(pts[0], pts[0] + len(pts)))  # 1/10 s each, on and on
    assert r.reader.params(1).time_base == (1, 10)


def test_stop_is_answered_while_waiting_for_a_source() -> None:
    context = RecordingContext()
    context.stopping = True
    cam = camera(context, source=f"rtsp://127.0.0.1:{free_port()}/cam")
    start = time.monotonic()
    assert not cam.process_into([], np.empty((480, 640, 3), np.uint8))
    assert time.monotonic() - start < 1.0


# -- RTSP: a real server from Debian's GStreamer packages, when they are installed -----------


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_mjpeg_stream_is_read(transport: str) -> None:
    if why := rtsp_server.unavailable():
        pytest.skip(why)
    with rtsp_server.RtspServer.mjpeg(size=(320, 240)) as server:
        context = RecordingContext()
        cam = camera(
            context,
            source=server.url_with("user", "pw"),
            size=[640, 480],
            rtsp_transport=transport,
        )
        try:
            frame = next_frame(cam)
            assert frame.shape == (480, 640, 3)
            assert frame.std() > 20  # colour bars, not a blank frame
            assert cam.delivered_size == (320, 240)
            assert "mjpeg" in str(context.details[-1]) and "pw" not in str(context.details)
        finally:
            cam.close()
