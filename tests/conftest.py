"""Fixtures shared by the whole suite: unique run names, process reaping, leak checks.

Every test that creates kernel objects does so under its own run token, and the
fixtures below remove that run's objects and kill its processes even when the test
fails, so the suite leaves /dev/shm as it found it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.daemon import child_env
from standin_control import ServerThread

from pipelined.workers.ipc.names import RunNames, new_run_token
from pipelined.workers.ipc.segment import all_entries, unlink_run

TESTS = Path(__file__).parent
STANDINS = TESTS / "standins.py"

# Workers and daemons the tests start must import the test blocks (userblocks.*) too.
os.environ["PYTHONPATH"] = child_env(display=True)["PYTHONPATH"]


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite() -> Iterator[None]:
    """Fail the run if it left pipelined objects in /dev/shm."""
    before = set(all_entries())
    yield
    left = sorted(set(all_entries()) - before)
    assert not left, f"the test suite left these in /dev/shm: {left}"


@pytest.fixture
def names() -> Iterator[RunNames]:
    """A fresh run of the 'test' instance, removed from /dev/shm after the test."""
    run = RunNames("test", new_run_token())
    yield run
    unlink_run(run)


class Procs:
    """Processes a test starts; all are killed and reaped when the test ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(args, **kwargs)
        self.started.append(proc)
        return proc

    def standin(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start a role of tests/standins.py."""
        return self.start([sys.executable, str(STANDINS), *args], **kwargs)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc in self.started:
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.stop_all()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """The stand-in daemon's control server (tests/standin_control.py), on its own socket."""
    srv = ServerThread(tmp_path / "s" / "main.sock")
    yield srv
    srv.stop()
