"""The control server over a real socket, against every hostile input of the issue.

A real ControlServer runs with a stand-in command table (tests/standin_control.py).
Every bad input is sent raw, and after each the server must still answer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import select
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standin_control import (
    STATUS,
    ServerThread,
    assert_alive,
    connect,
    exchange,
    read_lines,
)

from pipelined.ctl.client import Client
from pipelined.ctl.protocol import (
    BAD_REQUEST,
    BUSY,
    ERROR_CODES,
    INTERNAL,
    MAX_LINE,
    NO_SUCH_BLOCK,
    PROTOCOL_VERSION,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN_COMMAND,
    CommandError,
    encode_request,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerThread(tmp_path_factory.mktemp("fz") / "main.sock")
    yield srv
    srv.stop()


# -- the server: good requests -----------------------------------------------------------


def test_hello_status_and_ids(server: ServerThread) -> None:
    with Client(server.path) as daemon:
        hello = daemon.call("hello")
        assert hello["protocol"] == PROTOCOL_VERSION and hello["instance"] == "main"
        assert "status" in hello["commands"] and hello["version"]
        assert daemon.call("status") == STATUS
        assert [b["name"] for b in daemon.call("status", blocks=["red"])["blocks"]] == ["red"]
    # Several requests in one write: answered in order, each id echoed as sent.
    ids = ["a", 2, 2.5, True, None, -(2**62)]
    data = b"".join(encode_request("hello", id=i) for i in ids) + b"\n  \n"
    assert [r["id"] for r in exchange(server.path, data, len(ids))] == ids


def test_a_last_line_without_newline_is_answered(server: ServerThread) -> None:
    with connect(server.path) as sock:
        sock.sendall(b'{"id": 9, "cmd": "hello"}')
        sock.shutdown(socket.SHUT_WR)
        [reply] = read_lines(sock)
    assert reply["id"] == 9 and reply["ok"]


# -- the server: every bad input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"{not json\n", BAD_REQUEST, "not JSON"),
        (b'{"id": 1, "cmd": "hel\xc0\xafo"}\n', BAD_REQUEST, "not UTF-8"),
        (b"\x00\x01\x02\xff\n", BAD_REQUEST, "UTF-8"),
        (b"[1, 2, 3]\n", BAD_REQUEST, "JSON object"),
        (b'{"id": 1, "cmd": "frobnicate"}\n', UNKNOWN_COMMAND, "knows: big, boom"),
        (b'{"id": 1, "cmd": "status", "args": {"blocks": "red"}}\n', BAD_REQUEST, "list"),
        (b'{"id": 1, "cmd": "stop", "args": {"blocks": [1]}}\n', BAD_REQUEST, "block names"),
        (b'{"id": 1, "cmd": "slow", "args": {"seconds": "1"}}\n', BAD_REQUEST, "int or float"),
        (b'{"id": 1, "cmd": "stop", "args": {"blocks": ["nosuch"]}}\n', NO_SUCH_BLOCK, "nosuch"),
        (b'{"id": 1, "cmd": "nan"}\n', INTERNAL, "not JSON"),
    ],
)
def test_bad_input_gets_an_error_and_the_server_carries_on(
    server: ServerThread, data: bytes, code: str, says: str
) -> None:
    with connect(server.path) as sock:
        sock.sendall(data)
        [reply] = read_lines(sock, 1)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert says in reply["error"]["message"]
        # The connection stays usable after a request-level error.
        sock.sendall(encode_request("hello", id="next"))
        assert read_lines(sock, 1)[0]["id"] == "next"
    assert_alive(server.path)


def test_handler_exception_is_internal_and_logged(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    [reply] = exchange(server.path, encode_request("boom", id=3))
    assert reply["error"]["code"] == INTERNAL and "RuntimeError: kaput" in reply["error"]["message"]
    assert any(
        "'boom' failed" in r.getMessage() and r.exc_info and "kaput" in str(r.exc_info[1])
        for r in caplog.records
    )
    assert_alive(server.path)


def test_an_error_message_of_any_length_fits_one_reply_line(server: ServerThread) -> None:
    """A reload's error carries every problem of the graph (user code's words among them):
    however long, the reply fits the line limit, cut with a note, its start kept."""
    with Client(server.path, timeout=10) as c:
        with pytest.raises(CommandError) as small:
            c.call("refuse", size=10)
        assert small.value.message == "why " + "é" * 10 + " the end"
    with connect(server.path) as sock:
        sock.sendall(encode_request("refuse", {"size": 3_000_000}, id=7))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection instead of answering"
            buf += chunk
    assert len(buf) <= MAX_LINE + 1
    reply = json.loads(buf)
    assert reply["id"] == 7 and reply["error"]["code"] == "failed"
    assert reply["error"]["message"].startswith("why éé")
    assert reply["error"]["message"].endswith("cut to fit one reply)")
    assert_alive(server.path)


def test_ten_megabytes_without_newline_is_too_large(server: ServerThread) -> None:
    with connect(server.path) as sock:

        def flood() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(b"x" * 10_000_000)

        sender = threading.Thread(target=flood)
        sender.start()
        replies = read_lines(sock)
        sender.join(5)
    assert [r["error"]["code"] for r in replies] == [TOO_LARGE]
    assert_alive(server.path)


def test_line_limit_is_exactly_max_line(server: ServerThread) -> None:
    head = b'{"id": 1, "cmd": "echo", "args": {"pad": "'
    tail = b'"}}'
    fits = head + b"y" * (MAX_LINE - len(head) - len(tail)) + tail
    assert len(fits) == MAX_LINE
    [reply] = exchange(server.path, fits + b"\n")
    assert reply["ok"] and len(reply["result"]["pad"]) > MAX_LINE - 100
    with connect(server.path) as sock:
        sock.sendall(fits[:-1] + b" }" + b"\n")
        assert [r["error"]["code"] for r in read_lines(sock)] == [TOO_LARGE]


def test_silent_client_is_closed_and_does_not_block_others(server: ServerThread) -> None:
    t0 = time.monotonic()
    with connect(server.path) as silent:
        assert_alive(server.path)
        waiting, _, _ = select.select([silent], [], [], 0)
        assert not waiting, "others were answered only once the silent client was closed"
        replies = read_lines(silent)
    assert [r["error"]["code"] for r in replies] == [TIMEOUT]
    assert 0.9 < time.monotonic() - t0 < 10  # closed by its timeout, not at once or never


def test_slow_drip_client_is_closed(server: ServerThread) -> None:
    with connect(server.path) as sock:
        closed = False
        for _ in range(50):  # 10 s of drip: a timer each byte restarted would never fire
            try:
                sock.sendall(b" ")
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                closed = True
                break
        assert closed
        assert [r["error"]["code"] for r in read_lines(sock)] == [TIMEOUT]
    assert_alive(server.path)


def test_many_clients_at_once(server: ServerThread) -> None:
    def one(i: int) -> str:
        with Client(server.path, timeout=10) as daemon:
            assert daemon.call("hello")["instance"] == "main"
            return daemon.call("slow", seconds=0.5)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        assert list(pool.map(one, range(50))) == ["done"] * 50
    assert time.monotonic() - t0 < 15  # one after the other would take 25 s


def test_idle_connections_cannot_lock_anyone_out(tmp_path: Path) -> None:
    """At the cap, a new connection closes the one idle longest: an admin's request
    always gets through, however many connections a script left open."""
    srv = ServerThread(tmp_path / "cap.sock", max_clients=3, idle_timeout=30.0)
    try:
        held = [connect(srv.path) for _ in range(3)]
        for sock in held:  # each admitted and served, then left idle, the first longest
            sock.sendall(encode_request("hello"))
            assert read_lines(sock, 1)[0]["ok"]
            time.sleep(0.05)
        with Client(srv.path, timeout=5) as admin:
            assert admin.call("status")["run"] == STATUS["run"]
        [goodbye] = read_lines(held[0])  # then the server closed it
        assert goodbye["id"] is None and goodbye["error"]["code"] == TIMEOUT
        assert "to make room" in goodbye["error"]["message"]
        for sock in held[1:]:  # the others are still served
            sock.sendall(encode_request("hello", id="still"))
            assert read_lines(sock, 1)[0]["id"] == "still"
        for sock in held:
            sock.close()
    finally:
        srv.stop()


def test_busy_only_when_every_connection_is_mid_request(tmp_path: Path) -> None:
    srv = ServerThread(tmp_path / "cap.sock", max_clients=2, idle_timeout=30.0)
    try:
        working = [connect(srv.path) for _ in range(2)]
        for sock in working:
            sock.sendall(encode_request("slow", {"seconds": 2.0}))
        time.sleep(0.5)  # both are inside their command now
        with connect(srv.path) as extra:
            assert [r["error"]["code"] for r in read_lines(extra)] == [BUSY]
        for sock in working:
            assert read_lines(sock, 1)[0]["result"] == "done"
            sock.close()
        deadline = time.monotonic() + 3
        while srv.server.connections > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_alive(srv.path)
    finally:
        srv.stop()


def test_client_disconnecting_mid_reply(server: ServerThread) -> None:
    for _ in range(10):
        sock = connect(server.path)
        sock.sendall(encode_request("big", {"size": 900_000}))
        sock.recv(1000)  # the reply has started
        sock.close()
    assert_alive(server.path)


def test_client_that_never_reads_is_dropped(server: ServerThread) -> None:
    with connect(server.path) as sock:
        sock.sendall(b"".join(encode_request("big", id=i) for i in range(8)))
        assert_alive(server.path)  # the loop is not stuck writing to it
        deadline = time.monotonic() + 5
        while server.server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.server.connections == 0
    assert_alive(server.path)


# -- the server: fuzzing -----------------------------------------------------------------


def _fuzz_round(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send ``data``, then a sentinel request; every line must get one well-formed reply."""
    sentinel = uuid.uuid4().hex
    payload = data + b"\n" + encode_request("hello", id=sentinel)
    expected = sum(1 for line in (data + b"\n").split(b"\n") if line.strip()) + 1
    with connect(path) as sock:
        sock.sendall(payload)
        replies = read_lines(sock, expected)
    assert len(replies) == expected
    assert replies[-1]["id"] == sentinel and replies[-1]["ok"] is True
    for reply in replies:
        assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
        if not reply["ok"]:
            assert reply["error"]["code"] in ERROR_CODES
    return replies[:-1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_fuzz_raw_lines(fuzz_server: ServerThread, chunks: list[bytes]) -> None:
    _fuzz_round(fuzz_server.path, b"\n".join(chunks))


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
COMMANDS = ["hello", "status", "start", "stop", "restart", "reload", "graph", "wires", "echo"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["id", "cmd", "args", "extra"]),
        JSON,
        max_size=4,
    ).map(lambda d: d)
    | st.fixed_dictionaries(
        {"id": JSON_SCALARS, "cmd": st.sampled_from(COMMANDS) | st.text(max_size=10)},
        optional={"args": st.dictionaries(st.sampled_from(["blocks", "x"]), JSON, max_size=2)},
    )
)
def test_fuzz_requests(fuzz_server: ServerThread, request: dict[str, Any]) -> None:
    [reply] = _fuzz_round(fuzz_server.path, json.dumps(request).encode())
    valid_id = (
        "id" not in request
        or request["id"] is None
        or isinstance(request["id"], str | int | float | bool)
    )
    if valid_id and isinstance(request.get("cmd"), str):
        assert reply["id"] == request.get("id")
    if reply["ok"]:
        assert request.get("cmd") in COMMANDS
    else:
        assert reply["error"]["code"] in {BAD_REQUEST, UNKNOWN_COMMAND, NO_SUCH_BLOCK}
