"""Frames missed and frames skipped, counted apart: a non-zero loss means a problem.

A block missed a frame when it could not keep up: its first input (which paces it) sent
one it never read, or a frame was overwritten while it worked. It skipped a frame by
design when it sampled a later input (the newest frame is all it wants) or a sink let
one go, thinning to its own rate. Status, `pipectl wires`, /metrics and the page show
both, from the same counters.
"""

from __future__ import annotations

from pathlib import Path

from harness.daemon import wait_for
from harness.graphs import BLOCKS, counter, graph
from test_metrics import scrape, value
from test_web_support import web_daemon


def losses_graph(tally: Path) -> str:
    return graph(
        counter("count", fps=100),
        counter("tick", fps=5),
        f'[blocks.slow]\ntype = "{BLOCKS}:Slow"\ninput = "count"\ndelay = 0.05\n',
        f'[blocks.pair]\ntype = "{BLOCKS}:Tally"\ninputs = ["tick", "count"]\npath = "{tally}"\n',
    )


def test_a_slow_block_misses_and_a_sampled_input_is_skipped(tmp_path: Path) -> None:
    with web_daemon(losses_graph(tmp_path / "tally")) as (d, url):

        def counted() -> dict | None:
            s = d.status()
            blocks = {b["name"]: b for b in s["blocks"]}
            ok = blocks["slow"]["missed"] > 0 and blocks["pair"]["skipped"] > 0
            return s if ok else None

        status = wait_for(counted, 60, "slow to miss frames and pair to skip some")
        blocks = {b["name"]: b for b in status["blocks"]}
        # 100 fps into a block that takes 50 ms a frame: it misses about half, skips none.
        assert blocks["slow"]["skipped"] == 0
        # pair is paced by tick (5 fps) and samples count (100 fps): count's frames between
        # are skipped by design; it has nothing to keep up with.
        [wire] = [w for w in status["wires"] if w["name"] == "count"]
        assert set(wire["missed"]) == {"slow"} and set(wire["skipped"]) == {"pair"}
        assert wire["missed"]["slow"] > 0 and wire["skipped"]["pair"] > 0
        [tick] = [w for w in status["wires"] if w["name"] == "tick"]
        assert set(tick["missed"]) == {"pair"} and tick["skipped"] == {}

        wires = d.pipectl("wires", timeout=30).stdout
        header, row = (
            wires.splitlines()[0],
            next(line for line in wires.splitlines() if line.startswith("count ")),
        )
        assert header.split()[-2:] == ["MISSED", "SKIPPED"]
        assert row.split()[-2].startswith("slow:") and row.split()[-1].startswith("pair:")

        samples = scrape(url)
        assert value(samples, "pipelined_block_missed_frames_total", block="slow") > 0
        assert value(samples, "pipelined_block_skipped_frames_total", block="pair") > 0
        assert value(samples, "pipelined_wire_missed_frames_total", wire="count", reader="slow")
        assert value(samples, "pipelined_wire_skipped_frames_total", wire="count", reader="pair")
