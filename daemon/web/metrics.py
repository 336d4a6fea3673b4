"""``/metrics``: the supervisor's status in Prometheus' text format, read at scrape time.

Nothing is counted twice: the collector turns the same status object pipectl shows into
metric families when Prometheus asks, so a scrape costs the daemon one status and one
``/proc`` read per worker (its CPU seconds), no background work. Counters that come from
a worker's heartbeat (frames, drops, busy time, CPU seconds) restart at 0 with the worker,
which Prometheus' ``rate()`` handles as a counter reset.

Processing time is a histogram whose buckets the workers count themselves, per call of
the block's code, in their heartbeat (workers/ipc/heartbeat.py, BUCKETS_S). For a source a
call includes waiting for its device or its pacing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psutil
from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from pipelined.workers.ipc.heartbeat import BUCKETS_S

from ..states import State

if TYPE_CHECKING:
    from ..app import Daemon


class DaemonCollector(Collector):
    """Metric families of one daemon: its blocks, its wires, itself."""

    def __init__(self, daemon: Daemon, version: str, live_viewers: Callable[[], int]):
        self.daemon = daemon
        self.version = version
        self.live_viewers = live_viewers
        self.started = time.time() - (time.monotonic() - daemon.supervisor.started)

    def collect(self) -> Iterator[Metric]:
        supervisor = self.daemon.supervisor
        status = supervisor.status(supervisor.every())
        yield from self._daemon(status)
        yield from self._blocks(status["blocks"])
        yield from self._wires(status["wires"])
        yield from self._remote_wires(status.get("remote_wires", []))
        yield from self._events(status)

    def _daemon(self, status: dict) -> Iterator[Metric]:
        info = InfoMetricFamily("pipelined_daemon", "The daemon's version, instance and run")
        info.add_metric(
            [],
            {
                "version": self.version,
                "pipelined_instance": status["instance"],
                "run": status["run"],
            },
        )
        yield info
        yield GaugeMetricFamily(
            "pipelined_daemon_uptime_seconds",
            "Seconds since the daemon started",
            value=status["uptime_s"],
        )
        yield GaugeMetricFamily(
            "pipelined_daemon_start_time_seconds",
            "When the daemon started, Unix time",
            value=self.started,
        )
        yield GaugeMetricFamily(
            "pipelined_http_live_viewers",
            "Live wire views open on the page",
            value=self.live_viewers(),
        )

    def _blocks(self, blocks: list[dict]) -> Iterator[Metric]:
        b = ["block"]
        state = GaugeMetricFamily(
            "pipelined_block_state",
            "1 for the block's current state, 0 for the others",
            labels=["block", "type", "state"],
        )
        restarts = CounterMetricFamily(
            "pipelined_block_restarts", "Restarts after crashes or hangs", labels=b
        )
        frames_in = CounterMetricFamily(
            "pipelined_block_frames_in", "Frames the worker took in", labels=b
        )
        frames_out = CounterMetricFamily(
            "pipelined_block_frames_out",
            "Frames the worker sent out (a sink: delivered out of the graph, written or served)",
            labels=b,
        )
        fps_in = GaugeMetricFamily(
            "pipelined_block_input_frames_per_second",
            "Frames in per second, last second",
            labels=b,
        )
        fps_out = GaugeMetricFamily(
            "pipelined_block_output_frames_per_second",
            "Frames out per second, last second",
            labels=b,
        )
        missed = CounterMetricFamily(
            "pipelined_block_missed_frames",
            "Frames lost because the block could not keep up: its first input's frames that"
            " went by while it was busy, frames overwritten while it worked, packets lapped",
            labels=b,
        )
        skipped = CounterMetricFamily(
            "pipelined_block_skipped_frames",
            "Frames let go by design: later inputs' frames it did not sample, and what it"
            " thinned to its own rate; not a loss",
            labels=b,
        )
        busy = HistogramMetricFamily(
            "pipelined_block_processing_seconds",
            "Time in the block's code per call (a source's includes waiting for its frame)",
            labels=b,
        )
        cpu = CounterMetricFamily(
            "pipelined_block_cpu_seconds", "CPU time of the worker process", labels=b
        )
        cpu_ratio = GaugeMetricFamily(
            "pipelined_block_cpu_usage_ratio",
            "CPU use over the last second; 1 = one core",
            labels=b,
        )
        rss = GaugeMetricFamily(
            "pipelined_block_resident_memory_bytes", "Resident memory of the worker", labels=b
        )
        uptime = GaugeMetricFamily(
            "pipelined_block_uptime_seconds", "Seconds the worker has been RUNNING", labels=b
        )
        for block in blocks:
            name = [block["name"]]
            for s in State:
                state.add_metric(
                    [block["name"], block["type"], s.value],
                    1.0 if block["state"] == s.value else 0.0,
                )
            restarts.add_metric(name, block["restarts"])
            frames_in.add_metric(name, block["frames_in"])
            frames_out.add_metric(name, block["frames_out"])
            fps_in.add_metric(name, block["fps_in"])
            fps_out.add_metric(name, block["fps"])
            missed.add_metric(name, block["missed"])
            skipped.add_metric(name, block["skipped"])
            busy.add_metric(name, _buckets(block["busy_hist"]), sum_value=block["busy_s"])
            cpu.add_metric(name, _cpu_seconds(block["pid"]))
            cpu_ratio.add_metric(name, block["cpu_percent"] / 100.0)
            rss.add_metric(name, block["rss_bytes"])
            uptime.add_metric(name, block["uptime_s"])
        yield from (state, restarts, frames_in, frames_out, fps_in, fps_out, missed, skipped)
        yield busy
        yield from (cpu, cpu_ratio, rss, uptime)

    def _wires(self, wires: list[dict]) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "pipelined_wire_frames", "Frames written to the wire", labels=["wire"]
        )
        missed = CounterMetricFamily(
            "pipelined_wire_missed_frames",
            "Frames that went by a reader the wire paces (its first input) while it was busy",
            labels=["wire", "reader"],
        )
        skipped = CounterMetricFamily(
            "pipelined_wire_skipped_frames",
            "Frames a reader that samples the wire (a later input) let go by design",
            labels=["wire", "reader"],
        )
        for wire in wires:
            frames.add_metric([wire["name"]], wire["frames"])
            for reader, count in wire["missed"].items():
                missed.add_metric([wire["name"], reader], count)
            for reader, count in wire["skipped"].items():
                skipped.add_metric([wire["name"], reader], count)
        yield from (frames, missed, skipped)

    def _remote_wires(self, wires: list[dict]) -> Iterator[Metric]:
        """Wires that leave the box, as the Zenoh link reports them."""
        labels = ["block", "direction", "key"]
        up = GaugeMetricFamily(
            "pipelined_remote_wire_up",
            "1 while the remote wire sends or receives, else 0; its state is a label",
            labels=[*labels, "state", "peer"],
        )
        frames = CounterMetricFamily(
            "pipelined_remote_wire_frames", "Frames (or packets) sent or taken", labels=labels
        )
        size = CounterMetricFamily(
            "pipelined_remote_wire_bytes", "Bytes of payload sent or taken", labels=labels
        )
        fps = GaugeMetricFamily(
            "pipelined_remote_wire_fps", "Frames a second over the last 2 s", labels=labels
        )
        rate = GaugeMetricFamily(
            "pipelined_remote_wire_bytes_per_second",
            "Bytes a second over the last 2 s",
            labels=labels,
        )
        missed = CounterMetricFamily(
            "pipelined_remote_wire_missed_frames",
            "Frames that never crossed: skipped behind a slow link, or lost on the way",
            labels=labels,
        )
        refused = CounterMetricFamily(
            "pipelined_remote_wire_refused_samples",
            "Samples refused on arrival (wrong key, kind, shape or publisher)",
            labels=labels,
        )
        for wire in wires:
            key = [str(wire.get("block")), str(wire.get("direction")), str(wire.get("key"))]
            state = str(wire.get("state"))
            moving = state in ("sending", "receiving")
            up.add_metric([*key, state, str(wire.get("peer") or "")], 1.0 if moving else 0.0)
            if "frames" not in wire:
                continue  # the link is not running: nothing counted
            frames.add_metric(key, wire["frames"])
            size.add_metric(key, wire["bytes"])
            fps.add_metric(key, wire["fps"])
            rate.add_metric(key, wire["bytes_per_s"])
            missed.add_metric(key, wire["missed"])
            refused.add_metric(key, wire.get("refused", 0))
        yield from (up, frames, size, fps, rate, missed, refused)

    def _events(self, status: dict) -> Iterator[Metric]:
        """Events per block and kind, what was dropped where, and the outlets."""
        raised = CounterMetricFamily(
            "pipelined_events",
            "Events the block raised (starts and moments)",
            labels=["block", "kind"],
        )
        dropped = CounterMetricFamily(
            "pipelined_events_dropped",
            "Events the block raised that went nowhere: over its rate, its queue full, or"
            " lines that were no event",
            labels=["block", "reason"],
        )
        for block in status["blocks"]:
            for kind, count in (block.get("events_by_kind") or {}).items():
                raised.add_metric([block["name"], kind], count)
            for reason, count in (block.get("events_dropped") or {}).items():
                dropped.add_metric([block["name"], reason], count)
        yield raised
        yield dropped
        events = status.get("events") or {}
        yield GaugeMetricFamily(
            "pipelined_events_open", "Events started and not ended", value=events.get("open", 0)
        )
        yield CounterMetricFamily(
            "pipelined_events_not_stored",
            "Event changes the store could not keep up with",
            value=events.get("not_stored", 0),
        )
        mqtt = status.get("mqtt")
        if mqtt:
            yield GaugeMetricFamily(
                "pipelined_mqtt_connected",
                "1 while connected to the broker",
                value=int(mqtt["connected"]),
            )
            yield CounterMetricFamily(
                "pipelined_mqtt_events_sent", "Events the broker acknowledged", value=mqtt["sent"]
            )
            yield CounterMetricFamily(
                "pipelined_mqtt_events_dropped",
                "Events dropped from a full queue while the broker was away or slow",
                value=mqtt["dropped"],
            )
            yield GaugeMetricFamily(
                "pipelined_mqtt_events_queued",
                "Events waiting for the broker",
                value=mqtt["queued"],
            )
            yield CounterMetricFamily(
                "pipelined_mqtt_connections",
                "Connections made to the broker",
                value=mqtt["connections"],
            )
        hooks = status.get("webhooks") or []
        if hooks:
            families = {
                key: CounterMetricFamily(f"pipelined_webhook_{key}", text, labels=["url"])
                for key, text in (
                    ("sent", "Events the URL took"),
                    ("failed", "Events given up after the retries"),
                    ("dropped", "Events dropped from a full queue"),
                )
            }
            queued = GaugeMetricFamily("pipelined_webhook_queued", "Events waiting", labels=["url"])
            for hook in hooks:
                for key, family in families.items():
                    family.add_metric([hook["url"]], hook[key])
                queued.add_metric([hook["url"]], hook["queued"])
            yield from families.values()
            yield queued


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def add_route(app: web.Application, collector: Collector) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    app.router.add_get("/metrics", metrics)


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    """The heartbeat's per-bucket counts as Prometheus's cumulative ``le`` buckets."""
    bounds = [f"{b:g}" for b in BUCKETS_S] + ["+Inf"]
    counts = counts or [0] * len(bounds)
    return list(zip(bounds, itertools.accumulate(counts), strict=True))
