"""The daemon-worker contract: the argv and stdin it builds, and how a worker reads them back."""

from __future__ import annotations

import io
import subprocess
import sys

from pipelined.workers.contract import (
    ENTRY,
    EX_USAGE,
    SECRET_PLACEHOLDER,
    WorkerArgs,
    launch_command,
    read_worker_args,
)


def _args(**params: object) -> WorkerArgs:
    return WorkerArgs("test", "abc123", "cam", "camera", dict(params), supervisor=(1, 2))


def test_secrets_go_to_stdin_and_come_back() -> None:
    args = _args(source="rtsp://admin:hunter2@cam/stream", token="t0k", fps=30)
    command = launch_command(args, python="/usr/bin/python3")
    assert command.argv[:3] == ["/usr/bin/python3", "-m", ENTRY]
    assert len(command.argv) == 4
    assert "hunter2" not in command.argv[3] and "t0k" not in command.argv[3]
    assert SECRET_PLACEHOLDER in command.argv[3]
    assert command.stdin is not None and b"hunter2" in command.stdin
    back = read_worker_args(command.argv[3:], io.StringIO(command.stdin.decode()))
    assert back == args


def test_no_secrets_means_nothing_on_stdin() -> None:
    args = _args(fps=30, size=[640, 480])
    command = launch_command(args)
    assert command.stdin is None
    assert read_worker_args(command.argv[3:], io.StringIO("")) == args


def test_a_worker_that_cannot_read_its_arguments_exits_with_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", ENTRY, "not the codec's"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == EX_USAGE
    assert "cannot decode the arguments" in done.stderr
    done = subprocess.run([sys.executable, "-m", ENTRY], capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_USAGE and "usage: python -m pipelined.workers" in done.stderr
