"""``bench/video.py --quick --json`` runs end to end and leaves nothing behind.

No speed is asserted (the suite runs on busy two-core machines; the targets live in the
bench and its numbers in bench/README.md): only that every row was measured, with
numbers that make sense for what it measures, and that the daemons, workers, ffmpeg and
temporary files are gone afterwards.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import rtsp_server
from harness.daemon import worker_pids

from pipelined.workers.ipc.segment import runs_of

pytestmark = pytest.mark.skipif((why := rtsp_server.unavailable()) is not None, reason=str(why))

BENCH = Path(__file__).resolve().parent.parent / "bench" / "video.py"
RECORD = {"copy", "copy-nosnap", "h264", "mjpeg", "ffmpeg"}
DECODE = {"none", "every", "fps5", "keyframes", "sub-none", "sub-every"}


def number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


@pytest.mark.timeout(600)
def test_quick_run_measures_every_row_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)

    record = {r["kind"]: r for r in report["record"]["rows"]}
    assert set(record) == RECORD
    for r in record.values():
        assert all(number(r[k]) for k in ("cpu_pct", "written_bytes_per_s")), r
        assert r["files_bytes_per_s"] > 0 and r["pictures_per_s"] > 0, r  # it recorded
        assert r["restarts"] == 0, r
    # Copying keeps the stream's bytes; JPEGs of every frame are far more.
    assert 0.8 < record["copy"]["bytes_vs_stream"] < 1.2
    assert record["mjpeg"]["bytes_vs_stream"] > 2
    assert {t["verdict"] for t in report["record"]["targets"]} <= {"PASS", "MISS"}

    decode = {r["kind"]: r for r in report["decode"]["rows"]}
    assert set(decode) == DECODE
    assert decode["none"]["frames_per_s"] == 0 == decode["sub-none"]["frames_per_s"]
    for kind in ("every", "fps5", "keyframes", "sub-every"):
        assert decode[kind]["frames_per_s"] > 0 and number(decode[kind]["camera_cpu_pct"])
    assert "keyframes only" in decode["keyframes"]["detail"]

    trials = report["cameras"]["trials"]
    assert [(t["way"], t["cameras"]) for t in trials] == [("main", 1), ("sub", 1)]
    for t in trials:
        assert number(t["cpu_pct"]) and t["packets_fps_min"] > 0, t
    assert len(report["cameras"]["targets"]) == 2

    # Nothing left: no daemon, worker or ffmpeg, no shared memory, no temp dir.
    assert report["instances"]
    for instance in report["instances"]:
        assert not runs_of(instance), f"/dev/shm still holds objects of {instance}"
        assert not worker_pids(instance), f"workers of {instance} still run"
    leftovers = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(report["tmp"] in arg for arg in p.info["cmdline"] or [])
    ]
    assert not leftovers, f"the bench left processes running: {leftovers}"
    assert not Path(report["tmp"]).exists()
