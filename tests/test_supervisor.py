"""The supervisor with real daemons and workers: restarts, give-ups, hangs, daemon death."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from harness.daemon import RunningDaemon, wait_for, worker_pids
from harness.graphs import BLOCKS, counter, graph, invert, tally

from pipelined.ctl.protocol import CommandError
from pipelined.workers.ipc.liveness import start_time
from pipelined.workers.ipc.segment import unlink_run

FAST = "backoff_initial = 0.05\nrestart_window = 60.0\n"


@pytest.fixture
def chain(tmp_path):
    """count -> inv -> sink, running."""
    d = RunningDaemon(
        graph(
            counter(), invert("inv", "count"), tally("sink", "inv", tmp_path / "t"), supervisor=FAST
        )
    ).start()
    try:
        d.wait_all_running()
        yield d
    finally:
        d.close()


def pids(d: RunningDaemon) -> dict[str, int]:
    return {b["name"]: b["pid"] for b in d.status()["blocks"]}


def test_killed_worker_comes_back_and_nobody_else_restarts(chain, tmp_path):
    before = pids(chain)
    os.kill(before["inv"], signal.SIGKILL)
    back = wait_for(
        lambda: (b := chain.block("inv"))["state"] == "RUNNING" and b["pid"] != before["inv"] and b,
        60,
        "inv to be RUNNING with a new pid",
    )
    assert back["restarts"] == 1
    assert back["last_exit"]["signal"] == "SIGKILL"
    after = pids(chain)
    assert after["count"] == before["count"] and after["sink"] == before["sink"]
    assert [b["restarts"] for b in chain.status()["blocks"] if b["name"] != "inv"] == [0, 0]
    # The reader of the restarted block carries on: its tally keeps growing.
    first = int((tmp_path / "t").read_text().split()[0])
    wait_for(lambda: int((tmp_path / "t").read_text().split()[0]) > first + 20, 60, "more frames")


def test_block_that_always_crashes_ends_failed_and_the_rest_runs(tmp_path):
    crash = f'[blocks.bad]\ntype = "{BLOCKS}:CrashAtOnce"\nrestart_limit = 3\n'
    d = RunningDaemon(graph(counter(), crash, supervisor=FAST)).start()
    try:
        failed = d.wait_state("bad", "FAILED", timeout=90)
        assert "restart_limit 3" in failed["reason"]
        assert failed["restarts"] == 3
        assert "this block always crashes" in failed["last_exit"]["stderr_tail"]
        assert d.block("count")["state"] == "RUNNING"
        assert d.block("count")["restarts"] == 0
    finally:
        d.close()


def test_a_crash_in_setup_says_why_in_status_with_the_traceback_once_in_the_log(tmp_path):
    crash = f'[blocks.bad]\ntype = "{BLOCKS}:CrashAtOnce"\nbackoff_initial = 1.5\n'
    d = RunningDaemon(graph(counter(), crash)).start()
    try:
        first = d.wait_state("bad", "BACKOFF", timeout=60)  # after the first crash
        why = re.fullmatch(
            r"exit code 1: crashed in setup\(\): RuntimeError: this block always crashes"
            r" \(runtime_blocks\.py, line \d+\); restarting in 1\.5 s",
            first["reason"],
        )
        assert why, first["reason"]
        shown = d.pipectl("status", timeout=30).stdout
        assert "crashed in setup(): RuntimeError: this block always crashes" in shown
        wait_for(lambda: d.block("bad")["restarts"] >= 2, 60, "two more crashes")
        d.wait_state("bad", "BACKOFF", timeout=60)
        log = d.log_text()
    finally:
        d.close()
    assert log.count("Traceback (most recent call last):") == 1, log
    assert "ERROR bad: Traceback (most recent call last):" in log  # one entry, at ERROR
    repeats = re.findall(r"bad: RuntimeError: this block always crashes \(the same traceback", log)
    assert len(repeats) >= 2


def test_a_failed_block_tries_again_after_its_pause_until_it_is_stopped(tmp_path):
    crash = f'[blocks.bad]\ntype = "{BLOCKS}:CrashAtOnce"\nrestart_limit = 1\n'
    crash += "retry_failed_after = 1.0\n"  # shorter than the window: one try per pause
    d = RunningDaemon(graph(counter(), crash, supervisor=FAST)).start()
    try:
        failed = d.wait_state("bad", "FAILED", timeout=90)
        assert failed["reason"].endswith("; trying again in 1 s")
        again = wait_for(
            lambda: (b := d.block("bad"))["restarts"] >= 2 and b["state"] == "FAILED" and b,
            90,
            "bad to be tried again after its pause, and to fail again",
        )
        assert "exited 3 times" in again["reason"]
        assert d.call("stop", blocks=["bad"])["blocks"] == [{"name": "bad", "state": "STOPPED"}]
        time.sleep(2.5)  # past the pause: the cancelled retry must not fire
        bad = d.block("bad")
        assert bad["state"] == "STOPPED" and bad["restarts"] == again["restarts"]
        assert d.block("count")["state"] == "RUNNING" and d.block("count")["restarts"] == 0
    finally:
        d.close()


def test_configuration_error_fails_at_once_without_restarts(tmp_path):
    hw = f'[blocks.hw]\ntype = "{BLOCKS}:NeedsHardware"\n'
    d = RunningDaemon(graph(counter(), hw)).start()
    try:
        failed = d.wait_state("hw", "FAILED", timeout=60)
        assert "no frobnicator on this box" in failed["reason"]
        assert failed["restarts"] == 0
        assert failed["last_exit"]["code"] == 78
    finally:
        d.close()


def test_hung_worker_is_replaced_by_the_watchdog(tmp_path):
    d = RunningDaemon(
        graph(
            counter(extra="watchdog = 1.0"), tally("sink", "count", tmp_path / "t"), supervisor=FAST
        )
    ).start()
    try:
        d.wait_all_running()
        hung = d.block("count")["pid"]
        os.kill(hung, signal.SIGSTOP)
        back = wait_for(
            lambda: (b := d.block("count"))["state"] == "RUNNING" and b["pid"] != hung and b,
            60,
            "the watchdog to replace the hung worker",
        )
        assert back["restarts"] == 1
        assert "watchdog" in back["last_exit"]["reason"]
        assert start_time(hung) is None
    finally:
        d.close()


def test_killed_daemon_leaves_nothing_and_a_new_one_starts_at_once(tmp_path):
    text = graph(counter(), invert("inv", "count"), tally("sink", "inv", tmp_path / "t"))
    old = RunningDaemon(text).start()
    new = RunningDaemon(text, instance=old.instance)
    try:
        old.wait_all_running()
        old_run = old.status()["run"]
        workers = list(pids(old).values())
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        # At once, while the old workers may still be on their way out.
        new.start()
        status = new.wait_all_running()
        assert status["run"] != old_run
        wait_for(lambda: all(start_time(p) is None for p in workers), 15, "old workers to exit")
        wait_for(lambda: new.runs() == {status["run"]}, 15, "only the new run in /dev/shm")
        new.stop()
        assert new.runs() == set()
        assert worker_pids(new.instance) == []
    finally:
        new.close()
        old.close()


def test_stop_and_start_commands_and_a_clean_sigterm(chain):
    with chain.client() as c:
        assert c.call("stop", blocks=["inv"]) == {"blocks": [{"name": "inv", "state": "STOPPED"}]}
        states = {b["name"]: b["state"] for b in c.call("status")["blocks"]}
        assert states == {"count": "RUNNING", "inv": "STOPPED", "sink": "RUNNING"}
        with pytest.raises(CommandError) as err:
            c.call("stop", blocks=["nope"])
        assert err.value.code == "no_such_block"
        assert c.call("start", blocks=["inv"])["blocks"][0]["name"] == "inv"
    chain.wait_state("inv", "RUNNING")
    with chain.client() as c:
        c.call("stop")
        assert {b["state"] for b in c.call("status")["blocks"]} == {"STOPPED"}
        assert worker_pids(chain.instance) == []
    assert chain.stop() == 0
    assert chain.runs() == set()


def test_restart_command_gives_a_new_pid(chain):
    old = chain.block("inv")["pid"]
    assert [b["name"] for b in chain.call("restart", blocks=["inv"])["blocks"]] == ["inv"]
    wait_for(
        lambda: (b := chain.block("inv"))["state"] == "RUNNING" and b["pid"] != old, 60, "restart"
    )


def test_status_reports_metrics_and_wires(chain):
    def counting():
        s = chain.status()
        inv = next(b for b in s["blocks"] if b["name"] == "inv")
        return inv["fps"] > 0 and inv["rss_bytes"] > 0 and s

    status = wait_for(counting, 30, "fps and RSS in status")
    assert status["instance"] == chain.instance
    assert status["graph"] == str(chain.graph)
    inv = next(b for b in status["blocks"] if b["name"] == "inv")
    assert set(inv) >= {
        "name", "type", "state", "pid", "restarts", "uptime_s", "fps", "fps_in", "missed",
        "skipped",
        "cpu_percent", "rss_bytes", "reason", "last_exit",
    }  # fmt: skip
    wires = {w["name"]: w for w in status["wires"]}
    assert wires["count"]["readers"] == ["inv"] and wires["count"]["frames"] > 0
    assert set(wires["inv"]["missed"]) == {"sink"} and wires["inv"]["skipped"] == {}


def test_reload_restarts_only_what_changed_and_refuses_a_bad_file(chain, tmp_path):
    before = pids(chain)
    assert chain.call("reload") == {"added": [], "removed": [], "restarted": []}
    assert pids(chain) == before  # an unchanged file restarts nothing
    text = chain.graph.read_text()
    chain.graph.write_text(text.replace("fps = 50", "fps = 40"))
    result = chain.call("reload")
    assert result["restarted"] == ["count"]
    chain.wait_all_running()
    after = pids(chain)
    assert after["count"] != before["count"]
    assert after["inv"] == before["inv"] and after["sink"] == before["sink"]
    # The new camera writes into the same wire: the untouched readers keep getting frames.
    tally = tmp_path / "t"
    seen = int(tally.read_text().split()[0])
    wait_for(lambda: int(tally.read_text().split()[0]) > seen + 20, 60, "frames after reload")
    chain.graph.write_text(text.replace("fps = 50", "fps = -1"))
    with pytest.raises(CommandError) as err:
        chain.call("reload")
    assert "fps" in err.value.message and "running graph carries on" in err.value.message
    assert pids(chain) == after
    os.kill(chain.proc.pid, signal.SIGHUP)  # a bad file by SIGHUP changes nothing either
    time.sleep(0.5)
    assert pids(chain) == after


def test_stop_during_backoff_is_never_undone_by_the_restart(tmp_path):
    slow = "backoff_initial = 2.0\nbackoff_max = 2.0\n"
    d = RunningDaemon(graph(counter(), tally("sink", "count", tmp_path / "t"), supervisor=slow))
    d.start()
    try:
        d.wait_all_running()
        os.kill(d.block("count")["pid"], signal.SIGKILL)
        d.wait_state("count", "BACKOFF", timeout=30)
        d.call("stop", blocks=["count"])
        time.sleep(3.0)  # past the backoff: the cancelled restart must not fire
        count = d.block("count")
        assert count["state"] == "STOPPED" and count["pid"] is None
        assert d.block("sink")["state"] == "RUNNING"  # its reader just waits
    finally:
        d.close()


def test_dead_runs_of_the_instance_are_removed_at_start_and_logged(tmp_path):
    from pipelined.daemon import runs
    from pipelined.workers.ipc.heartbeat import Heartbeat
    from pipelined.workers.ipc.names import RunNames
    from pipelined.workers.ipc.wire import Wire

    d = RunningDaemon(graph(counter()))
    dead = RunNames(d.instance, "deadbeef")
    Wire.create(dead, "count", 64, readers=1).close()
    Heartbeat.create(dead, "count").close()
    exited = subprocess.run(  # a daemon that claimed its run and died without cleaning up
        [sys.executable, "-c", "import sys; from pipelined.daemon import runs;"
         " from pipelined.workers.ipc.names import RunNames;"
         f" runs.claim(RunNames({d.instance!r}, 'deadbeef'))"],
        check=True,
    )  # fmt: skip
    assert exited.returncode == 0 and not runs.owner_alive(dead)
    try:
        d.start()
        status = d.wait_all_running()
        assert d.runs() == {status["run"]}
        assert "removed 4 objects of dead run deadbeef" in d.log_text()
    finally:
        d.close()
        unlink_run(dead)


def test_two_instances_run_side_by_side_without_touching_each_other(tmp_path):
    a = RunningDaemon(graph(counter(), tally("sink", "count", tmp_path / "a"))).start()
    b = RunningDaemon(graph(counter(), tally("sink", "count", tmp_path / "b"))).start()
    try:
        a.wait_all_running()
        b.wait_all_running()
        b_pids = pids(b)
        os.kill(a.block("count")["pid"], signal.SIGKILL)
        assert a.stop() == 0
        assert a.runs() == set()
        assert pids(b) == b_pids and len(b.runs()) == 1
        assert {x["state"] for x in b.status()["blocks"]} == {"RUNNING"}
    finally:
        a.close()
        b.close()


def test_ctrl_c_in_a_terminal_stops_the_graph_in_order(tmp_path):
    """SIGINT to the whole foreground process group, as a terminal sends it."""
    d = RunningDaemon(
        graph(counter(), invert("inv", "count"), tally("sink", "inv", tmp_path / "t"))
    )
    d.start()
    try:
        d.wait_all_running()
        workers = list(pids(d).values())
        os.killpg(d.proc.pid, signal.SIGINT)
        assert d.proc.wait(60) == 0
        assert "BACKOFF" not in d.log_text()  # no block was restarted on the way out
        assert all(start_time(p) is None for p in workers)
        assert d.runs() == set()
    finally:
        d.close()


def test_a_worker_that_cannot_be_launched_fails_with_the_reason(names):
    """Graph loading refuses parameters too long for a command line; should a launch
    fail anyway (no memory, no file descriptors), the block ends FAILED, not STARTING."""
    from pipelined.daemon.graph import parse_graph
    from pipelined.daemon.process import worker_args
    from pipelined.daemon.watcher import Watcher
    from pipelined.workers.ipc.heartbeat import Heartbeat

    graph = parse_graph(counter(), "t.toml")
    spec = graph.blocks["count"]
    args = worker_args(names, spec, graph)
    args.params = {**args.params, "label": "x" * 200_000}  # past the kernel's 128 KiB
    block = Watcher(spec, args, Heartbeat.create(names, "count"))

    async def start() -> None:
        block.start()

    asyncio.run(start())
    assert block.state == "FAILED" and block.pid is None
    assert "cannot launch the worker" in block.reason and "131,071" in block.reason
    block.heartbeat.close()


def test_a_worker_whose_pidfd_cannot_be_opened_fails_and_leaves_no_process(names, monkeypatch):
    """Launched, but no pidfd (out of descriptors): the block must not stay STARTING with
    nobody watching; the worker is killed and reaped, the block FAILED with the reason."""
    from pipelined.daemon.graph import parse_graph
    from pipelined.daemon.process import worker_args
    from pipelined.daemon.watcher import Watcher
    from pipelined.workers.ipc.heartbeat import Heartbeat

    graph = parse_graph(counter(), "t.toml")
    spec = graph.blocks["count"]
    block = Watcher(spec, worker_args(names, spec, graph), Heartbeat.create(names, "count"))
    launched: list[int] = []

    def no_pidfd(pid: int) -> int:
        launched.append(pid)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    async def start() -> None:
        block.start()

    asyncio.run(start())
    assert block.state == "FAILED" and block.pid is None
    assert "Too many open files" in block.reason
    assert launched and start_time(launched[0]) is None  # killed and reaped
    block.heartbeat.close()
