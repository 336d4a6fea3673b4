"""The block the daemon adds for remote wires: its Zenoh link, as the graph sees it.

Not a type a graph file names: the loader adds one block ``zenoh`` of this type to a graph
that publishes (``publish``) or reads (``type = "remote"``) remote wires. Its inputs are
the published blocks, read as frames (``jpeg``, ``raw``) or packets (``h264``); it has
no output of its own (it writes the remote blocks' packet wires). Its worker is
``net/link.py``'s, which holds the Zenoh session in place of a block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..block import Block, Kind


class Link(Block):
    """The daemon's Zenoh link: publishes the blocks that say `publish`, and fills the
    remote blocks' wires with what arrives."""

    min_inputs = 0
    max_inputs = None
    has_output = False

    @classmethod
    def input_kinds(cls, params: dict[str, Any], offered: Sequence[bool]) -> list[Kind]:
        kinds: list[Kind] = []
        for publication in params.get("publish", {}).values():
            kinds.append("packets" if publication["encoding"] == "h264" else "frames")
        return kinds

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        raise NotImplementedError("the link runs in its own worker (net/link.py)")
