"""User blocks for tests/test_graph.py, loaded as ``userblocks.graph_blocks:Name``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.workers.block import Block, Param, in_range


class Source(Block):
    """A source that knows its frame size."""

    params = {
        "width": Param(int, default=64, check=in_range(1, 1_000_000)),
        "height": Param(int, default=48, check=in_range(1, 1_000_000)),
    }
    min_inputs = 0
    max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        return params["width"] * params["height"] * 3


class BareSource(Block):
    """A source that does not say how large its frames are: needs max_frame_bytes."""

    min_inputs = 0
    max_inputs = 0


class Filter(Block):
    """Keeps the frame size (the default max_output_bytes)."""

    params = {
        "low": Param(int, default=0, check=in_range(0, 255)),
        "high": Param(int, default=255, check=in_range(0, 255)),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        if params["low"] > params["high"]:
            return [f"low ({params['low']}) must not be above high ({params['high']})"]
        return []


class Labelled(Filter):
    """A filter with a required parameter."""

    params = {**Filter.params, "label": Param(str, doc="a name for the overlay")}


class Merge(Block):
    min_inputs = 2
    max_inputs = None


class Sink(Block):
    min_inputs = 1
    max_inputs = None
    has_output = False


class NotABlock:
    pass
