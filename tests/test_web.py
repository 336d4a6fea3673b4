"""The daemon's page over real HTTP: files, JSON, buttons, live views, CSRF, tokens, abuse."""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import time

import cv2
import numpy as np
import pytest
from harness.daemon import RunningDaemon, free_port, wait_for
from harness.graphs import counter, demo_graph, graph
from test_web_support import (
    DEMO_BLOCKS,
    assert_opencv_reads_the_wire,
    camera_fps,
    get,
    read_mjpeg,
    web_daemon,
)

from pipelined.daemon import web
from pipelined.daemon.web import listen

CSRF = {"X-Pipelined-Request": "1"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with web_daemon(demo_graph(free_port(), tmp_path_factory.mktemp("rec"))) as running:
        yield running


def api(url: str, path: str) -> dict:
    status, _, body = get(url + path)
    assert status == 200, (path, status, body)
    reply = json.loads(body)
    assert reply["ok"] is True
    return reply["result"]


def post(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    status, _, body = get(url + path, {**CSRF, **(headers or {})}, method="POST")
    return status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


def test_the_page_its_files_and_headers(demo):
    d, url = demo
    status, headers, body = get(url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/app.js"' in body and b'href="/static/app.css"' in body
    assert b'href="/look.css"' in body  # the look it shares with the preview's page
    status, headers, body = get(url + "/look.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert b"--bg: #101418" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]  # no CDN, no inline
    assert headers["X-Frame-Options"] == "DENY"
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        status, headers, body = get(f"{url}/static/{name}")
        assert status == 200 and kind in headers["Content-Type"] and len(body) > 1000
    assert get(url + "/static/../listen.py")[0] in (403, 404)
    assert get(url + "/static/%2e%2e/listen.py")[0] in (403, 404)
    assert get(url + "/nothing/here")[0] == 404
    # The demo says where to look, once something listens there.
    assert f"page {url}/" in d.log_text()
    wait_for(lambda: "preview streams at http://127.0.0.1:" in d.log_text(), 30, "the preview")


def test_status_and_graph_are_what_pipectl_gets(demo):
    d, url = demo
    status = api(url, "/api/status")
    assert status.keys() == d.status().keys()
    assert [b["name"] for b in status["blocks"]] == DEMO_BLOCKS
    assert {w["name"] for w in status["wires"]} == {"camera", "red", "edges"}
    graph_ = api(url, "/api/graph")
    assert graph_ == d.call("graph")


def test_history_is_each_blocks_last_hour_apart_from_status(demo):
    d, url = demo
    history = wait_for(  # the first sample of a worker has no rate yet: 0
        lambda: (h := api(url, "/api/history")) and any(h["blocks"]["camera"]["fps"]) and h,
        30,
        "a point of history with the camera's rate",
    )
    assert history["interval_s"] == 10 and history["span_s"] == 3600
    assert list(history["blocks"]) == DEMO_BLOCKS
    for series in history["blocks"].values():
        assert set(series) == {"fps_in", "fps", "cpu_percent"}
        assert 1 <= len(series["fps"]) == len(series["cpu_percent"]) <= 361
    assert max(history["blocks"]["camera"]["fps"]) > 0
    assert d.call("history", blocks=["red"])["blocks"].keys() == {"red"}
    assert "history" not in json.dumps(api(url, "/api/status"))  # status stays small


def test_buttons_call_pipectls_commands(demo):
    d, url = demo
    before = d.block("recorder")["pid"]
    status, reply = post(url, "/api/blocks/recorder/restart")
    assert status == 200 and reply["ok"]
    assert [b["name"] for b in reply["result"]["blocks"]] == ["recorder"]  # pipectl's reply
    wait_for(
        lambda: (b := d.block("recorder"))["state"] == "RUNNING" and b["pid"] != before,
        30,
        "the recorder to come back with a new pid",
    )
    status, reply = post(url, "/api/blocks/recorder/stop")
    assert status == 200 and d.block("recorder")["state"] == "STOPPED"
    status, reply = post(url, "/api/blocks/recorder/start")
    assert status == 200
    d.wait_state("recorder", "RUNNING", 30)
    status, reply = post(url, "/api/blocks/nosuch/stop")
    assert status == 404 and reply["error"]["code"] == "no_such_block"
    assert "its blocks are: camera, red" in reply["error"]["message"]  # pipectl's words
    assert post(url, "/api/blocks/recorder/explode")[0] == 404
    assert post(url, "/api/blocks/bad.name/stop")[0] == 400


def test_buttons_refuse_cross_site_requests(demo):
    d, url = demo
    pid = d.block("edges")["pid"]
    host = url.split("//")[1]
    refused = [
        {},  # no X-Pipelined-Request: a plain form post from anywhere
        {**CSRF, "Origin": "http://evil.example"},
        {**CSRF, "Origin": "null"},
        {**CSRF, "Sec-Fetch-Site": "cross-site"},
        {**CSRF, "Host": "evil.example"},  # DNS rebinding: another name for 127.0.0.1
    ]
    for headers in refused:
        status, _, body = get(url + "/api/blocks/edges/stop", headers, method="POST")
        assert status == 403, (headers, status, body)
    assert get(url + "/api/status", {"Host": "evil.example"})[0] == 403
    assert get(url + "/api/blocks/edges/stop")[0] == 405  # GET changes nothing
    ok = {**CSRF, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert get(url + "/api/status", ok)[0] == 200
    assert d.block("edges")["pid"] == pid and d.block("edges")["state"] == "RUNNING"


class Stream:
    """A live view that stays open (its first line read), for slot counting."""

    def __init__(self, url: str):
        host, port = url.split("//")[1].split("/")[0].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.request("GET", "/" + url.split("//")[1].split("/", 1)[1])
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        if self.status == 200:
            self.resp.readline()

    def close(self) -> None:
        self.resp.close()  # the response owns the socket of a Connection: close reply
        self.conn.close()


def viewers(url: str) -> float:
    for line in get(url + "/metrics")[2].decode().splitlines():
        if line.startswith("pipelined_http_live_viewers "):
            return float(line.split()[1])
    raise AssertionError("no pipelined_http_live_viewers")


def test_live_views_hold_spare_slots_and_give_them_back(demo):
    _, url = demo
    first, second = Stream(url + "/live/red.mjpg"), Stream(url + "/live/red.mjpg")
    try:
        assert first.status == 200 and second.status == 200
        assert viewers(url) == 2
        status, headers, body = get(url + "/live/red.mjpg")
        assert status == 503 and b"both are in use" in body and headers["Retry-After"]
        assert get(url + "/live/edges.jpg")[0] == 200  # other wires have their own slots
        assert get(url + "/live/nosuch.mjpg")[0] == 404
    finally:
        first.close()
    wait_for(lambda: viewers(url) == 1, 10, "the closed view's slot to be free")
    try:
        status, headers, body = get(url + "/live/red.jpg?width=320")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (240, 320, 3)
    finally:
        second.close()
    wait_for(lambda: viewers(url) == 0, 10, "every slot to be free")


def test_live_view_read_by_opencv_matches_the_wire(demo):
    d, url = demo
    assert_opencv_reads_the_wire(d, f"{url}/live/camera.mjpg?quality=95&fps=15", 8)


def test_bad_and_abusive_clients_leave_the_graph_running(demo):
    d, url = demo
    port = int(url.rsplit(":", 1)[1])

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            return s.recv(200)

    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.0 400")
    assert raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").startswith(b"HTTP/1.0 400")
    assert raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")[
        :12
    ] in (b"HTTP/1.0 400", b"HTTP/1.1 431")
    lots = b"".join(b"X-%d: y\r\n" % i for i in range(2000))
    assert raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lots + b"\r\n").startswith(
        b"HTTP/1.0 400"
    )
    assert raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 400")

    idle = socket.create_connection(("127.0.0.1", port))  # says nothing at all
    partial = socket.create_connection(("127.0.0.1", port))  # never ends its request
    partial.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    stalled = socket.socket()  # asks for a live view and never reads it
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /live/edges.mjpg?quality=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        wait_for(lambda: viewers(url) == 1, 10, "the stalled view to start")
        start = time.monotonic()
        while time.monotonic() - start < 3:
            t = time.monotonic()
            d.status()  # the control socket and the event loop stay quick meanwhile
            assert time.monotonic() - t < 0.5
            assert get(url + "/api/status")[0] == 200
            time.sleep(0.2)
        assert len(read_mjpeg(url + "/live/camera.mjpg", 3)) == 3
        for s in (idle, partial):
            s.settimeout(20)
            assert s.recv(100) == b"", "an idle connection was not dropped"
        wait_for(lambda: viewers(url) == 0, 20, "the stalled viewer to be dropped")
    finally:
        for s in (idle, partial, stalled):
            s.close()
    status = d.status()
    assert all(b["state"] == "RUNNING" and b["restarts"] == 0 for b in status["blocks"]), status
    assert camera_fps(d, 1.0) > 25


def test_beyond_loopback_every_request_needs_the_token(tmp_path):
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-for-the-test\n")
    d = RunningDaemon(
        graph(counter(fps=20)),
        http=f"0.0.0.0:{port}",
        args=["--http-token-file", str(token_file)],
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(url + "/api/status")[0] == 401, 30, "the page to refuse")
        d.wait_all_running()
        paths = ["/", "/static/app.js", "/static/app.css", "/api/status", "/api/graph", "/metrics"]
        paths += ["/live/count.mjpg", "/live/count.jpg", "/nothing", "/static/nothing"]
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "pipelined_1=x"}):
                status = get(url + path, headers)[0]
                assert status == 401, (path, headers, status)
            assert get(url + path + "?token=wrong")[0] == 401
        status, _, _ = get(url + "/api/blocks/count/stop", CSRF, method="POST")
        assert status == 401 and d.block("count")["state"] == "RUNNING"
        assert b"<form" in get(url + "/")[2]  # a person is asked for the token

        bearer = {"Authorization": "Bearer t0ken-for-the-test"}
        assert get(url + "/metrics", bearer)[0] == 200
        assert get(url + "/api/status?token=t0ken-for-the-test")[0] == 200
        # Opening /?token= keeps it in a cookie and takes it out of the address bar.
        status, headers, _ = get(url + "/?token=t0ken-for-the-test")
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "t0ken-for-the-test" not in cookie
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert get(url + "/", {"Cookie": cookie})[0] == 200
        # The token does not excuse a cross-site button press.
        assert get(url + "/api/blocks/count/stop", bearer, method="POST")[0] == 403
        status, _, _ = get(url + "/api/blocks/count/stop", {**bearer, **CSRF}, method="POST")
        assert status == 200 and d.block("count")["state"] == "STOPPED"
    finally:
        d.close()


def test_beyond_loopback_without_a_token_the_daemon_does_not_start():
    port = free_port()
    d = RunningDaemon(graph(counter()), http=f"0.0.0.0:{port}").start()
    try:
        assert d.proc.wait(30) == 78
        assert "beyond loopback" in d.log_text() and "PIPELINED_HTTP_TOKEN" in d.log_text()
        assert d.runs() == set()
        assert get(f"http://127.0.0.1:{port}/")[0] == 0  # nothing listens
    finally:
        d.close()


def test_listen_options(monkeypatch, tmp_path):
    def opts(http=None, token_file=None):
        return argparse.Namespace(http=http, http_token_file=token_file)

    monkeypatch.delenv(listen.TOKEN_ENV, raising=False)
    assert web.listen_from_args(opts(), builtin=False) is None  # a graph file: off
    assert web.listen_from_args(opts("off"), builtin=True) is None
    port = free_port()
    monkeypatch.setattr(listen, "DEMO_LISTEN", f"127.0.0.1:{port}")
    on = web.listen_from_args(opts(), builtin=True)  # the demo: on, on loopback
    try:
        assert (on.host, on.port, on.token) == ("127.0.0.1", port, "")
        assert web.listen_from_args(opts(), builtin=True) is None  # in use: only a warning
        with pytest.raises(web.HttpError) as busy:
            web.listen_from_args(opts(f"127.0.0.1:{port}"), builtin=False)
        assert busy.value.exit_code == 1
    finally:
        on.sock.close()
    with pytest.raises(web.HttpError) as bad:
        web.listen_from_args(opts("nonsense"), builtin=False)
    assert bad.value.exit_code == 2
    monkeypatch.setenv(listen.TOKEN_ENV, "from-the-env")
    wide = web.listen_from_args(opts("0.0.0.0:0"), builtin=False)
    try:
        assert wide.token == "from-the-env"
    finally:
        wide.sock.close()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(web.HttpError) as empty:
        web.listen_from_args(opts("127.0.0.1:0", str(tmp_path / "empty")), builtin=False)
    assert empty.value.exit_code == 78
