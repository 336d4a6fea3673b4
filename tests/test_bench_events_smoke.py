"""``bench/events.py --json`` runs end to end against a real mosquitto and leaves nothing
behind. No speed is asserted: the figures live in bench/README.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_broker import HAVE_MOSQUITTO

BENCH = Path(__file__).resolve().parent.parent / "bench" / "events.py"


@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="needs Debian's mosquitto")
def test_the_events_bench_runs_and_every_event_asked_for_arrives():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--seconds", "2", "--rates", "0", "30"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["target_rate"] for r in rows] == [0, 30]
    quiet, busy = rows
    assert quiet["raised_per_s"] == 0 and quiet["samples"] == 0
    assert busy["samples"] > 0 and busy["dropped"] == 0
    assert busy["latency_p50_ms"] is not None and busy["fps"] > 0
