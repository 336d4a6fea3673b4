"""/metrics from a real daemon: Prometheus' own parser reads it, and its counters move."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from harness.daemon import wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families
from test_web_support import get, web_daemon

GRAPH = """
[supervisor]
backoff_initial = 0.05

[blocks.camera]
type = "camera"
source = "testsrc"
size = [320, 240]
fps = 30

[blocks.red]
type = "color_filter"
input = "camera"
"""

COUNTERS = [
    "pipelined_block_restarts",
    "pipelined_block_frames_in",
    "pipelined_block_frames_out",
    "pipelined_block_missed_frames",
    "pipelined_block_skipped_frames",
    "pipelined_block_cpu_seconds",
    "pipelined_wire_frames",
    "pipelined_wire_missed_frames",
    "pipelined_wire_skipped_frames",
]
GAUGES = [
    "pipelined_block_state",
    "pipelined_block_input_frames_per_second",
    "pipelined_block_output_frames_per_second",
    "pipelined_block_cpu_usage_ratio",
    "pipelined_block_resident_memory_bytes",
    "pipelined_block_uptime_seconds",
    "pipelined_daemon_uptime_seconds",
    "pipelined_daemon_start_time_seconds",
    "pipelined_http_live_viewers",
]


@pytest.fixture(scope="module")
def daemon():
    with web_daemon(GRAPH) as running:
        yield running


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample by (name, sorted labels); also checks the families' types."""
    status, headers, body = get(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.name.startswith("pipelined_"), family.name
        if family.name in COUNTERS:
            assert family.type == "counter", family.name
        elif family.name in GAUGES:
            assert family.type == "gauge", family.name
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_parse_name_everything_and_move(daemon):
    _, url = daemon
    first = wait_for(  # psutil samples each worker once a second
        lambda: (
            (s := scrape(url))
            and value(s, "pipelined_block_resident_memory_bytes", block="camera") > 10e6
            and s
        ),
        10,
        "the camera's memory to be sampled",
    )
    names = {name for name, _ in first}
    for family in COUNTERS:
        if family != "pipelined_wire_skipped_frames":  # no reader samples a wire here
            assert family + "_total" in names, family  # (test_losses.py has one that does)
    for family in GAUGES:
        assert family in names, family
    assert "pipelined_block_processing_seconds_sum" in names
    assert "pipelined_block_processing_seconds_count" in names
    assert "pipelined_daemon_info" in names
    assert value(first, "pipelined_block_state", block="red", type="color_filter", state="RUNNING")
    assert not value(
        first, "pipelined_block_state", block="red", type="color_filter", state="FAILED"
    )
    time.sleep(1.5)
    second = scrape(url)
    for name, labels in (
        ("pipelined_block_frames_out_total", {"block": "camera"}),
        ("pipelined_block_frames_in_total", {"block": "red"}),
        ("pipelined_block_frames_out_total", {"block": "red"}),
        ("pipelined_block_processing_seconds_count", {"block": "red"}),
        ("pipelined_block_processing_seconds_sum", {"block": "red"}),
        ("pipelined_block_cpu_seconds_total", {"block": "red"}),
        ("pipelined_wire_frames_total", {"wire": "camera"}),
        ("pipelined_daemon_uptime_seconds", {}),
    ):
        assert value(second, name, **labels) > value(first, name, **labels), name
    # Rates and times are the benchmark's business; here they only have to be real.
    wait_for(  # a rate needs two samples a second apart; a loaded box may be late
        lambda: value(scrape(url), "pipelined_block_output_frames_per_second", block="camera"),
        10,
        "the camera's rate",
    )
    count = value(second, "pipelined_block_processing_seconds_count", block="red")
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in second.items()
        if name == "pipelined_block_processing_seconds_bucket" and ("block", "red") in labels
    )
    assert len(buckets) == 13 and buckets[-1] == (float("inf"), count)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert value(second, "pipelined_block_processing_seconds_sum", block="red") > 0


def test_a_restart_is_counted(daemon):
    d, url = daemon
    before = value(scrape(url), "pipelined_block_restarts_total", block="red")
    os.kill(d.block("red")["pid"], signal.SIGKILL)
    wait_for(
        lambda: value(scrape(url), "pipelined_block_restarts_total", block="red") == before + 1,
        30,
        "the restart in /metrics",
    )
    wait_for(
        lambda: value(
            scrape(url), "pipelined_block_state", block="red", type="color_filter", state="RUNNING"
        ),
        30,
        "red RUNNING again in /metrics",
    )


def test_openmetrics_when_asked(daemon):
    _, url = daemon
    status, headers, body = get(url + "/metrics", {"Accept": "application/openmetrics-text"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics(body.decode())}
    assert families["pipelined_block_restarts"].type == "counter"
    assert families["pipelined_daemon"].type == "info"


def test_status_and_metrics_show_the_same_figures(daemon):
    """pipectl's status, the page's /api/status and /metrics are one status object: taken
    within the same second (the workers are sampled once a second), their rates agree."""
    d, url = daemon

    def agree() -> bool:
        status = d.status()
        page = json.loads(get(url + "/api/status")[2])["result"]
        samples = scrape(url)
        for block, shown in zip(status["blocks"], page["blocks"], strict=True):
            name = block["name"]
            figures = {
                "pipelined_block_output_frames_per_second": block["fps"],
                "pipelined_block_input_frames_per_second": block["fps_in"],
                "pipelined_block_cpu_usage_ratio": block["cpu_percent"] / 100.0,
            }
            if any(value(samples, metric, block=name) != v for metric, v in figures.items()):
                return False
            if (shown["fps"], shown["fps_in"]) != (block["fps"], block["fps_in"]):
                return False
        return status["blocks"][0]["fps"] > 0

    wait_for(agree, 30, "status, /api/status and /metrics to show the same rates")
