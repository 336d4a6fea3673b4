"""A real ``pipelined`` daemon in a subprocess, for tests that drive it end to end."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipelined.ctl.client import Client, DaemonUnreachable
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.segment import runs_of, unlink_run

T = TypeVar("T")
BLOCKS = "userblocks.runtime_blocks"


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (DaemonUnreachable, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class RunningDaemon:
    """``pipelined --graph FILE`` as a child process with its own instance and socket."""

    def __init__(self, graph_text: str | None, instance: str | None = None, *extra: str):
        self.dir = Path(tempfile.mkdtemp(prefix="pd", dir="/tmp"))  # AF_UNIX paths are short
        self.instance = instance or "t" + secrets.token_hex(3)
        self.socket = self.dir / "ctl.sock"
        self.graph = self.dir / "graph.toml"
        self.log = self.dir / "daemon.log"
        self.extra = list(extra)
        if graph_text is not None:
            self.graph.write_text(graph_text)
        self.proc: subprocess.Popen | None = None

    def start(self) -> RunningDaemon:
        args = [sys.executable, "-m", "pipelined.daemon.main", "--instance", self.instance]
        args += ["--socket", str(self.socket), "--state-dir", str(self.dir / "state")]
        if self.graph.exists():
            args += ["--graph", str(self.graph)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # in its folder: relative paths land there
                args + self.extra, stdout=log, stderr=log, cwd=self.dir, start_new_session=True
            )
        return self

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def call(self, cmd: str, **args: Any) -> Any:
        with self.client() as c:
            return c.call(cmd, **args)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def block(self, name: str) -> dict[str, Any]:
        return next(b for b in self.status()["blocks"] if b["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (b := self.block(name))["state"] == state and b, timeout, f"{name} {state}"
        )

    def wait_all_running(self, timeout: float = 90) -> dict[str, Any]:
        return wait_for(
            lambda: (
                (s := self.status()) and all(b["state"] == "RUNNING" for b in s["blocks"]) and s
            ),
            timeout,
            "every block RUNNING",
        )

    def runs(self) -> set[str]:
        return runs_of(self.instance)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the daemon's own clean stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Whatever happened, leave no process and no shared memory behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for run in self.runs():  # workers of a killed daemon remove these themselves
            wait_for(lambda r=run: r not in self.runs(), 15, f"run {run} to be cleaned up")
        for run in self.runs():
            unlink_run(RunNames(self.instance, run))
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_pids(instance: str) -> list[int]:
    """Every worker process of an instance, found by its command line."""
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "pipelined.workers" in cmd and any(instance in a for a in cmd[-1:]):
            pids.append(p.info["pid"])
    return pids


def graph(*blocks: str, supervisor: str = "") -> str:
    """A graph file of ``blocks``, with [supervisor] defaults if given."""
    head = f"[supervisor]\n{supervisor}\n" if supervisor else ""
    return head + "\n".join(blocks)


def counter(name: str = "count", fps: float = 50, extra: str = "") -> str:
    return f'[blocks.{name}]\ntype = "{BLOCKS}:Counter"\nfps = {fps}\n{extra}\n'


def invert(name: str, source: str, extra: str = "") -> str:
    return f'[blocks.{name}]\ntype = "{BLOCKS}:Invert"\ninput = "{source}"\n{extra}\n'


def tally(name: str, source: str, path: Path, extra: str = "") -> str:
    return (
        f'[blocks.{name}]\ntype = "{BLOCKS}:Tally"\ninput = "{source}"\npath = "{path}"\n{extra}\n'
    )


def os_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
