"""Measure what MJPEG viewers of the preview block cost the camera: 0, 1 and 20 viewers.

    python bench/preview.py [--seconds 10] [--json]

One real daemon (``python -m pipelined.daemon.main``) runs the built-in demo without its
screen (camera 640x480 at 30 fps, colour filter, edge detector, recorder, preview), the
preview on a free loopback port. For each number of viewers the bench opens that many
``/stream/camera.mjpg`` connections (aiohttp, in this process, the preview's defaults:
15 fps cap, quality 75, full width), waits 2 s, then over ``--seconds`` measures:

- the camera's frame rate (its ``frames_out`` from status) and the frames its readers
  dropped on the camera wire;
- the preview worker's CPU (psutil ``cpu_times``, 100 = one core), and the JPEG encodes
  it made (``/stats``);
- the frames each viewer received (multipart boundaries counted), and this process's own
  CPU (the 20 viewers' side; a browser elsewhere would carry it).

The goal is that viewers cost the camera nothing. Everything is cleaned up on any exit.
See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the harness
from harness.daemon import TOKEN, RunningDaemon, free_port, sigterm_as_interrupt
from harness.graphs import demo_graph

BEARER = {"Authorization": f"Bearer {TOKEN}"}  # the harness gives the daemon this token

VIEWERS = (0, 1, 20)
BOUNDARY = b"--frame\r\n"


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def stats(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url + "/stats", headers=BEARER)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


async def viewer(session: aiohttp.ClientSession, url: str, counts: list[int], i: int) -> None:
    """Read the stream as fast as it comes, counting frames in counts[i]."""
    tail = b""
    async with session.get(url + "/stream/camera.mjpg") as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_any():
            data = tail + chunk
            counts[i] += data.count(BOUNDARY)
            tail = data[-(len(BOUNDARY) - 1) :]


def went_by(wire: dict[str, Any]) -> int:
    """Frames the wire's readers let go by: missed (readers it paces) and skipped (those
    that sample it)."""
    return sum(wire["missed"].values()) + sum(wire["skipped"].values())


async def measure(d: RunningDaemon, url: str, viewers: int, seconds: float) -> dict[str, Any]:
    counts = [0] * viewers
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout, headers=BEARER) as session:
        tasks = [asyncio.create_task(viewer(session, url, counts, i)) for i in range(viewers)]
        await asyncio.sleep(2.0)  # connected, encoding, steady
        status = await asyncio.to_thread(d.status)
        blocks = {b["name"]: b for b in status["blocks"]}
        camera_wire = next(w for w in status["wires"] if w["name"] == "camera")
        preview_pid = blocks["preview"]["pid"]
        s0 = await asyncio.to_thread(stats, url)
        t0, frames0, counts0 = time.monotonic(), blocks["camera"]["frames_out"], list(counts)
        dropped0 = went_by(camera_wire)
        cpu0, me0 = cpu_seconds(preview_pid), cpu_seconds(os.getpid())
        await asyncio.sleep(seconds)
        status = await asyncio.to_thread(d.status)
        elapsed = time.monotonic() - t0
        cpu1, me1 = cpu_seconds(preview_pid), cpu_seconds(os.getpid())
        s1 = await asyncio.to_thread(stats, url)
        received = [(c - c0) / elapsed for c, c0 in zip(counts, counts0, strict=True)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    blocks = {b["name"]: b for b in status["blocks"]}
    camera_wire = next(w for w in status["wires"] if w["name"] == "camera")
    encoded = sum(e["encoded"] for e in s1["encodings"]) - sum(
        e["encoded"] for e in s0["encodings"]
    )
    return {
        "viewers": viewers,
        "camera_fps": (blocks["camera"]["frames_out"] - frames0) / elapsed,
        "camera_wire_dropped_per_s": (went_by(camera_wire) - dropped0) / elapsed,
        "preview_cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
        "encodes_per_s": encoded / elapsed,
        "viewer_fps_mean": sum(received) / len(received) if received else None,
        "viewer_fps_min": min(received) if received else None,
        "client_cpu_percent": 100 * (me1 - me0) / elapsed,
        "seconds": elapsed,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "viewers  camera fps  vs 0 viewers  wire drops/s  preview CPU %  encodes/s"
        "  viewer fps (mean, min)  viewers' CPU %"
    )
    lines = [head]
    base = rows[0]["camera_fps"]
    for r in rows:
        viewer = (
            f"{r['viewer_fps_mean']:.1f}, {r['viewer_fps_min']:.1f}"
            if r["viewer_fps_mean"] is not None
            else "-"
        )
        lines.append(
            f"{r['viewers']:>7}  {r['camera_fps']:>10.2f}  {r['camera_fps'] - base:>+12.2f}"
            f"  {r['camera_wire_dropped_per_s']:>12.2f}  {r['preview_cpu_percent']:>13.1f}"
            f"  {r['encodes_per_s']:>9.1f}  {viewer:>22}  {r['client_cpu_percent']:>14.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="window per row")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    opts = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The recordings go to "rec" in the daemon's state directory, inside its own folder.
    with sigterm_as_interrupt(), RunningDaemon(demo_graph(port, "rec"), prefix="bp") as d:
        d.start().wait_all_running(60)
        time.sleep(2.0)
        rows = [asyncio.run(measure(d, url, n, opts.seconds)) for n in VIEWERS]
    if opts.json:
        print(json.dumps(rows, indent=1))
        return 0
    load = os.getloadavg()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores,"
        f" {platform.processor() or platform.machine()}, Python {platform.python_version()},"
        f" load {load[0]:.2f}; {opts.seconds:g} s per row"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
