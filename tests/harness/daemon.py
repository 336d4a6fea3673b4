"""A real ``pipelined`` daemon in a child process, for tests and benchmarks alike.

Each ``RunningDaemon`` has an instance name, a control socket and a folder of its own.
The folder is the daemon's working directory (a graph's relative paths land there) and
holds its graph file, its log and its state directory. ``close`` leaves no process, no
/dev/shm entry and no folder behind, whatever happened before.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psutil

from pipelined.ctl.client import Client, DaemonUnreachable
from pipelined.workers import codec
from pipelined.workers.contract import ENTRY
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.segment import runs_of, unlink_run

T = TypeVar("T")
TESTS = Path(__file__).resolve().parents[1]
TOKEN = "pipelined-test-token"
"""The token of every test daemon's page and previews ($PIPELINED_HTTP_TOKEN)."""
CLEANUP_S = 15.0  # for a dead daemon's workers to notice and remove their run


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    every: float = 0.05,
    errors: tuple[type[BaseException], ...] = (DaemonUnreachable, KeyError),
) -> T:
    """Poll ``check`` until it returns something true; fail with ``what`` after ``timeout``.

    ``errors`` raised by ``check`` count as "not yet" (a daemon still starting, a block
    not in status yet); the last one is named in the failure.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except errors as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def child_env(display: bool = False) -> dict[str, str]:
    """The environment for what a test or bench starts: tests/ on PYTHONPATH, so workers
    import the test blocks (userblocks.*), and no display unless asked for, so the
    built-in demo is the same blocks on every box."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(TESTS) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *paths])
    if not display:
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
    return env


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonExited(AssertionError):
    """The daemon ended while something waited for it to get somewhere."""


class RunningDaemon:
    """``pipelined`` as a child process: ``RunningDaemon(graph_text).start()``.

    ``graph_text`` None runs the built-in demo. ``http`` is --http's ADDR:PORT, ``args``
    more of the daemon's options; ``env`` (from ``child_env``) may be changed before
    ``start``. ``parent`` is where its folder is made.
    """

    def __init__(
        self,
        graph_text: str | None = None,
        *,
        instance: str | None = None,
        prefix: str = "t",
        http: str | None = None,
        args: Sequence[str] = (),
        display: bool = False,
        parent: str | Path = "/tmp",  # AF_UNIX paths are short
    ) -> None:
        self.instance = instance or prefix + secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix="pd", dir=parent))
        self.socket = self.dir / "ctl.sock"
        self.graph = self.dir / "graph.toml"
        self.log = self.dir / "daemon.log"
        self.args = [*(["--http", http] if http else []), *args]
        self.env = child_env(display)
        self.env.setdefault("PIPELINED_HTTP_TOKEN", TOKEN)
        if graph_text is not None:
            self.graph.write_text(graph_text)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "pipelined.daemon.main", "--instance", self.instance]
        argv += ["--socket", str(self.socket), "--state-dir", str(self.dir / "state")]
        if self.graph.exists():
            argv += ["--graph", str(self.graph)]
        return argv + self.args

    def start(self, wrapper: Sequence[str] = ()) -> RunningDaemon:
        """Launch it, ``wrapper`` (systemd-socket-activate, say) in front if given."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*wrapper, *self.command()],
                stdout=log,
                stderr=log,
                cwd=self.dir,
                env=self.env,
                start_new_session=True,  # a Ctrl-C meant for the test is not the daemon's
            )
        return self

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- asking it ----------------------------------------------------------------------

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def call(self, cmd: str, **args: Any) -> Any:
        with self.client() as c:
            return c.call(cmd, **args)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def pipectl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``pipectl ARGS`` against this daemon's socket, as a user would type it."""
        return subprocess.run(
            [sys.executable, "-m", "pipelined.ctl.main", "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def block(self, name: str) -> dict[str, Any]:
        return next(b for b in self.status()["blocks"] if b["name"] == name)

    def runs(self) -> set[str]:
        return runs_of(self.instance)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    # -- waiting for it -----------------------------------------------------------------

    def until(self, check: Callable[[], T], timeout: float, what: str) -> T:
        """``wait_for`` that gives up at once if the daemon exits, and shows its log."""

        def alive_check() -> T:
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonExited(f"the daemon exited ({self.proc.returncode})")
            return check()

        try:
            return wait_for(alive_check, timeout, what)
        except AssertionError as exc:
            tail = self.log_text()[-3000:]
            raise type(exc)(f"{exc}\n--- the end of {self.log} ---\n{tail}") from None

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        return self.until(
            lambda: (b := self.block(name))["state"] == state and b, timeout, f"{name} {state}"
        )

    def wait_all_running(self, timeout: float = 90) -> dict[str, Any]:
        """Every block RUNNING, but those with ``autostart = false``: they wait, STOPPED."""

        def settled(b: dict[str, Any]) -> bool:
            return b["state"] == ("RUNNING" if b.get("autostart", True) else "STOPPED")

        return self.until(
            lambda: (s := self.status()) and all(settled(b) for b in s["blocks"]) and s,
            timeout,
            "every block RUNNING",
        )

    # -- ending it ----------------------------------------------------------------------

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the daemon's own clean stop. Returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """SIGKILL (``kill -9``) and reap it; its workers are left to notice."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        """Whatever happened, leave no process, no shared memory and no folder behind.

        The workers of a daemon that is gone remove their run from /dev/shm themselves;
        if they have not within CLEANUP_S, it is done here and the close fails.
        """
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill()
            wait_for(lambda: not self.runs(), CLEANUP_S, f"{self.instance}'s runs to go")
        finally:
            for pid in worker_pids(self.instance):
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
            for run in self.runs():
                unlink_run(RunNames(self.instance, run))
            shutil.rmtree(self.dir, ignore_errors=True)


def worker_pids(instance: str) -> list[int]:
    """The live worker processes of ``instance``, found by their command line."""
    pids = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE or cmd[-3:-1] != ["-m", ENTRY]:
            continue
        try:
            args = codec.decode(cmd[-1])
        except ValueError:  # CodecError: not one of ours
            continue
        if isinstance(args, dict) and args.get("instance") == instance:
            pids.append(p.info["pid"])
    return pids


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to this process still runs the clean-up in ``finally`` blocks."""

    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
