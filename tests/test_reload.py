"""A reload is all or nothing: everything the new graph needs is made before anything stops.

A reload that cannot make what it needs (a name taken in /dev/shm, /dev/shm full) leaves
the old graph running exactly as it was and says why, over pipectl and over SIGHUP.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest
from harness.daemon import RunningDaemon, wait_for
from harness.graphs import counter, graph, invert, tally

from pipelined.ctl.protocol import CommandError
from pipelined.workers.ipc.names import SHM_DIR, RunNames
from pipelined.workers.ipc.segment import run_entries

FAST = "backoff_initial = 0.05\n"


def chain_text(tmp_path, *extra: str) -> str:
    return graph(
        counter(),
        invert("inv", "count"),
        tally("sink", "inv", tmp_path / "t"),
        *extra,
        supervisor=FAST,
    )


def grown(tmp_path) -> str:
    """The chain with one more reader of count: count's wire is made anew, extra is new."""
    return chain_text(tmp_path, invert("extra", "count"))


def snapshot(d: RunningDaemon) -> dict:
    """What must not change: each block's pid and state, the graph, the run's objects."""
    status = d.status()
    names = RunNames(d.instance, status["run"])
    return {
        "blocks": {b["name"]: (b["pid"], b["state"], b["restarts"]) for b in status["blocks"]},
        "graph": d.call("graph"),
        "wires": {w["name"]: (w["readers"], w["slot_bytes"]) for w in status["wires"]},
        "entries": run_entries(names),
    }


@pytest.fixture
def chain(tmp_path):
    d = RunningDaemon(chain_text(tmp_path)).start()
    try:
        d.wait_all_running()
        yield d
    finally:
        d.close()


def frames_flow(d: RunningDaemon, tally_path) -> None:
    seen = int(tally_path.read_text().split()[0])
    wait_for(lambda: int(tally_path.read_text().split()[0]) > seen + 10, 60, "frames to flow")


def test_a_reload_that_adds_removes_and_rewires(chain, tmp_path):
    before = {b["name"]: b["pid"] for b in chain.status()["blocks"]}
    chain.graph.write_text(grown(tmp_path))
    result = chain.call("reload")
    assert result == {"added": ["extra"], "removed": [], "restarted": ["count", "inv"]}
    said = ": added extra (new in the file); restarted count, inv (settings or wiring changed)"
    assert f"reloaded {chain.graph}{said}" in chain.log_text()  # for a person, not a dict
    status = chain.wait_all_running()
    count = next(w for w in status["wires"] if w["name"] == "count")
    assert count["readers"] == ["inv", "extra"]
    assert chain.block("sink")["pid"] == before["sink"]
    frames_flow(chain, tmp_path / "t")
    names = RunNames(chain.instance, status["run"])
    assert not [e for e in run_entries(names) if ".next." in e]  # nothing staged is left

    chain.graph.write_text(chain_text(tmp_path))
    assert chain.call("reload")["removed"] == ["extra"]
    status = chain.wait_all_running()
    assert [b["name"] for b in status["blocks"]] == ["count", "inv", "sink"]
    assert not [e for e in run_entries(names) if e.endswith(".extra") or ".extra." in e]
    frames_flow(chain, tmp_path / "t")


def test_a_reload_starts_only_the_blocks_that_autostart(chain, tmp_path):
    """As at start: an added or changed block declared ``autostart = false`` is made (its
    wire, its heartbeat) but waits, STOPPED, until asked; the others start."""
    before = {b["name"]: b["pid"] for b in chain.status()["blocks"]}
    waits = "autostart = false"
    chain.graph.write_text(chain_text(tmp_path, invert("extra", "count", waits)))
    result = chain.call("reload")
    assert result == {"added": ["extra"], "removed": [], "restarted": ["count", "inv"]}
    said = ": added extra (new in the file); restarted count, inv (settings or wiring changed)"
    assert f"reloaded {chain.graph}{said}" in chain.log_text()  # for a person, not a dict
    chain.wait_all_running()
    extra = chain.block("extra")
    assert extra["state"] == "STOPPED" and extra["pid"] is None
    assert extra["reason"] == "autostart = false: not started until asked (pipectl start extra)"
    assert chain.block("count")["pid"] != before["count"]  # rewired: a reader more
    frames_flow(chain, tmp_path / "t")
    chain.call("start", blocks=["extra"])
    chain.wait_state("extra", "RUNNING")

    blocks = [invert("inv", "count", waits), tally("sink", "inv", tmp_path / "t")]
    blocks.append(invert("extra", "count", waits))
    chain.graph.write_text(graph(counter(), *blocks, supervisor=FAST))
    assert chain.call("reload")["restarted"] == ["inv"]
    inv = chain.wait_state("inv", "STOPPED")
    assert inv["reason"].startswith("autostart = false: not started until asked")
    assert chain.block("extra")["state"] == "RUNNING"  # unchanged: as it was, started


def test_a_name_taken_fails_the_reload_and_the_old_graph_carries_on(chain, tmp_path):
    names = RunNames(chain.instance, chain.status()["run"])
    taken = f"{SHM_DIR}/{names.beat('extra')[1:]}"  # a name the new graph needs
    with open(taken, "x") as f:
        f.write("someone else's")
    before = snapshot(chain)
    chain.graph.write_text(grown(tmp_path))
    with pytest.raises(CommandError) as err:
        chain.call("reload")
    assert "running graph carries on" in err.value.message
    assert f"{taken} exists already" in err.value.message
    assert snapshot(chain) == before
    frames_flow(chain, tmp_path / "t")
    assert chain.call("stop", blocks=["inv"])["blocks"] == [{"name": "inv", "state": "STOPPED"}]
    chain.call("start", blocks=["inv"])
    chain.wait_all_running()

    mark = len(chain.log_text())
    os.kill(chain.proc.pid, signal.SIGHUP)  # the same, by SIGHUP: said in the log
    wait_for(lambda: "exists already" in chain.log_text()[mark:], 30, "the reason in the log")
    after = snapshot(chain)
    assert after["graph"] == before["graph"] and after["wires"] == before["wires"]
    assert "Traceback" not in chain.log_text() and "never retrieved" not in chain.log_text()

    os.unlink(taken)  # once the name is free, the same file reloads
    assert chain.call("reload")["added"] == ["extra"]
    chain.wait_all_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="a /dev/shm of its own needs a mount namespace")
def test_dev_shm_full_fails_the_reload_and_the_old_graph_carries_on(tmp_path):
    """/dev/shm out of inodes: the loader's free-space check passes, creating fails."""
    mount = 'mount -t tmpfs -o size=64m,nr_inodes=200 tmpfs /dev/shm && exec "$@"'
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh"]
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    d = RunningDaemon(chain_text(tmp_path)).start(wrapper)
    try:
        d.wait_all_running()
        shm = f"/proc/{d.proc.pid}/root{SHM_DIR}"
        filled = 0
        try:
            while True:  # every inode left, so the next entry cannot be made
                open(f"{shm}/filler{filled}", "x").close()
                filled += 1
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        before = snapshot_in(d, shm)
        d.graph.write_text(grown(tmp_path))
        with pytest.raises(CommandError) as err:
            d.call("reload")
        assert "running graph carries on" in err.value.message
        assert "no room in /dev/shm" in err.value.message
        assert snapshot_in(d, shm) == before
        frames_flow(d, tmp_path / "t")
        for i in range(filled):
            os.unlink(f"{shm}/filler{i}")
        assert d.call("reload")["added"] == ["extra"]
        d.wait_all_running()
    finally:
        d.close()


def snapshot_in(d: RunningDaemon, shm: str) -> dict:
    """``snapshot``, with the entries read from the daemon's own /dev/shm."""
    snap = snapshot(d)
    snap["entries"] = sorted(e for e in os.listdir(shm) if e.startswith(("pipelined.", "sem.")))
    return snap
