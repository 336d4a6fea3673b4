"""User code never runs inside the supervisor.

A user's block module may end its process at import (an argparse script), hang, start
threads, set signal handlers, open devices or print; its class's checks may do the
same. Loading a graph asks a short-lived process instead: the loader (here, the test
process, as in the daemon) gets a problem naming the block, and stays as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from harness.daemon import RunningDaemon
from harness.graphs import counter, graph

from pipelined.ctl.protocol import CommandError
from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.daemon.probe import Probe, UserTypes
from pipelined.workers.contract import EX_CONFIG

MODULES = ("exits_at_import", "hangs_at_import", "meddles_at_import", "hostile_blocks")


def user(name: str, type_: str, *lines: str) -> str:
    return "\n".join([f"[blocks.{name}]", f'type = "userblocks.{type_}"', *lines, ""])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def refused(text: str, types: UserTypes | None = None) -> list[str]:
    with pytest.raises(GraphError) as info:
        parse_graph(text, "g.toml", types=types)
    return info.value.problems


@pytest.fixture
def untouched():
    """The test process, as the daemon would be: it must end each test as it began."""
    before = {
        "threads": {t.name for t in threading.enumerate()},
        "sigterm": signal.getsignal(signal.SIGTERM),
        "path": list(sys.path),
        "env": _env(),
        "fds": len(os.listdir("/proc/self/fd")),
    }
    yield
    assert not [m for m in sys.modules if m.startswith("userblocks.") and m[11:] in MODULES]
    assert {t.name for t in threading.enumerate()} == before["threads"]
    assert signal.getsignal(signal.SIGTERM) == before["sigterm"]
    assert sys.path == before["path"]
    assert _env() == before["env"]
    assert len(os.listdir("/proc/self/fd")) == before["fds"]
    assert psutil.Process().children(recursive=True) == []  # no probe left behind


def test_a_module_that_exits_at_import_is_a_problem_not_an_exit(untouched):
    [problem] = refused(user("cam", "exits_at_import:Cam"))
    assert problem.startswith("g.toml: block 'cam': cannot import module 'userblocks.exits_at")
    assert "SystemExit: 2" in problem


def test_a_module_that_hangs_at_import_meets_a_deadline(untouched):
    t0 = time.monotonic()
    with UserTypes(Probe(import_timeout=3.0)) as types:
        text = user("a", "hangs_at_import:Cam") + user("b", "hangs_at_import:Cam")
        problems = refused(text, types)
    assert time.monotonic() - t0 < 60  # asked once for the type, not once per block
    assert len(problems) == 2
    assert all("no answer within 3 s" in p and "must not wait" in p for p in problems)


def test_a_module_with_side_effects_changes_nothing_here(untouched, tmp_path, monkeypatch):
    mark = tmp_path / "pid"
    monkeypatch.setenv("USERBLOCK_MARK", str(mark))
    g = parse_graph(user("fine", "meddles_at_import:Fine"), "g.toml")
    assert g.blocks["fine"].frame_bytes == 8 * 8 * 3
    assert g.blocks["fine"].cls.__name__ == "Fine" and not isinstance(g.blocks["fine"].cls, type)
    assert int(mark.read_text()) != os.getpid()  # it ran, elsewhere
    monkeypatch.delenv("USERBLOCK_MARK")


def test_checks_that_exit_die_hang_or_flood_are_problems(untouched):
    with UserTypes(Probe(call_timeout=3.0)) as types:
        problems = refused(
            user("exits", "hostile_blocks:ExitsInValidate")
            + user("dies", "hostile_blocks:DiesInValidate")
            + user("hangs", "hostile_blocks:HangsInValidate")
            + user("check", "hostile_blocks:HangsInCheck", "x = 2")
            + user("huge", "hostile_blocks:HugeProblems"),
            types,
        )
    said = dict(p.split(": ", 2)[1:] for p in problems)
    assert said["block 'exits'"] == (
        "ExitsInValidate.validate failed: SystemExit: validate would rather end the program"
    )
    assert said["block 'dies'"] == (
        "DiesInValidate.validate failed: the process asking it exited with status 5"
    )
    assert said["block 'hangs'"] == "HangsInValidate.validate failed: no answer within 3 s"
    assert said["block 'check'"] == "parameter 'x' cannot be checked: no answer within 3 s"
    huge = [p for p in problems if "'huge'" in p]
    assert len(huge) == 100 and all(len(p) < 5000 for p in huge)


def test_the_daemon_exits_78_for_a_bad_user_block_at_start_and_check_says_why(tmp_path):
    text = graph(counter(), user("cam", "exits_at_import:Cam"))
    d = RunningDaemon(text).start()
    try:
        assert d.proc.wait(60) == EX_CONFIG
        assert "cannot import module 'userblocks.exits_at_import'" in d.log_text()
        assert d.runs() == set()
    finally:
        d.close()
    path = tmp_path / "g.toml"
    path.write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "pipelined.daemon.main", "--check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == EX_CONFIG and "SystemExit: 2" in checked.stderr


def test_a_reload_with_a_bad_user_block_is_an_error_reply(tmp_path):
    d = RunningDaemon(graph(counter())).start()
    try:
        before = d.wait_all_running()
        for module in ("exits_at_import:Cam", "meddles_at_import:Fine"):
            d.graph.write_text(graph(counter(), user("cam", module)))
            if module.startswith("exits"):
                with pytest.raises(CommandError) as err:
                    d.call("reload")
                assert "cannot import module 'userblocks.exits_at_import'" in err.value.message
                assert [b["pid"] for b in d.status()["blocks"]] == [
                    b["pid"] for b in before["blocks"]
                ]
            else:  # a good block after a meddling import: the daemon is still itself
                assert d.call("reload")["added"] == ["cam"]
                d.wait_all_running()
        daemon = psutil.Process(d.proc.pid)
        assert daemon.num_threads() < 20 and "MEDDLED" not in daemon.environ()
        assert d.stop() == 0  # SIGTERM still stops it (the module ignored SIGTERM)
    finally:
        d.close()


def test_probe_processes_end_with_each_load(untouched):
    for _ in range(3):
        parse_graph(user("fine", "meddles_at_import:Fine"), "g.toml")
    assert psutil.Process().children(recursive=True) == []


def test_built_in_types_start_no_process():
    before = len(psutil.Process().children())
    text = '[blocks.cam]\ntype = "camera"\nsource = "testsrc"\nsize = [64, 48]\n'
    assert parse_graph(text, "g.toml").blocks["cam"].cls.__name__ == "Camera"
    assert len(psutil.Process().children()) == before


def test_the_probe_runs_as_a_worker_would(tmp_path, monkeypatch):
    """The same interpreter and environment (less the daemon's own), the same folder."""
    monkeypatch.setenv("PIPELINED_HTTP_TOKEN", "not-for-blocks")
    monkeypatch.chdir(tmp_path)
    with UserTypes() as types:
        block = types.resolve("userblocks.graph_blocks:Source", Path(tmp_path))
        assert block.name == "Source"
        child = psutil.Process().children()[0]
        # What it was started as, not /proc/PID/exe: under qemu-user that is qemu itself,
        # and qemu's binfmt interpreter comes first in the command line too
        started = [a for a in child.cmdline() if not a.startswith("/usr/libexec/qemu-binfmt/")]
        assert started[0] == sys.executable and child.cwd() == str(tmp_path)
        assert "PIPELINED_HTTP_TOKEN" not in child.environ()


def test_a_users_recorder_is_known_by_its_bases(tmp_path):
    from pipelined.daemon.commands.recordings import recorders

    text = '[blocks.cam]\ntype = "camera"\nsource = "testsrc"\nsize = [64, 48]\n'
    text += user("rec", "hostile_blocks:MyRecorder", 'input = "cam"', f'directory = "{tmp_path}"')
    g = parse_graph(text, "g.toml")
    assert recorders(list(g.blocks.values()), named=False) == [g.blocks["rec"]]


def test_a_users_state_path_is_placed_as_a_built_ins_is(tmp_path):
    """``state_path`` is declared in the user's class (here inherited from the recorder):
    the probe's answer carries it, and a relative folder goes under the state directory."""
    text = '[blocks.cam]\ntype = "camera"\nsource = "testsrc"\nsize = [64, 48]\n'
    text += user("rec", "hostile_blocks:MyRecorder", 'input = "cam"', 'directory = "clips"')
    g = parse_graph(text, "g.toml", state_dir=tmp_path)
    assert g.blocks["rec"].params["directory"] == str(tmp_path / "clips")
    assert parse_graph(text, "g.toml").blocks["rec"].params["directory"] == "clips"
