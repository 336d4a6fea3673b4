"""Block types by name: the built-ins, and user blocks written ``package.module:Class``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .block import Block

BUILTIN: dict[str, str] = {
    "camera": "pipelined.workers.blocks.camera:Camera",
    "color_filter": "pipelined.workers.blocks.color_filter:ColorFilter",
    "edge_detector": "pipelined.workers.blocks.edge_detector:EdgeDetector",
    "screen": "pipelined.workers.blocks.screen:Screen",
    "recorder": "pipelined.workers.blocks.recorder:Recorder",
    "preview": "pipelined.workers.blocks.preview:Preview",
    "remote": "pipelined.workers.blocks.remote:Remote",
    "motion": "pipelined.workers.blocks.motion:Motion",
}


class BlockTypeError(LookupError):
    """A block type that names no built-in and no importable user class."""


def resolve(type_name: str, beside: Path | None = None) -> type[Block]:
    """The class behind a graph file's ``type = "…"``.

    ``beside`` is the graph file's folder: a user's module kept next to the graph file is
    found there, as a user would expect, as well as anywhere on the import path.
    """
    target = BUILTIN.get(type_name, type_name)
    if beside is not None and type_name not in BUILTIN and str(beside) not in sys.path:
        sys.path.insert(0, str(beside))
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN))
        raise BlockTypeError(
            f"unknown block type {type_name!r}: use one of {known},"
            " or 'package.module:ClassName' for your own block"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user module can fail in any way while importing
        raise BlockTypeError(
            f"cannot import module {module_name!r} for block type {type_name!r}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BlockTypeError(f"module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise BlockTypeError(
            f"{type_name!r} is not a block: make it a subclass of pipelined.workers.block.Block"
        )
    return cls
