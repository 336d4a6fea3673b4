"""The README's block, exactly as printed, and examples/motion.py: on real frames, and in
a running graph. And the slips a block author makes, each answered by an error that says
what to write instead."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from harness.daemon import RunningDaemon, wait_for

from pipelined.daemon.graph import load_graph
from pipelined.workers.block import Block, Param
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import WireReader

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


def readme_snippet(marker: str, language: str) -> str:
    """The code block after ``<!-- marker -->`` in README.md, as printed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", text, re.S)
    assert found, f"README.md has no {language} block after <!-- {marker} -->"
    return found[1]


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_block_inverts_and_says_when_it_waits(tmp_path: Path) -> None:
    (tmp_path / "invert.py").write_text(readme_snippet("block-example", "python"))
    invert = load_module(tmp_path / "invert.py").Invert(
        "invert", {"strength": 1.0, "min_brightness": 10.0}
    )
    invert.setup()
    dark = np.full((48, 64, 3), 3, np.uint8)
    assert invert.process([dark]) is None
    assert invert.context.reason == "too dark to invert"  # what status shows
    frame = np.random.default_rng(1).integers(20, 255, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(invert.process([frame]), 255 - frame)
    assert invert.context.reason is None
    half = load_module(tmp_path / "invert.py").Invert(
        "half", {"strength": 0.5, "min_brightness": 0.0}
    )
    half.setup()
    assert np.all(np.abs(half.process([frame]).astype(int) - 127) <= 1)  # halfway: grey
    invert.close()


def test_the_readme_block_runs_in_the_readme_graph_as_printed() -> None:
    d = RunningDaemon(readme_snippet("block-example-graph", "toml"))
    (d.dir / "invert.py").write_text(readme_snippet("block-example", "python"))
    d.start()
    try:
        status = d.wait_all_running()
        invert = wait_for(lambda: (b := d.block("invert"))["fps"] > 0 and b, 60, "inverted")
        assert invert["reason"] is None and invert["last_exit"] is None
        reader = WireReader(RunNames(d.instance, status["run"]), "invert", 1)  # a spare slot
        try:
            frame = wait_for(lambda: reader.read_copy(timeout=1), 30, "a frame of invert")
        finally:
            reader.close()
        assert frame.array.shape == (480, 640, 3) and frame.array.dtype == np.uint8
        assert d.stop() == 0
        log = d.log_text()
    finally:
        d.close()
    assert "invert: inverting at strength 0.80" in log
    assert "invert: done" in log  # close() ran when the daemon stopped it


def test_reading_a_value_from_params_says_where_the_value_is() -> None:
    class Stamp(Block):
        params = {"fmt": Param(str, default="%H:%M")}

    block = Stamp("stamp", {"fmt": "%H"})
    assert block.config["fmt"] == "%H" and Stamp.params["fmt"].default == "%H:%M"
    assert "fmt" in block.params and list(block.params) == ["fmt"]  # the declarations
    with pytest.raises(
        TypeError,
        match=r"self.params\['fmt'\] is the declaration .*"
        r"self.config\['fmt'\]",
    ):
        block.params["fmt"]


def test_calling_the_log_says_how_to_log() -> None:
    block = Block("b", {})
    with pytest.raises(TypeError, match=r"self.context.log.info\(\.\.\.\)"):
        block.context.log("hello")
    block.context.log.info("hello %s", "there")  # the right way works


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
    (start,) = block.context.events  # the square's appearance: one motion event, open
    assert (start["kind"], start["phase"], start["score"]) == ("motion", "start", 1)
    assert start["frame"] is not None and start["frame"].shape == (120, 160, 3)
    block.close()  # a stop mid-event ends it
    assert [e["phase"] for e in block.context.events] == ["start", "end"]


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
