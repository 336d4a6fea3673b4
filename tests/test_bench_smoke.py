"""bench/wire.py runs end to end: every transport reports sane numbers, nothing is left behind.

No speed is asserted: machines (and CI neighbours) are too noisy for that. The numbers
that matter are in bench/README.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("zmq", reason="bench extra not installed")
pytest.importorskip("iceoryx2", reason="bench extra not installed")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "wire.py"
TRANSPORTS = {
    "wire-view",
    "wire-copy",
    "wire-loan-view",
    "iceoryx2-view",
    "iceoryx2-copy",
    "zmq",
    "mp-queue",
    "seed-lock",
    "memcpy",
}
KEYS = {"transport", "size", "fps_per_reader", "lat_p50_ms", "lat_p99_ms", "cpu_pct", "x_memcpy"}


def _bench_entries() -> set[str]:
    """The benchmark's objects in /dev/shm (instance "bench"; other tests use their own)."""
    return {
        e for e in os.listdir("/dev/shm") if e.removeprefix("sem.").startswith("pipelined.bench.")
    }


def _finite(value: object, minimum: float = 0.0) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= minimum


def test_bench_wire_json_runs_every_transport_and_cleans_up() -> None:
    before = _bench_entries()
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--sizes", "640x480", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert sorted(r["transport"] for r in rows) == sorted(TRANSPORTS)
    for row in rows:
        name = row["transport"]
        assert row.keys() >= KEYS, name
        assert row["size"] == "640x480"
        fps = row["fps_per_reader"]
        # The seed's locked slot may starve its readers flat out: 0 frames is a result.
        assert _finite(fps) and (fps > 0 or name == "seed-lock"), row
        assert _finite(row["lat_p50_ms"]) and row["lat_p50_ms"] > 0, row
        assert _finite(row["lat_p99_ms"]) and row["lat_p99_ms"] >= row["lat_p50_ms"], row
        cpu = row["cpu_pct"]
        assert _finite(cpu["writer"]), row
        assert len(cpu["readers"]) == (0 if name == "memcpy" else 2), row
        assert all(_finite(c) for c in cpu["readers"]), row
        if fps > 0:
            assert _finite(row["x_memcpy"]) and row["x_memcpy"] > 0, row
    assert _bench_entries() <= before, "the benchmark left shared memory behind"
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline", "create_time"])
        if p.info["create_time"]
        and p.info["create_time"] >= started - 1
        and "--child" in (p.info["cmdline"] or [])
        and str(BENCH) in (p.info["cmdline"] or [])
    ]
    assert not leftovers, f"writer/reader processes still running: {leftovers}"
