"""pipectl against the stand-in daemon (tests/standin_control.py): its tables, JSON, dot,
actions, exit codes and --watch, in process and as the command.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from standin_control import (
    NAMES,
    STATUS,
    ServerThread,
)

from pipelined.ctl import format as fmt
from pipelined.ctl import logs
from pipelined.ctl.main import main
from pipelined.ctl.protocol import (
    NO_SUCH_BLOCK,
)

PIPECTL = [sys.executable, "-m", "pipelined.ctl.main"]


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
    expected = ["camera", "camera", "RUNNING", "4101", "1h02m", "0", "-", "30.0", "0", "0"]
    assert camera.split()[:12] == [*expected, "12%", "45.2M"]  # a source takes nothing in
    red = next(line for line in lines if line.startswith("red "))
    assert red.split()[6:10] == ["30.0", "30.0", "3", "0"]  # in, out, missed, skipped
    assert re.search(
        r"BACKOFF .* 3 .* exit 1, [0-9hms]+ ago: ValueError: threshold out of range", out
    )
    assert "no display: DISPLAY is not set" in out
    assert "\x1b" not in out  # a worker's stderr cannot drive the terminal
    assert re.search(r"^camera\s+camera\s+red, edges\s+111750\s+red:0 edges:17\s+-$", out, re.M)
    assert re.search(r"^edges\s+edges\s+screen\s+111700\s+-\s+screen:40$", out, re.M)


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
    assert "WIRE    WRITER  READERS     FRAMES  MISSED          SKIPPED" in (
        capsys.readouterr().out
    )


def test_exit_codes_of_the_command(server: ServerThread, tmp_path: Path) -> None:
    env = {"PIPELINED_SOCKET": str(server.path)}
    assert pipectl("status", env=env).returncode == 0
    done = pipectl("stop", "nosuch", env=env)
    assert done.returncode == 1 and "nosuch" in done.stderr
    assert pipectl(env=env).returncode == 2
    done = pipectl("--socket", str(tmp_path / "x.sock"), "status")
    assert done.returncode == 3 and str(tmp_path / "x.sock") in done.stderr


def test_logs_exits_1_when_it_has_nothing_to_show(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """One rule for every verb: an unknown block exits 1 (as `stop nosuch` does), and so
    does a box without a journal, at once, even with -f (which would wait forever)."""
    sock = ["--socket", str(server.path), "--instance", "nolines"]
    monkeypatch.setattr(logs, "JOURNALD_SOCKET", str(tmp_path / "no-journald"))
    assert main([*sock, "logs", "-f", "camera"]) == 1
    assert "this box has no systemd journal" in capsys.readouterr().err
    journald = tmp_path / "journald"
    journald.touch()
    monkeypatch.setattr(logs, "JOURNALD_SOCKET", str(journald))  # a journal, without our lines
    assert main([*sock, "logs", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "no lines of block 'nosuch'" in err and NO_SUCH_BLOCK in err
    assert main([*sock, "logs", "camera"]) == 0  # the daemon has it: nothing logged yet
    assert "no lines of block 'camera' of instance 'nolines' yet" in capsys.readouterr().err
    gone = ["--socket", str(tmp_path / "gone.sock"), "--instance", "nolines"]
    assert main([*gone, "logs", "camera"]) == 1
    assert "no daemon answers" in capsys.readouterr().err


@pytest.mark.skipif(os.path.exists(logs.JOURNALD_SOCKET), reason="this box has a journal")
def test_logs_follow_on_a_box_without_a_journal_says_so_and_ends() -> None:
    done = pipectl("logs", "-f", "camera")  # pipectl's own timeout: 20 s
    assert done.returncode == 1 and "no systemd journal" in done.stderr


def test_watch_refreshes_in_place(server: ServerThread) -> None:
    leader, follower = pty.openpty()
    watch = ["status", "--watch", "--interval", "0.2", "--count", "3"]
    proc = subprocess.Popen(
        [*PIPECTL, "--socket", str(server.path), *watch],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        env={**os.environ, "COLUMNS": "200", "LINES": "50"},  # room for every column
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
    # The last hour of each block's frames out, from the daemon's history: zero, then 30.
    assert "LAST HOUR" in text and "▁▁▁▁▁▁██████" in text


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
