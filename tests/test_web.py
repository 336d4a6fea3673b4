"""The daemon's page over real HTTP: files, JSON, buttons, live views, CSRF, tokens, abuse."""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import select
import signal
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from harness.daemon import TOKEN, RunningDaemon, free_port, wait_for
from harness.graphs import counter, demo_graph, graph, tally
from test_web_support import (
    BEARER,
    DEMO_BLOCKS,
    assert_opencv_reads_the_wire,
    camera_keeps_sending,
    get,
    read_mjpeg,
    web_daemon,
)

from pipelined.daemon import web
from pipelined.daemon.web import listen
from pipelined.workers.http.access import SESSION_SECONDS, TokenGate

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
        self.conn.request("GET", "/" + url.split("//")[1].split("/", 1)[1], headers=BEARER)
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
    stalled.sendall(
        b"GET /live/edges.mjpg?quality=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    )
    try:
        wait_for(lambda: viewers(url) == 1, 10, "the stalled view to start")
        start = time.monotonic()
        while time.monotonic() - start < 3:
            d.status()  # the control socket answers meanwhile (the client's 10 s deadline)
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
    camera_keeps_sending(d)


def test_a_token_always_even_on_loopback(demo):
    """Every path wants the token; a refusal closes its connection; a first visit trades
    the token for an expiring session cookie and takes it out of the address bar."""
    _, url = demo
    port = int(url.rsplit(":", 1)[1])
    paths = ["/", "/static/app.js", "/api/status", "/api/graph", "/metrics", "/nothing"]
    paths += ["/live/camera.mjpg", "/live/camera.jpg"]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"pipelined_{port}=x"}):
            assert get(url + path, headers, token=None)[0] == 401, (path, headers)
        assert get(url + path + "?token=wrong", token=None)[0] == 401, path
    assert b"<form" in get(url + "/", token=None)[2]  # a person is asked for the token
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # the server closes it: recv ends
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer

    status, headers, _ = get(f"{url}/?token={TOKEN}", token=None)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert f"Max-Age={12 * 3600}" in cookie and "Secure" not in cookie  # loopback: plain HTTP
    session = cookie.split(";")[0]
    for path in ("/", "/api/status", "/metrics", "/live/camera.jpg"):
        assert get(url + path, {"Cookie": session}, token=None)[0] == 200, path
    name, value = session.split("=", 1)
    expires, _, mac = value.partition(".")
    forged = f"{name}={int(expires) + 3600}.{mac}"  # a later expiry, the same signature
    assert get(url + "/api/status", {"Cookie": forged}, token=None)[0] == 401


def test_a_session_expires_on_the_servers_clock():
    now = [1_000_000.0]
    gate = TokenGate("0.0.0.0", 8080, "tok", "pipelined", clock=lambda: now[0])
    cookie = gate.session()
    assert gate.valid_session(cookie)
    now[0] += SESSION_SECONDS - 1
    assert gate.valid_session(cookie)
    now[0] += 2
    assert not gate.valid_session(cookie)
    assert not gate.valid_session(TokenGate("0.0.0.0", 8080, "other", "x").session())
    assert gate.log_in().cookies[gate.cookie]["secure"]  # beyond loopback: only over HTTPS


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
        wait_for(lambda: get(url + "/api/status", token=None)[0] == 401, 30, "the page to refuse")
        d.wait_all_running()
        paths = ["/", "/static/app.js", "/static/app.css", "/api/status", "/api/graph", "/metrics"]
        paths += ["/live/count.mjpg", "/live/count.jpg", "/nothing", "/static/nothing"]
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "pipelined_1=x"}):
                status = get(url + path, headers, token=None)[0]
                assert status == 401, (path, headers, status)
            assert get(url + path + "?token=wrong", token=None)[0] == 401
        status, _, _ = get(url + "/api/blocks/count/stop", CSRF, method="POST", token=None)
        assert status == 401 and d.block("count")["state"] == "RUNNING"
        assert get(url + "/api/status")[0] == 401  # the test daemons' token is not this one

        bearer = {"Authorization": "Bearer t0ken-for-the-test"}
        assert get(url + "/metrics", bearer)[0] == 200
        assert get(url + "/api/status?token=t0ken-for-the-test", token=None)[0] == 200
        status, headers, _ = get(url + "/?token=t0ken-for-the-test", token=None)
        assert status == 303 and headers["Location"] == "/"
        assert "Secure" in headers["Set-Cookie"]  # beyond loopback: HTTPS only
        # The token does not excuse a cross-site button press.
        assert get(url + "/api/blocks/count/stop", bearer, method="POST")[0] == 403
        status, _, _ = get(url + "/api/blocks/count/stop", {**bearer, **CSRF}, method="POST")
        assert status == 200 and d.block("count")["state"] == "STOPPED"
        assert "t0ken-for-the-test" not in d.log_text()  # a given token is never printed
    finally:
        d.close()


def test_beyond_loopback_without_a_token_the_daemon_does_not_start():
    port = free_port()
    d = RunningDaemon(graph(counter()), http=f"0.0.0.0:{port}")
    del d.env["PIPELINED_HTTP_TOKEN"]
    d.start()
    try:
        assert d.proc.wait(30) == 78
        assert "beyond loopback" in d.log_text() and "PIPELINED_HTTP_TOKEN" in d.log_text()
        assert d.runs() == set()
        assert get(f"http://127.0.0.1:{port}/")[0] == 0  # nothing listens
    finally:
        d.close()


def test_the_demo_makes_a_token_and_prints_the_url_that_carries_it(tmp_path):
    """As Jupyter does: the first visit's URL has it, for the page and the preview."""
    page, preview = free_port(), free_port()
    d = RunningDaemon(demo_graph(preview, tmp_path / "rec"), http=f"127.0.0.1:{page}")
    del d.env["PIPELINED_HTTP_TOKEN"]
    with d.start():
        d.wait_all_running()
        log = d.log_text()
        line = next(x for x in log.splitlines() if x.startswith("pipelined: page "))
        opened = line.split()[2].rstrip(",")
        assert opened.startswith(f"http://127.0.0.1:{page}/?token=")
        token = opened.split("=", 1)[1]
        assert len(token) >= 40 and token != TOKEN
        assert get(opened, token=None)[0] == 303
        assert get(f"http://127.0.0.1:{page}/api/status", token=token)[0] == 200
        streams = f"preview streams at http://127.0.0.1:{preview}/?token={token}"
        d.until(lambda: streams in d.log_text(), 30, "the preview's address, once it serves")
        wait_for(
            lambda: get(f"http://127.0.0.1:{preview}/stats", token=token)[0] == 200,
            30,
            "the preview to take the daemon's token",
        )
        assert get(f"http://127.0.0.1:{preview}/stats", token=None)[0] == 401
        worker = Path(f"/proc/{d.block('preview')['pid']}/cmdline").read_bytes()
        assert token.encode() not in worker  # on its stdin, as any secret


def connect_all(port: int, n: int, timeout: float) -> list[socket.socket]:
    """``n`` connections to the port, made at once: a server whose backlog is full makes
    each connect wait a SYN retry (a second or more), so one at a time takes long."""
    sockets = [socket.socket() for _ in range(n)]
    waiting = select.poll()
    for s in sockets:
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
            waiting.register(s, select.POLLOUT)
    pending = {s.fileno() for s in sockets}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, _ in waiting.poll(200):
            waiting.unregister(fd)
            pending.discard(fd)
    done = []
    for s in sockets:
        if s.fileno() in pending or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            s.close()
        else:
            done.append(s)
    return done


def test_open_connections_never_take_the_supervisors_file_descriptors(tmp_path):
    """With few descriptors (a hard limit of 256), hundreds of idle connections to the
    page are refused past its share, and a crashed block still comes back."""
    port = free_port()
    d = RunningDaemon(
        graph(counter(), tally("sink", "count", tmp_path / "t")), http=f"127.0.0.1:{port}"
    )
    d.start(["prlimit", "--nofile=256:256", "--"])
    held: list[socket.socket] = []
    try:
        d.wait_all_running()
        url = f"http://127.0.0.1:{port}"
        held = connect_all(port, 400, timeout=10)
        time.sleep(0.5)
        refused = 0
        answered = select.poll()
        for s in held:
            answered.register(s, select.POLLIN)
        for fd, _ in answered.poll(1000):  # the idle ones say nothing
            try:
                refused += os.read(fd, 100).startswith(b"HTTP/1.1 503")
            except OSError:
                pass
        assert refused > 0, "no connection was refused: the page has no cap"
        pid = d.block("count")["pid"]
        os.kill(pid, signal.SIGKILL)
        back = d.until(
            lambda: (b := d.block("count"))["state"] == "RUNNING" and b["pid"] != pid and b,
            60,
            "count to come back",
        )
        assert back["restarts"] == 1 and "Too many open files" not in d.log_text()
        for s in held:
            s.close()
        wait_for(lambda: get(url + "/api/status")[0] == 200, 30, "the page to answer again")
    finally:
        for s in held:
            s.close()
        d.close()


def test_listen_options(monkeypatch, tmp_path):
    def opts(http=None, token_file=None):
        return argparse.Namespace(http=http, http_token_file=token_file)

    made = web.Token("made-here", made=True)
    monkeypatch.delenv(listen.TOKEN_ENV, raising=False)
    assert web.token_from_args(opts()).made  # none given: the daemon makes one
    assert web.listen_from_args(opts(), builtin=False, token=made) is None  # a graph: off
    assert web.listen_from_args(opts("off"), builtin=True, token=made) is None
    port = free_port()
    monkeypatch.setattr(listen, "DEMO_LISTEN", f"127.0.0.1:{port}")
    on = web.listen_from_args(opts(), builtin=True, token=made)  # the demo: on loopback
    try:
        assert (on.host, on.port, on.token) == ("127.0.0.1", port, "made-here")
        assert web.listen_from_args(opts(), builtin=True, token=made) is None  # in use: a warning
        with pytest.raises(web.HttpError) as busy:
            web.listen_from_args(opts(f"127.0.0.1:{port}"), builtin=False, token=made)
        assert busy.value.exit_code == 1
    finally:
        on.sock.close()
    with pytest.raises(web.HttpError) as bad:
        web.listen_from_args(opts("nonsense"), builtin=False, token=made)
    assert bad.value.exit_code == 2
    with pytest.raises(web.HttpError) as wide:  # beyond loopback, a made token will not do
        web.listen_from_args(opts("0.0.0.0:0"), builtin=False, token=made)
    assert wide.value.exit_code == 78
    monkeypatch.setenv(listen.TOKEN_ENV, "from-the-env")
    given = web.token_from_args(opts())
    assert given == web.Token("from-the-env") and not given.made
    wide_ok = web.listen_from_args(opts("0.0.0.0:0"), builtin=False, token=given)
    try:
        assert wide_ok.token == "from-the-env"
    finally:
        wide_ok.sock.close()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(web.HttpError) as empty:
        web.token_from_args(opts("127.0.0.1:0", str(tmp_path / "empty")))
    assert empty.value.exit_code == 78
    (tmp_path / "token").write_text("from-a-file\nignored\n")
    assert web.token_from_args(opts(None, str(tmp_path / "token"))) == web.Token("from-a-file")


def test_the_environment_turns_the_page_on_and_a_credential_gives_its_token(monkeypatch, tmp_path):
    """The packaged unit's way: $PIPELINED_HTTP from /etc/default/pipelined, the token
    from systemd's credential (LoadCredential=http-token:…); --http still wins."""

    def opts(http=None, token_file=None):
        return argparse.Namespace(http=http, http_token_file=token_file)

    monkeypatch.delenv(listen.TOKEN_ENV, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert web.token_from_args(opts()).made  # no credential file: made
    (tmp_path / "http-token").write_text("from-the-credential\n")
    given = web.token_from_args(opts())
    assert given == web.Token("from-the-credential") and given.source.startswith(
        "the systemd credential http-token"
    )
    monkeypatch.setenv(listen.TOKEN_ENV, "the-env-comes-first")
    assert web.token_from_args(opts()).value == "the-env-comes-first"

    port = free_port()
    monkeypatch.setenv(listen.LISTEN_ENV, f"127.0.0.1:{port}")
    on = web.listen_from_args(opts(), builtin=False, token=given)
    try:
        assert (on.host, on.port) == ("127.0.0.1", port)
        assert web.listen_from_args(opts("off"), builtin=False, token=given) is None
        with pytest.raises(web.HttpError) as busy:  # asked for by configuration: an error
            web.listen_from_args(opts(), builtin=True, token=given)
        assert busy.value.exit_code == 1
    finally:
        on.sock.close()
    monkeypatch.setenv(listen.LISTEN_ENV, "nonsense")
    with pytest.raises(web.HttpError) as bad:
        web.listen_from_args(opts(), builtin=False, token=given)
    assert bad.value.exit_code == 78 and "$PIPELINED_HTTP" in str(bad.value)
