"""Measure events: how many a second one block gets to the broker, and how late.

    python bench/events.py [--seconds 10] [--rates 0 30 150 600] [--json]

A real daemon runs ``source -> ticks`` (tests/userblocks: a Counter at 30 fps and
``event_blocks:Every``, which raises ``per_frame`` moments on every frame) with
``[mqtt]`` pointed at a real mosquitto on a free port (tests/mqtt_broker.py), and
``[events] rate`` (1000, its highest) and ``burst`` high enough that the rate limit
drops nothing below 1000 a second: what is measured is the path, not the limit. A paho
subscriber in this process keeps every message on ``<prefix>/events`` with the time it
came.

For each rate (0 is the baseline: the same graph raising nothing), after 2 s to
settle, over the window:

- the graph's frame rate (``ticks``' frames_out a second, from status): it should not
  move with the event rate; and the daemon's CPU (psutil, 100 = one core);
- events raised (the block's count in status) and events that reached the subscriber
  (``start`` messages; a moment is a start and an end), a second;
- events dropped anywhere (the block's ``events_dropped``, MQTT's ``dropped``, the
  store's ``not_stored``);
- latency from the frame an event was raised on (its ``start``, the frame's time) to
  its message at the subscriber: median and p99 (nearest rank).

Each event also goes to the store (SQLite) and the log, as on a box. Speeds belong here,
never in the tests. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness.daemon import RunningDaemon, sigterm_as_interrupt  # noqa: E402
from mqtt_broker import HAVE_MOSQUITTO, Broker, Subscriber  # noqa: E402

FPS = 30
SETTLE = 2.0
GRAPH = """
[events]
rate = 1000
burst = 10000

[blocks.source]
type = "userblocks.runtime_blocks:Counter"
fps = {fps}
side = 16

[blocks.ticks]
type = "userblocks.event_blocks:Every"
input = "source"
every = {every}
per_frame = {per_frame}

[mqtt]
host = "127.0.0.1"
port = {port}
prefix = "{prefix}"
queue = 100000
"""


@dataclass
class Row:
    target_rate: int
    fps: float
    daemon_cpu: float
    raised_per_s: float
    received_per_s: float
    dropped: int
    dropped_where: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    samples: int


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def dropped_in(status: dict[str, Any]) -> dict[str, int]:
    """Events lost, by where: the block's rate and queue, MQTT's queue, the store."""
    ticks = next(b for b in status["blocks"] if b["name"] == "ticks")
    where = {k: int(v) for k, v in (ticks.get("events_dropped") or {}).items() if v}
    where["mqtt"] = int((status.get("mqtt") or {}).get("dropped", 0))
    where["not_stored"] = int((status.get("events") or {})["not_stored"])
    return {k: v for k, v in where.items() if v}


def measure(broker: Broker, rate: int, seconds: float) -> Row:
    prefix = f"bench/{secrets.token_hex(3)}"
    per_frame = max(1, round(rate / FPS))
    every = 1 if rate else 10**6
    sub = Subscriber(broker.port, (f"{prefix}/events",))
    graph = GRAPH.format(fps=FPS, every=every, per_frame=per_frame, port=broker.port,
                         prefix=prefix)  # fmt: skip
    d = RunningDaemon(graph)
    try:
        d.start()
        d.wait_all_running()
        d.until(lambda: d.status()["mqtt"]["connected"], 30, "the daemon's connection")
        time.sleep(SETTLE)
        daemon = psutil.Process(d.proc.pid)
        cpu0, before, t0 = _cpu(daemon), d.status(), time.time()
        time.sleep(seconds)
        cpu1, after, t1 = _cpu(daemon), d.status(), time.time()
        time.sleep(1.0)  # the last events of the window on their way
        ticks0 = next(b for b in before["blocks"] if b["name"] == "ticks")
        ticks1 = next(b for b in after["blocks"] if b["name"] == "ticks")
        span = t1 - t0
        starts = []
        for message in sub.on(f"{prefix}/events"):
            body = json.loads(message.payload)
            if body["type"] == "start" and t0 <= body["event"]["start"] < t1:
                starts.append(message.at - body["event"]["start"])
        late = [s * 1000 for s in starts]
        return Row(
            target_rate=rate,
            fps=(ticks1["frames_out"] - ticks0["frames_out"]) / span,
            daemon_cpu=100 * (cpu1 - cpu0) / span,
            raised_per_s=(ticks1["events"] - ticks0["events"]) / span,
            received_per_s=len(starts) / span,
            dropped=sum(dropped_in(after).values()),
            dropped_where=dropped_in(after),
            latency_p50_ms=statistics.median(late) if late else None,
            latency_p99_ms=nearest_rank(late, 0.99) if late else None,
            samples=len(late),
        )
    finally:
        d.close()
        sub.close()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def print_table(rows: list[Row]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    print(f"{'events/s asked':>14} {'graph fps':>9} {'daemon CPU %':>12} {'raised/s':>9}"
          f" {'at broker/s':>11}"
          f" {'dropped':>7} {'p50 ms':>7} {'p99 ms':>7} {'n':>6}")  # fmt: skip
    for r in rows:
        print(f"{r.target_rate:>14} {r.fps:>9.2f} {r.daemon_cpu:>12.1f} {r.raised_per_s:>9.1f}"
              f" {r.received_per_s:>11.1f}"
              f" {r.dropped:>7} {ms(r.latency_p50_ms):>7} {ms(r.latency_p99_ms):>7}"
              f" {r.samples:>6}  {_where(r.dropped_where)}")  # fmt: skip


def _where(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="window per rate (10)")
    parser.add_argument("--rates", type=int, nargs="+", default=[0, 30, 150, 600])
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    opts = parser.parse_args(argv)
    if not HAVE_MOSQUITTO:
        print("bench/events.py needs mosquitto (apt-get install mosquitto)", file=sys.stderr)
        return 2
    rows = []
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="plb-events-") as folder:
        broker = Broker(Path(folder) / "broker")
        try:
            broker.start()
            for rate in opts.rates:
                rows.append(measure(broker, rate, opts.seconds))
        finally:
            broker.stop()
    if opts.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return 0
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{now}, commit {commit}, {platform.machine()}, Python {platform.python_version()},"
          f" {opts.seconds:g} s per rate, source at {FPS} fps")  # fmt: skip
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
