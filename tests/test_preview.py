"""The preview block: MJPEG and snapshots from real workers, shared encodes, stalled viewers."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import cv2
import numpy as np
import pytest
from harness.daemon import TOKEN, RunningDaemon, free_port, wait_for
from test_web_support import (
    BEARER,
    assert_opencv_reads_the_wire,
    camera_keeps_sending,
    get,
    read_mjpeg,
)

from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.workers.http.mjpeg import (
    Pacer,
    View,
    encode_jpeg,
    is_loopback,
    parse_listen,
)

GRAPH = """
[blocks.camera]
type = "camera"
source = "testsrc"
size = [640, 480]
fps = 30

[blocks.red]
type = "color_filter"
input = "camera"

[blocks.preview]
type = "preview"
inputs = ["camera", "red"]
listen = "127.0.0.1:{port}"
client_timeout = 2.0
"""


@pytest.fixture(scope="module")
def preview():
    port = free_port()
    d = RunningDaemon(GRAPH.format(port=port)).start()
    try:
        d.wait_all_running()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(url + "/stats")[0] == 200, 30, "the preview to serve")
        yield d, url
    finally:
        d.close()


def stats(url: str) -> dict:
    return json.loads(get(url + "/stats")[2])


def decode(jpeg: bytes) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None, "not a JPEG"
    return picture


# -- with real workers -------------------------------------------------------------------


def test_mjpeg_read_by_opencv_matches_the_wire(preview):
    d, url = preview
    assert_opencv_reads_the_wire(d, f"{url}/stream/camera.mjpg?quality=95", 10)


def test_what_viewers_get_is_what_the_preview_delivers_in_status(preview):
    """A sink's frames out are what it delivered: for a preview, the frames it served."""
    d, url = preview
    before = d.block("preview")["frames_out"]
    served = stats(url)["served"]
    assert len(read_mjpeg(url + "/stream/camera.mjpg?fps=10", 12)) == 12
    assert stats(url)["served"] >= served + 12
    shown = wait_for(
        lambda: (b := d.block("preview"))["frames_out"] >= before + 12 and b, 30, "served"
    )
    assert shown["fps_in"] > 0 and shown["skipped"] > 0  # nobody due a frame: let go


def test_the_page_shows_every_input_in_the_daemon_pages_look(preview):
    _, url = preview
    status, headers, body = get(url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert '<link rel="stylesheet" href="look.css">' in page
    assert page.count("<figure>") == 2 and 'src="stream/red.mjpg"' in page
    assert '<main class="streams">' in page and "2 live streams" in page
    status, headers, css = get(url + "/look.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert b".streams" in css and b"--bg: #101418" in css


def test_snapshot_options_and_errors(preview):
    _, url = preview
    status, headers, body = get(url + "/snapshot/camera.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert decode(body).shape == (480, 640, 3)
    small = decode(get(url + "/snapshot/red.jpg?width=320")[2])
    assert small.shape == (240, 320, 3)
    assert decode(get(url + "/snapshot/1.jpg")[2]).shape == (480, 640, 3)  # by position
    low = len(get(url + "/snapshot/camera.jpg?quality=10")[2])
    high = len(get(url + "/snapshot/camera.jpg?quality=95")[2])
    assert low < high / 2
    assert get(url + "/snapshot/nothing.jpg")[0] == 404
    assert get(url + "/stream/camera.mjpg?fps=0")[0] == 400
    assert get(url + "/stream/camera.mjpg?quality=abc")[0] == 400
    assert get(url + "/nowhere")[0] == 404
    assert get(url + "/stats", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert stats(url)["viewers"] == 0 and stats(url)["encodings"] == []


def test_twenty_viewers_share_one_encode_and_cost_the_camera_nothing(preview):
    d, url = preview
    counts: list[int] = []

    async def viewer(session: aiohttp.ClientSession, seconds: float) -> int:
        n = 0
        async with session.get(url + "/stream/camera.mjpg") as resp:
            assert resp.status == 200
            end = time.monotonic() + seconds
            async for _ in resp.content.iter_any():
                n += 1  # chunks, not frames; frames are counted by the server below
                if time.monotonic() > end:
                    break
        return n

    async def scenario() -> dict:
        async with aiohttp.ClientSession(headers=BEARER) as session:
            tasks = [asyncio.create_task(viewer(session, 5.0)) for _ in range(20)]
            await asyncio.sleep(2.0)
            during = await asyncio.to_thread(stats, url)
            await asyncio.to_thread(camera_keeps_sending, d)
            counts.extend(await asyncio.gather(*tasks))
        return during

    during = asyncio.run(scenario())
    assert during["viewers"] == 20
    assert len(during["encodings"]) == 1, during  # one encode for all twenty
    assert during["encodings"][0]["viewers"] == 20
    assert all(n > 10 for n in counts), counts
    # What the viewers cost the camera in frames per second is bench/preview.py's.
    # Each viewer got frames: read one stream to the end of a few frames, to be sure.
    assert len(read_mjpeg(url + "/stream/camera.mjpg?fps=30", 5)) == 5
    wait_for(lambda: stats(url)["viewers"] == 0, 10, "the viewers to be gone")


def test_a_stalled_viewer_is_dropped_and_slows_no_one(preview):
    d, url = preview
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    stalled.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    stalled.sendall(
        b"GET /stream/camera.mjpg?width=640&quality=95 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    )
    try:
        wait_for(lambda: stats(url)["viewers"] == 1, 10, "the stalled viewer to be served")
        frames = read_mjpeg(url + "/stream/camera.mjpg?fps=10", 20)  # meanwhile: 2 s
        assert len(frames) == 20
        # client_timeout is 2 s: the stalled viewer is dropped, its encode stopped.
        wait_for(lambda: stats(url)["viewers"] == 0, 10, "the stalled viewer to be dropped")
        assert stats(url)["encodings"] == []
        camera_keeps_sending(d)
        assert d.block("preview")["state"] == "RUNNING"
    finally:
        stalled.close()


def test_the_preview_wants_the_daemons_token_and_keeps_it_out_of_links(preview):
    """Set no token of its own, the preview takes the daemon's; a first visit trades it
    for a session cookie, and the page's links carry none."""
    _, url = preview
    port = int(url.rsplit(":", 1)[1])
    for path in ("/", "/stats", "/snapshot/camera.jpg", "/stream/camera.mjpg"):
        assert get(url + path, token=None)[0] == 401, path
        assert get(url + path + "?token=wrong", token=None)[0] == 401, path
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # closed after the 401
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 401")
    status, headers, _ = get(f"{url}/?token={TOKEN}", token=None)
    assert status == 303 and headers["Location"] == "/" and TOKEN not in headers["Set-Cookie"]
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    status, _, page = get(url + "/", cookie, token=None)
    assert status == 200 and b'src="stream/camera.mjpg"' in page and b"token" not in page
    assert get(url + "/snapshot/camera.jpg", cookie, token=None)[0] == 200


def test_token_beyond_loopback(tmp_path):
    port = free_port()
    text = GRAPH.format(port=port).replace("127.0.0.1:", "0.0.0.0:")
    with pytest.raises(GraphError, match="beyond loopback: set a token"):
        parse_graph(text, "inline")
    d = RunningDaemon(text + 'token = "pr3view-s3cret"\n').start()
    try:
        d.wait_all_running()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(url + "/stats")[0] == 401, 30, "the preview to refuse")
        for path in ("/", "/stats", "/snapshot/camera.jpg", "/stream/camera.mjpg", "/x"):
            assert get(url + path)[0] == 401, path  # its own token, not the daemon's
            assert get(url + path + "?token=wrong", token=None)[0] == 401, path
        assert get(url + "/snapshot/camera.jpg?token=pr3view-s3cret", token=None)[0] == 200
        assert get(url + "/stats", {"Authorization": "Bearer pr3view-s3cret"})[0] == 200
        assert "Secure" in get(url + "/?token=pr3view-s3cret", token=None)[1]["Set-Cookie"]
        # The token travels on stdin, never on the worker's command line.
        pid = d.block("preview")["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"pr3view-s3cret" not in f.read()
    finally:
        d.close()


# -- the pieces ---------------------------------------------------------------------------


def test_parse_listen_and_loopback():
    assert parse_listen("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("8081", ":8081", "host:", "::1:80", "a:70000", "a:-1"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("127.9.9.9") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.com") and not is_loopback("::")


def test_view_from_query_keeps_within_the_block_limits():
    limits = View(fps=15.0, quality=75, width=640)
    assert View.from_query({}, limits) == limits
    assert View.from_query({"fps": "100", "width": "2000"}, limits) == View(15.0, 75, 640)
    assert View.from_query({"fps": "2", "quality": "30", "width": "320"}, limits) == View(
        2.0, 30, 320
    )
    assert View.from_query({"width": "0"}, limits).width == 640
    assert View.from_query({"width": "0"}, View(15.0, 75, 0)).width == 0
    for bad in ({"fps": "0"}, {"fps": "nan"}, {"quality": "101"}, {"width": "-1"}, {"fps": "x"}):
        with pytest.raises(Exception, match="Bad Request"):
            View.from_query(bad, limits)


def test_encode_jpeg_takes_any_wire_frame():
    grey = np.full((40, 60), 200, np.uint8)
    assert decode(encode_jpeg(grey, 90)).shape == (40, 60, 3)
    floats = np.full((40, 60, 1), 0.5, np.float32)
    assert abs(int(decode(encode_jpeg(floats, 90)).mean()) - 128) <= 2
    bgra = np.zeros((40, 60, 4), np.uint8)
    bgra[..., 2] = 255
    picture = decode(encode_jpeg(bgra, 95, width=30))
    assert picture.shape == (20, 30, 3) and picture[..., 2].mean() > 240
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((2, 2, 2, 2), np.uint8), 80)


def test_pacer_keeps_the_rate_without_bursts():
    pacer = Pacer(0.1)
    sent = []
    for tick in range(300):  # frames every 10 ms for 3 s
        now = tick * 0.01
        if pacer.wait_time(now) <= 0:
            pacer.advance(now)
            sent.append(now)
    assert 29 <= len(sent) <= 31
    gaps = np.diff(sent)
    assert gaps.min() >= 0.075
    pacer.advance(100.0)  # after a long pause: one frame, then the rate again
    assert pacer.wait_time(100.0) > 0
