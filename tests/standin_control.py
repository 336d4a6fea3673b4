"""A stand-in daemon for the control tests: a real ControlServer with a fixed command table.

``ServerThread`` runs the server in a background thread's event loop, so that a test
talks to it over a real socket as pipectl would; its commands answer from STATUS and
GRAPH (the daemon's own commands are tested with real daemons elsewhere). The helpers
below send raw bytes and read raw reply lines, for inputs no client would send.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pipelined.ctl.client import Client
from pipelined.ctl.protocol import (
    FAILED,
    MAX_LINE,
    NO_SUCH_BLOCK,
    CommandError,
)
from pipelined.daemon.commands.args import get_arg, get_blocks
from pipelined.daemon.control import ControlServer


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
        "missed": 0,
        "skipped": 0,
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
        _block("camera", "camera", "RUNNING", 4101, inputs=[]),
        _block("red", "color_filter", "RUNNING", 4102, inputs=["camera"], missed=3),
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
            "missed": {"red": 0, "edges": 17},
            "skipped": {},
        },
        {
            "name": "red",
            "writer": "red",
            "readers": ["screen"],
            "frames": 111748,
            "missed": {"screen": 2},
            "skipped": {},
        },
        {
            "name": "edges",
            "writer": "edges",
            "readers": ["screen"],
            "frames": 111700,
            "missed": {},
            "skipped": {"screen": 40},  # its second input: sampled
        },
    ],
}
NAMES = [b["name"] for b in STATUS["blocks"]]
HISTORY = {
    "fps_in": [30.0] * 360,
    "fps": [0.0] * 180 + [30.0] * 180,  # the last half hour at 30 fps: a step up
    "cpu_percent": [12.5] * 360,
}
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

    async def history(args: dict[str, Any]) -> dict[str, Any]:
        return {"interval_s": 10.0, "span_s": 3600.0, "blocks": {n: HISTORY for n in _known(args)}}

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

    async def refuse(args: dict[str, Any]) -> None:
        size = get_arg(args, "size", int, 100)
        raise CommandError(FAILED, "why " + "é" * size + " the end")

    return {
        "status": status,
        "start": action("STARTING"),
        "stop": action("STOPPED"),
        "restart": action("STARTING"),
        "reload": reload,
        "graph": graph,
        "wires": wires,
        "history": history,
        "boom": boom,
        "nan": nan,
        "slow": slow,
        "big": big,
        "echo": echo,
        "refuse": refuse,
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
