"""The control protocol, server, client and pipectl, over real sockets and processes.

A real ControlServer runs in a background thread's event loop with a stand-in command
table (the daemon's own commands are wired in elsewhere). Every hostile input of the
issue is sent raw, and after each the server must still answer. Peer credentials are
tested with a real second uid (65534) in a subprocess: pipectl itself, run by a python
that uid may execute, from a copy of pipelined.ctl and the name rules alone (which also proves
ctl needs nothing else of the daemon or the workers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import grp
import json
import logging
import os
import pty
import pwd
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipelined.ctl
import pipelined.workers
from pipelined.ctl import format as fmt
from pipelined.ctl.client import Client
from pipelined.ctl.main import main
from pipelined.ctl.protocol import (
    BAD_REQUEST,
    BUSY,
    ERROR_CODES,
    FORBIDDEN,
    INTERNAL,
    MAX_LINE,
    NO_SUCH_BLOCK,
    PROTOCOL_VERSION,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN_COMMAND,
    BadRequest,
    CommandError,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
    places_looked,
    socket_path,
)
from pipelined.daemon.commands.args import get_arg, get_blocks
from pipelined.daemon.control import ControlServer, ControlSocketError, Peer

NOBODY = 65534
PIPECTL = [sys.executable, "-m", "pipelined.ctl.main"]
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to run a client as another uid")

# -- a stand-in daemon -------------------------------------------------------------------


def _block(name: str, type_: str, state: str, pid: int | None, **extra: Any) -> dict[str, Any]:
    block = {
        "name": name,
        "type": type_,
        "state": state,
        "pid": pid,
        "restarts": 0,
        "uptime_s": 3725.0 if pid else 0.0,
        "fps": 30.0 if pid else 0.0,
        "fps_in": 30.0 if pid else 0.0,
        "dropped": 0,
        "cpu_percent": 12.5 if pid else None,
        "rss_bytes": 47_400_000 if pid else None,
        "reason": None,
        "last_exit": None,
    }
    block.update(extra)
    return block


STATUS: dict[str, Any] = {
    "instance": "main",
    "run": "3f9a01bc",
    "uptime_s": 3725.5,
    "graph": None,
    "blocks": [
        _block("camera", "camera", "RUNNING", 4101),
        _block("red", "color_filter", "RUNNING", 4102),
        _block(
            "edges",
            "edge_detector",
            "BACKOFF",
            None,
            restarts=3,
            last_exit={
                "code": 1,
                "signal": None,
                "at": time.time() - 5,
                "stderr_tail": "Traceback …\nValueError: threshold out of range\x1b[2J",
            },
        ),
        _block("screen", "screen", "FAILED", None, reason="no display: DISPLAY is not set"),
    ],
    "wires": [
        {
            "name": "camera",
            "writer": "camera",
            "readers": ["red", "edges"],
            "frames": 111750,
            "dropped": {"red": 0, "edges": 17},
        },
        {"name": "red", "writer": "red", "readers": ["screen"], "frames": 111748, "dropped": {}},
    ],
}
NAMES = [b["name"] for b in STATUS["blocks"]]
GRAPH = {
    "blocks": [
        {"name": b["name"], "type": b["type"], "state": b["state"], "inputs": inputs}
        for b, inputs in zip(
            STATUS["blocks"], [[], ["camera"], ["camera"], ["red", "edges"]], strict=True
        )
    ]
}


def _known(args: dict[str, Any]) -> list[str]:
    blocks = get_blocks(args)
    unknown = [b for b in blocks if b not in NAMES]
    if unknown:
        raise CommandError(NO_SUCH_BLOCK, f"no block named {unknown[0]!r}; the graph has {NAMES}")
    return blocks or NAMES


def stand_in_commands() -> dict[str, Any]:
    async def status(args: dict[str, Any]) -> dict[str, Any]:
        wanted = set(_known(args))
        return {**STATUS, "blocks": [b for b in STATUS["blocks"] if b["name"] in wanted]}

    def action(state: str) -> Any:
        async def act(args: dict[str, Any]) -> dict[str, Any]:
            return {"blocks": [{"name": n, "state": state} for n in _known(args)]}

        return act

    async def reload(args: dict[str, Any]) -> dict[str, Any]:
        return {"restarted": ["red"], "unchanged": ["camera", "edges", "screen"]}

    async def graph(args: dict[str, Any]) -> dict[str, Any]:
        return GRAPH

    async def wires(args: dict[str, Any]) -> dict[str, Any]:
        return {"wires": STATUS["wires"]}

    async def boom(args: dict[str, Any]) -> None:
        raise RuntimeError("kaput")

    async def nan(args: dict[str, Any]) -> float:
        return float("nan")

    async def slow(args: dict[str, Any]) -> str:
        await asyncio.sleep(min(get_arg(args, "seconds", (int, float), 0.3), 2.0))
        return "done"

    async def big(args: dict[str, Any]) -> str:
        return "x" * min(get_arg(args, "size", int, 900_000), MAX_LINE - 100)

    async def echo(args: dict[str, Any]) -> dict[str, Any]:
        return args

    return {
        "status": status,
        "start": action("STARTING"),
        "stop": action("STOPPED"),
        "restart": action("STARTING"),
        "reload": reload,
        "graph": graph,
        "wires": wires,
        "boom": boom,
        "nan": nan,
        "slow": slow,
        "big": big,
        "echo": echo,
    }


class ServerThread:
    """A ControlServer on its own event loop in a daemon thread."""

    def __init__(self, path: Path | None = None, sock: socket.socket | None = None, **kw: Any):
        kw.setdefault("idle_timeout", 1.0)
        kw.setdefault("write_timeout", 1.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ControlServer = self.run(self._make(kw))
        self.run(self.server.start(path, sock=sock))
        self.path = path

    async def _make(self, kw: dict[str, Any]) -> ControlServer:
        return ControlServer(stand_in_commands(), **kw)

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = ServerThread(tmp_path / "s" / "main.sock")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerThread(tmp_path_factory.mktemp("fz") / "main.sock")
    yield srv
    srv.stop()


def connect(path: Path, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def read_lines(sock: socket.socket, count: int | None = None) -> list[dict[str, Any]]:
    """``count`` reply lines, or every line until the server closes the connection."""
    buf, replies = b"", []
    while count is None or len(replies) < count:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:  # AF_UNIX: closed by a server that left input unread
            chunk = b""
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        replies += [json.loads(line) for line in lines]
    return replies


def exchange(path: Path, data: bytes, count: int = 1) -> list[dict[str, Any]]:
    with connect(path) as sock:
        sock.sendall(data)
        return read_lines(sock, count)


def assert_alive(path: Path) -> None:
    with Client(path, timeout=3) as daemon:
        assert daemon.call("status")["run"] == STATUS["run"]


def assert_closed(sock: socket.socket) -> None:
    assert read_lines(sock) == []


# -- protocol ----------------------------------------------------------------------------


def test_request_and_reply_round_trip() -> None:
    line = encode_request("stop", {"blocks": ["red"]}, id="a-1")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = decode_request(line)
    assert (request.cmd, request.args, request.id) == ("stop", {"blocks": ["red"]}, "a-1")
    assert decode_request(b'{"cmd": "hello"}').args == {}
    assert decode_request(b'{"cmd": "hello", "args": null}').args == {}
    reply = decode_reply(encode_result(7, {"x": "é\n"}))
    assert (reply.id, reply.ok, reply.unwrap()) == (7, True, {"x": "é\n"})
    error = decode_reply(encode_error(None, NO_SUCH_BLOCK, "no block named 'x'"))
    with pytest.raises(CommandError) as info:
        error.unwrap()
    assert (info.value.code, info.value.message) == (NO_SUCH_BLOCK, "no block named 'x'")
    assert encode_result(1, "é\u2028").isascii()  # never a raw newline or non-ASCII byte
    with pytest.raises(ValueError):
        encode_result(1, float("nan"))


@pytest.mark.parametrize(
    ("line", "request_id"),
    [
        (b"", None),
        (b"status", None),
        (b"\xff\xfe{}", None),
        (b'\xef\xbb\xbf{"cmd": "hello"}', None),  # a BOM is not JSON
        (b"[1, 2]", None),
        (b'"hello"', None),
        (b'{"cmd": 3}', None),
        (b'{"id": [1], "cmd": "hello"}', None),
        (b'{"id": {"a": 1}, "cmd": "hello"}', None),
        (b'{"id": 5, "cmd": "hello", "args": [1]}', 5),
        (b'{"id": "q", "cmd": "stop", "arg": {"blocks": ["red"]}}', "q"),  # a typo: not all
        (b'{"id": 1, "cmd": "x", "args": {"v": NaN}}', None),
        (b"[" * 200_000 + b"]" * 200_000, None),
        (b'{"id": ' + b"9" * 5000 + b', "cmd": "x"}', None),
    ],
)
def test_invalid_requests_are_bad_request(line: bytes, request_id: Any) -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(line)
    assert info.value.code == BAD_REQUEST
    assert info.value.request_id == request_id


def test_get_arg_checks_types() -> None:
    assert get_arg({"n": 3}, "n", int) == 3
    assert get_arg({}, "n", int, 7) == 7
    for args in ({"n": True}, {"n": "3"}, {"n": 3.5}, {}):
        with pytest.raises(CommandError) as info:
            get_arg(args, "n", int)
        assert info.value.code == BAD_REQUEST
    assert get_blocks({}) == [] and get_blocks({"blocks": ["a-1", "B_2"]}) == ["a-1", "B_2"]
    for bad in ("red", [1], ["a.b"], [""], None):
        with pytest.raises(CommandError):
            get_blocks({"blocks": bad})


def test_socket_path_rule(tmp_path: Path) -> None:
    system = tmp_path / "run-pipelined"
    none = {"environ": {}, "system_dir": system}
    uid = os.getuid()
    assert socket_path("main", "/x/y.sock", **none) == Path("/x/y.sock")
    env = {"PIPELINED_SOCKET": "/e.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert socket_path("main", "/x.sock", environ=env, system_dir=system) == Path("/x.sock")
    assert socket_path("main", environ=env, system_dir=system) == Path("/e.sock")
    env.pop("PIPELINED_SOCKET")
    assert socket_path("cam2", environ=env, system_dir=system) == Path(
        "/run/user/7/pipelined/cam2.sock"
    )
    assert socket_path("main", **none) == Path(f"/tmp/pipelined-{uid}/main.sock")
    system.mkdir()
    assert socket_path("cam2", environ=env, system_dir=system) == system / "cam2.sock"
    looked = places_looked("main", environ={}, system_dir=tmp_path / "nope")
    assert [p.path is None for p in looked] == [True, True, True, True, False]
    for bad in ("", "Main", "-x", "a" * 33, "a.b", "a/b"):
        with pytest.raises(ValueError, match="instance name"):
            socket_path(bad, **none)


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
        t1 = time.monotonic()
        assert_alive(server.path)  # answered while the silent client waits
        assert time.monotonic() - t1 < 0.5
        replies = read_lines(silent)
    assert [r["error"]["code"] for r in replies] == [TIMEOUT]
    assert 0.9 < time.monotonic() - t0 < 3


def test_slow_drip_client_is_closed(server: ServerThread) -> None:
    t0 = time.monotonic()
    with connect(server.path) as sock:
        closed = False
        for _ in range(20):
            try:
                sock.sendall(b" ")
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                closed = True
                break
        assert closed and time.monotonic() - t0 < 2.5
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
    assert time.monotonic() - t0 < 4  # one after the other would take 25 s


def test_connection_cap(tmp_path: Path) -> None:
    srv = ServerThread(tmp_path / "cap.sock", max_clients=3)
    try:
        held = [connect(srv.path) for _ in range(3)]
        for sock in held:  # each admitted and served
            sock.sendall(encode_request("hello"))
            assert read_lines(sock, 1)[0]["ok"]
        with connect(srv.path) as extra:
            assert [r["error"]["code"] for r in read_lines(extra)] == [BUSY]
        held.pop().close()
        deadline = time.monotonic() + 3
        while srv.server.connections > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_alive(srv.path)
        for sock in held:
            sock.close()
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
        t0 = time.monotonic()
        assert_alive(server.path)  # the loop is not stuck writing to it
        assert time.monotonic() - t0 < 0.5
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


# -- the socket file ---------------------------------------------------------------------


def test_socket_and_directory_modes_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "d" / "main.sock"
    gid = _unused_gid() if ROOT else os.getegid()
    srv = ServerThread(path, group=gid)
    try:
        st_sock, st_dir = path.stat(), path.parent.stat()
        assert oct(st_sock.st_mode & 0o777) == oct(0o660) and st_sock.st_gid == gid
        assert oct(st_dir.st_mode & 0o777) == oct(0o750) and st_dir.st_gid == gid
    finally:
        srv.stop()
    assert not path.exists()


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "main.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: a daemon killed with -9
    srv = ServerThread(path)
    try:
        assert_alive(path)
        second = ControlServer(stand_in_commands())
        with pytest.raises(ControlSocketError, match="already answers"):
            asyncio.run(second.start(path))
        assert_alive(path)
    finally:
        srv.stop()
    path.write_text("not a socket")
    with pytest.raises(ControlSocketError, match="not a socket"):
        asyncio.run(ControlServer(stand_in_commands()).start(path))
    with pytest.raises(ControlSocketError, match="107"):
        asyncio.run(ControlServer(stand_in_commands()).start(tmp_path / ("x" * 120)))


@needs_root
def test_socket_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    squat = tmp_path / "squat"
    squat.mkdir()
    os.chown(squat, NOBODY, NOBODY)
    with pytest.raises(ControlSocketError, match="swap the socket"):
        asyncio.run(ControlServer(stand_in_commands()).start(squat / "main.sock"))


def test_start_on_a_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "act.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    srv = ServerThread(sock=listener)
    try:
        assert_alive(path)
    finally:
        srv.stop()
    assert path.exists()  # systemd owns a socket it handed over; we leave it alone
    with pytest.raises(TypeError):
        asyncio.run(ControlServer({}).start())
    with pytest.raises(ValueError, match="hello"):
        ControlServer({"hello": stand_in_commands()["echo"]})


# -- peer credentials, with a real second uid ---------------------------------------------


def _unused_gid() -> int:
    gid = 4242
    while True:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
        gid += 1


@pytest.fixture(scope="module")
def other_uid_env() -> Any:
    """A directory another uid can reach, with a copy of pipelined.ctl and a python for it."""
    if not ROOT:
        pytest.skip("needs root to run a client as another uid")
    base = Path(tempfile.mkdtemp(prefix="pc", dir="/tmp"))
    os.chmod(base, 0o755)
    pkg = base / "lib" / "pipelined"
    shutil.copytree(
        Path(pipelined.ctl.__file__).parent,
        pkg / "ctl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (pkg / "__init__.py").write_text("")
    # Of the workers, pipectl needs the name rules alone (plain Python, no posix_ipc).
    (pkg / "workers" / "ipc").mkdir(parents=True)
    for part in ("workers/__init__.py", "workers/ipc/__init__.py", "workers/ipc/names.py"):
        shutil.copy(Path(pipelined.workers.__file__).parent.parent / part, pkg / part)
    for root, dirs, files in os.walk(base / "lib"):
        for name in dirs + files:
            os.chmod(Path(root) / name, 0o755)
    env = {"PYTHONPATH": str(base / "lib"), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    for python in (sys.executable, "/usr/bin/python3.11", "/usr/bin/python3"):
        try:
            ok = subprocess.run(
                [python, "-c", "import sys, pipelined.ctl.main; assert sys.version_info >= (3,11)"],
                user=NOBODY, group=NOBODY, extra_groups=[], env=env, cwd="/",
                capture_output=True, timeout=20,
            ).returncode == 0  # fmt: skip
        except OSError:
            ok = False
        if ok:
            break
    else:
        shutil.rmtree(base)
        pytest.skip("no python that uid 65534 may run")
    yield python, base, env
    shutil.rmtree(base)


def _pipectl_as(
    env_info: Any, path: Path, uid: int, gid: int, extra: list[int], *verb: str
) -> subprocess.CompletedProcess[str]:
    python, _, env = env_info
    return subprocess.run(
        [python, "-m", "pipelined.ctl.main", "--socket", str(path), *verb],
        user=uid, group=gid, extra_groups=extra, env=env, cwd="/",
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


@needs_root
def test_peer_credentials(other_uid_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, base, _ = other_uid_env
    gid = _unused_gid()
    path = base / "s" / "main.sock"
    srv = ServerThread(path, group=gid)
    try:
        # In the daemon's group as a supplementary group only: allowed.
        done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [gid], "status")
        assert done.returncode == 0, done.stderr
        assert "camera" in done.stdout and "RUNNING" in done.stdout
        # Not in the group: the 0660 socket in its 0750 directory keeps it out already.
        done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [], "status")
        assert done.returncode == 3 and "permission denied" in done.stderr
        # A socket anyone may open (systemd's SocketMode=0666, say): the peer check refuses.
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o666)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipelined.daemon.control"):
            done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [], "status")
        assert done.returncode == 1, done.stderr
        assert FORBIDDEN in done.stderr and "may not control" in done.stderr
        assert any(f"uid {NOBODY}" in r.getMessage() for r in caplog.records)
        done = _pipectl_as(other_uid_env, path, NOBODY, gid, [], "status")  # primary group
        assert done.returncode == 0, done.stderr
        assert_alive(path)
    finally:
        srv.stop()


def test_client_reads_why_the_daemon_hung_up(tmp_path: Path) -> None:
    """A refused client learns why even if the daemon closed before the request went out."""
    path = tmp_path / "bye.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.sendall(encode_error(None, FORBIDDEN, "uid 65534 may not control this daemon"))
        conn.close()

    thread = threading.Thread(target=refuse)
    thread.start()
    with Client(path, timeout=5) as daemon:
        daemon.connect()
        thread.join(5)
        time.sleep(0.05)  # the daemon has hung up before we send anything
        with pytest.raises(CommandError) as info:
            daemon.call("status")
    assert info.value.code == FORBIDDEN
    listener.close()


def _database_member() -> tuple[pwd.struct_passwd, int] | None:
    """A user that /etc/group lists in a group other than its own primary one."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid not in (0, NOBODY) and user.pw_gid != group.gr_gid:
                return user, group.gr_gid
    return None


@needs_root
def test_group_membership_from_the_user_database(other_uid_env: Any, tmp_path: Path) -> None:
    member = _database_member()
    if member is None:
        pytest.skip("no user in /etc/group is a member of a secondary group")
    user, gid = member
    _, base, _ = other_uid_env
    path = base / "db" / "main.sock"
    srv = ServerThread(path, group=gid)
    try:
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o666)
        # The process holds no supplementary groups; the database says it is a member.
        done = _pipectl_as(other_uid_env, path, user.pw_uid, user.pw_gid, [], "hello")
        assert done.returncode == 0, done.stderr
        refusal = srv.run(srv.server._refusal(Peer(1, NOBODY, NOBODY, frozenset())))
        assert refusal is not None and "may not control" in refusal
    finally:
        srv.stop()


# -- pipectl -----------------------------------------------------------------------------


def pipectl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *argv],
        capture_output=True, text=True, timeout=20, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_status_table(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(server.path), "status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("instance main  run 3f9a01bc  up 1h02m  graph (built-in demo)")
    header = next(line for line in lines if line.startswith("BLOCK"))
    assert header.split() == [*fmt.BLOCK_HEADERS, "INFO"]
    camera = next(line for line in lines if line.startswith("camera "))
    expected = ["camera", "camera", "RUNNING", "4101", "1h02m", "0", "30.0", "12%", "45.2M"]
    assert camera.split()[:9] == expected
    assert re.search(
        r"BACKOFF .* 3 .* exit 1, [0-9hms]+ ago: ValueError: threshold out of range", out
    )
    assert "no display: DISPLAY is not set" in out
    assert "\x1b" not in out  # a worker's stderr cannot drive the terminal
    assert re.search(r"^camera\s+camera\s+red, edges\s+111750\s+red:0 edges:17$", out, re.M)


def test_status_json_and_block_selection(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--json", "--socket", str(server.path)]) == 0
    assert json.loads(capsys.readouterr().out) == STATUS
    assert main(["--socket", str(server.path), "status", "--json", "red", "camera"]) == 0
    assert [b["name"] for b in json.loads(capsys.readouterr().out)["blocks"]] == ["camera", "red"]
    assert main(["--socket", str(server.path), "status", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "no block named 'nosuch'" in err and NO_SUCH_BLOCK in err


def test_actions_and_exit_codes(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    sock = ["--socket", str(server.path)]
    assert main([*sock, "stop", "red"]) == 0
    assert capsys.readouterr().out.strip() == "stop: red STOPPED"
    assert main([*sock, "start"]) == 0
    assert "camera STARTING, red STARTING" in capsys.readouterr().out
    assert main([*sock, "restart", "edges", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "blocks": [{"name": "edges", "state": "STARTING"}]
    }
    assert main([*sock, "reload"]) == 0
    assert "restarted: red" in capsys.readouterr().out
    assert main([*sock, "stop", "red", "nosuch"]) == 1
    assert main([*sock, "hello"]) == 0
    assert "protocol 1" in capsys.readouterr().out
    for usage in (
        [],
        [*sock],
        [*sock, "frobnicate"],
        [*sock, "restart"],
        [*sock, "stop", "a.b"],
        ["--instance", "Bad!", "status"],
        [*sock, "status", "--interval", "0"],
    ):
        assert main(usage) == 2, usage


def test_no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    missing = tmp_path / "none.sock"
    assert main(["--socket", str(missing), "status"]) == 3
    err = capsys.readouterr().err
    assert str(missing) in err and "no such socket" in err
    assert f"pipelined --socket {missing}" in err and "systemctl start pipelined" in err
    # A stale socket (a killed daemon): found, but nothing listens.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    monkeypatch.setenv("PIPELINED_SOCKET", str(tmp_path / "stale.sock"))
    assert main(["status"]) == 3
    assert "nothing listens" in capsys.readouterr().err
    # By instance: every step of the rule is listed.
    monkeypatch.delenv("PIPELINED_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert main(["--instance", "cam2", "wires"]) == 3
    err = capsys.readouterr().err
    if not Path("/run/pipelined").is_dir():
        assert str(tmp_path / "pipelined" / "cam2.sock") in err
        assert re.search(r"\$PIPELINED_SOCKET +not set", err)
        assert "pipelined --instance cam2" in err


def _check_dot(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """A structural check of the dot we write: statements, quoting, edges between nodes."""
    quoted = r'"(?:[^"\\]|\\.)*"'
    lines = text.strip().splitlines()
    assert re.fullmatch(rf"digraph {quoted} \{{", lines[0]), lines[0]
    assert lines[-1] == "}"
    nodes: set[str] = set()
    edges: list[tuple[str, str]] = []
    for line in lines[1:-1]:
        if m := re.fullmatch(rf"  ({quoted}) -> ({quoted});", line):
            edges.append((m[1], m[2]))
        elif m := re.fullmatch(
            rf"  ({quoted}) \[label={quoted}, fillcolor=\"#[0-9a-f]{{6}}\"\];", line
        ):
            nodes.add(m[1])
        else:
            assert re.fullmatch(r"  (rankdir=LR|node \[[^\]]*\]);", line), line
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges


def test_graph_and_dot(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(server.path), "graph", "--dot"]) == 0
    out = capsys.readouterr().out
    nodes, edges = _check_dot(out)
    assert nodes == {f'"{n}"' for n in NAMES}
    assert ('"camera"', '"red"') in edges and ('"edges"', '"screen"') in edges
    assert fmt.STATE_COLOURS["FAILED"] in out and fmt.STATE_COLOURS["RUNNING"] in out
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=out, text=True, check=True, capture_output=True)
    weird = {"blocks": [{"name": 'a"b\\', "type": 'x:"Y"', "state": "?", "inputs": ["c"]}]}
    _check_dot(fmt.dot({"blocks": [*weird["blocks"], {"name": "c"}]}))
    assert main(["--socket", str(server.path), "graph"]) == 0
    assert re.search(r"^screen\s+screen\s+FAILED\s+red, edges$", capsys.readouterr().out, re.M)
    assert main(["--socket", str(server.path), "wires"]) == 0
    assert "WIRE    WRITER  READERS     FRAMES  DROPPED" in capsys.readouterr().out


def test_exit_codes_of_the_command(server: ServerThread, tmp_path: Path) -> None:
    env = {"PIPELINED_SOCKET": str(server.path)}
    assert pipectl("status", env=env).returncode == 0
    done = pipectl("stop", "nosuch", env=env)
    assert done.returncode == 1 and "nosuch" in done.stderr
    assert pipectl(env=env).returncode == 2
    done = pipectl("--socket", str(tmp_path / "x.sock"), "status")
    assert done.returncode == 3 and str(tmp_path / "x.sock") in done.stderr


def test_watch_refreshes_in_place(server: ServerThread) -> None:
    leader, follower = pty.openpty()
    watch = ["status", "--watch", "--interval", "0.2", "--count", "3"]
    proc = subprocess.Popen(
        [*PIPECTL, "--socket", str(server.path), *watch],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child is gone
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(10) == 0
    text = output.decode()
    assert text.count("\x1b[2J") == 1 and text.count("\x1b[H") == 3
    assert text.count("Every 0.2s: pipectl status") == 3
    assert len(re.findall(r"camera +camera +RUNNING", text)) == 3


def test_watch_without_a_terminal_survives_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    srv = ServerThread(path)
    watch = ["status", "--watch", "--json", "--interval", "0.3", "--count", "2"]
    proc = subprocess.Popen(
        [*PIPECTL, "--socket", str(path), *watch],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == STATUS
    finally:
        srv.stop()  # the daemon goes away between two refreshes
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == "" and "no daemon answers" in err and "trying again" in err


# -- formatting --------------------------------------------------------------------------


def test_humanised_numbers() -> None:
    assert [fmt.duration(s) for s in (0, 42.9, 723, 3725, 2 * 86400 + 3 * 3600)] == [
        "0s",
        "42s",
        "12m03s",
        "1h02m",
        "2d03h",
    ]
    assert [fmt.size(b) for b in (512, 47_400_000, 1_288_490_188, None, "x")] == [
        "512B",
        "45.2M",
        "1.20G",
        "-",
        "-",
    ]
    now = 1_000_000.0
    assert fmt.last_exit({"code": None, "signal": 9, "at": now - 130}, now) == "SIGKILL, 2m10s ago"
    assert fmt.last_exit({"code": 2, "at": "1970-01-12T13:46:40"}, now) == "exit 2, 0s ago"
    assert fmt.last_exit(None) == "-"
    assert fmt.clean("a\x1b[2Jb\nc") == "a [2Jb c"
    # Missing fields print as "-" rather than failing.
    assert "BLOCK" in fmt.status({"blocks": [{"name": "x"}]})
    assert fmt.action("stop", None) == "stop: done"
