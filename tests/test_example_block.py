"""The README's example user block: on real frames, and in a running graph."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from harness.daemon import RunningDaemon, wait_for

from pipelined.daemon.graph import load_graph

EXAMPLES = Path(__file__).parent.parent / "examples"


def motion_block():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from motion import Motion
    finally:
        sys.path.remove(str(EXAMPLES))
    block = Motion("motion", {"threshold": 25, "min_area": 100, "color": [0, 255, 255]})
    block.setup()
    return block


def test_motion_boxes_what_moved_and_nothing_else():
    block = motion_block()
    still = np.zeros((120, 160, 3), np.uint8)
    moved = still.copy()
    moved[40:60, 70:90] = 255  # a white square appears
    block.process([still])
    out = block.process([moved])
    assert block.moving == 1
    yellow = (out[..., 0] == 0) & (out[..., 1] == 255) & (out[..., 2] == 255)
    ys, xs = np.nonzero(yellow)
    assert ys.min() < 40 and ys.max() >= 59 and xs.min() < 70 and xs.max() >= 89  # around it
    assert not yellow[:30].any() and not yellow[:, :60].any()  # nowhere else
    block.process([moved])
    assert block.moving == 0  # nothing moved since


def test_example_graph_loads_its_block_from_beside_the_file():
    graph = load_graph(EXAMPLES / "motion.toml")
    assert graph.blocks["motion"].cls.__name__ == "Motion"


def test_example_block_runs_in_a_graph():
    d = RunningDaemon((EXAMPLES / "motion.toml").read_text())
    shutil.copy(EXAMPLES / "motion.py", d.dir)  # beside the graph file, as a user keeps it
    d.start()
    try:
        d.wait_all_running()
        wait_for(lambda: d.block("motion")["fps"] > 0, 60, "motion to produce frames")
        wait_for(lambda: d.block("recorder")["fps_in"] > 0, 60, "the recorder to get them")
    finally:
        d.close()
