"""The built-in motion block on real frames (OpenCV does the seeing), with the detached
context that keeps the events it raises; a running graph's motion is in test_mqtt.py
and test_clips.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelined.daemon.graph import GraphError, parse_graph
from pipelined.workers.blocks.motion import Motion

GRAPH = """
[blocks.camera]
type = "camera"

[blocks.motion]
type = "motion"
input = "camera"
"""


def scene(square_at: int | None) -> np.ndarray:
    """160x120 grey, with a white 30x30 square at x = ``square_at`` (None: no square)."""
    frame = np.full((120, 160, 3), 60, np.uint8)
    if square_at is not None:
        frame[40:70, square_at : square_at + 30] = 255
    return frame


def motion(**config: object) -> Motion:
    values = {name: p.default for name, p in Motion.params.items()} | config
    block = Motion("motion", values)
    block.setup()
    return block


def feed(block: Motion, frames: list[np.ndarray]) -> list[np.ndarray]:
    return [block.process([f]) for f in frames]


def test_a_moving_square_starts_an_event_with_its_snapshot_and_stillness_ends_it():
    block = motion(end_after=0.0, start_frames=2)
    feed(block, [scene(None)] * 3)
    assert block.context.events == []  # nothing moves
    feed(block, [scene(10)])
    assert block.context.events == []  # one frame of motion is not yet an event
    outs = feed(block, [scene(20), scene(30)])
    (start,) = block.context.events
    assert (start["kind"], start["phase"]) == ("motion", "start")
    assert 0 < start["score"] <= 1 and start["data"]["boxes"]
    assert start["frame"].shape == (120, 160, 3)
    assert (outs[0] == [0, 255, 255]).all(axis=2).any()  # the box is drawn, in its colour
    feed(block, [scene(30), scene(30)])  # still: ended (end_after = 0)
    kinds = [(e["kind"], e["phase"]) for e in block.context.events]
    assert kinds == [("motion", "start"), ("motion", "end")]
    assert block.context.events[1]["score"] >= start["score"]


def test_motion_outside_the_region_is_no_event():
    block = motion(end_after=0.0, start_frames=1, region=[0.7, 0.0, 0.3, 1.0])
    feed(block, [scene(None), scene(10), scene(20), scene(40)])  # all in the left half
    assert block.context.events == []
    feed(block, [scene(120), scene(125)])
    assert [e["phase"] for e in block.context.events] == ["start"]


def test_a_block_stopped_mid_event_ends_it():
    block = motion(end_after=3600.0, start_frames=1)
    feed(block, [scene(None), scene(10)])
    block.close()
    assert [e["phase"] for e in block.context.events] == ["start", "end"]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("region", [0.5, 0.5, 0.6, 0.1], "runs past the picture's edge"),
        ("region", [0, 0, 1], "[left, top, width, height]"),
        ("color", [0, 0, 300], "three integers from 0 to 255"),
    ],
)
def test_bad_settings_are_refused_at_load_saying_what_to_write(key, value, says):
    text = GRAPH + f"{key} = {json.dumps(value)}\n"
    with pytest.raises(GraphError) as caught:
        parse_graph(text, "test.toml")
    assert "block 'motion': parameter" in str(caught.value) and says in str(caught.value)
