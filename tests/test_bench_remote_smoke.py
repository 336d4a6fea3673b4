"""bench/remote.py runs end to end (``--quick --json``): every row reports sane numbers,
and it leaves no namespace, process or shared memory behind. No speed is asserted; the
figures that matter are in bench/README.md. Root only, as the benchmark is."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import netns
import psutil
import pytest

from pipelined.workers.ipc.segment import all_entries

pytestmark = pytest.mark.skipif(
    (why := netns.unavailable()) is not None, reason=why or "network namespaces available"
)
ROOT = Path(__file__).resolve().parents[1]


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def _bench_entries() -> set[str]:
    """The benchmark's objects in /dev/shm (instances bza…, bzb…; others are not ours)."""
    return {
        e
        for e in all_entries()
        if e.removeprefix("sem.").startswith(("pipelined.bza", "pipelined.bzb"))
    }


def _bench_processes() -> list[str]:
    """The benchmark's daemons and workers (instances bza…, bzb…) and TCP ends, if any."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        text = " ".join(p.info["cmdline"] or [])
        if '"instance":"bz' in text or "--instance bz" in text or "remote.py _tcp-" in text:
            found.append(text)
    return found


def test_bench_remote_quick_reports_every_row_and_leaves_nothing() -> None:
    shm, spaces = _bench_entries(), _namespaces()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "remote.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    rows = {r["transport"]: r for r in report["rows"]}
    expected = {"zenoh raw block", "zenoh raw drop", "zenoh jpeg", "tcp (raw)", "tcp (jpeg)"}
    assert expected <= set(rows), sorted(rows)
    for name in ("zenoh raw block", "zenoh jpeg", "tcp (raw)", "tcp (jpeg)"):
        row = rows[name]
        assert row["size"] == "720p" and row["fps"] > 0 and row["mbytes_per_s"] > 0, row
        assert math.isfinite(row["lat_p50_ms"]) and row["lat_p50_ms"] > 0, row
        assert row["lat_p99_ms"] >= row["lat_p50_ms"], row
    for name in ("zenoh raw block", "zenoh jpeg"):
        assert rows[name]["x_tcp"] > 0 and rows[name]["cpu_b_pct"] > 0, rows[name]
    h264 = rows["zenoh h264"]
    assert h264["fps"] > 0 or h264["note"].startswith("skipped: "), h264
    assert any("of TCP's bytes/s" in v for v in report["verdicts"])
    assert _namespaces() == spaces
    assert _bench_entries() == shm
    assert not _bench_processes()
