"""``bench/supervisor.py --quick --json`` runs end to end and leaves nothing behind.

No speed is asserted: the suite runs on busy two-core machines, where a target missed
says more about the neighbours than about the daemon. The targets live in the bench.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipelined.workers.ipc.segment import runs_of

BENCH = Path(__file__).resolve().parent.parent / "bench" / "supervisor.py"
ROWS = {
    "daemon_cpu",
    "demo_workers_cpu",
    "status_cli",
    "status_client",
    "daemon_kill_clean_demo",
    "kill_to_running",
    "kill_to_launch",
    "kill_to_ready",
    "kill_notice",
    "start_20",
    "start_20_answers",
    "daemon_kill_clean_20",
}
SUPERVISORD_ROWS = {"sd_kill_to_running", "sd_kill_to_ready_polled", "sd_kill_to_ready"}


def _has_supervisor() -> bool:
    # bench/ is not on sys.path here, so this finds the supervisord package, not the bench.
    return importlib.util.find_spec("supervisor") is not None


@pytest.mark.timeout(600)
def test_quick_run_reports_every_row_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    rows = {r["key"]: r for r in report["rows"]}
    assert set(rows) == ROWS | (SUPERVISORD_ROWS if _has_supervisor() else set())
    for key, r in rows.items():
        assert all(math.isfinite(v) and v > 0 for v in (r["median"], r["p99"])), (key, r)
        assert r["n"] >= 1 and r["verdict"] in ("PASS", "MISS", "-"), (key, r)
    assert rows["kill_to_running"]["n"] == 5
    assert report["instances"]
    for instance in report["instances"]:
        assert not runs_of(instance), f"/dev/shm still holds objects of {instance}"
    # Daemons and workers carry their instance on the command line, supervisord and its
    # program the bench's temp dir.
    marks = [*report["instances"], report["tmp"]]
    leftovers = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(m in a for a in p.info["cmdline"] or [] for m in marks)
    ]
    assert not leftovers, f"the bench left processes running: {leftovers}"
    assert not Path(report["tmp"]).exists()
