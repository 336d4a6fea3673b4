"""A block in the test process, without the runtime: its context and its parameters."""

from __future__ import annotations

import logging
import time
from typing import Any

from pipelined.workers.block import Block


class RecordingContext:
    """A block context that records what the block reports (waiting, detail, what it
    delivered and skipped) and each sleep it asks for; ``sleep_cap`` shortens the sleeps."""

    def __init__(self, sleep_cap: float | None = None, inputs: list[str] | None = None):
        self.log = logging.getLogger("test.blocks")
        self.inputs = inputs or ["camera"]
        self.reasons: list[str | None] = []
        self.details: list[str | None] = []
        self.sleeps: list[float] = []
        self.stopping = False
        self.sleep_cap = sleep_cap
        self.whole = True  # what intact() answers: False plays a writer that lapped the view
        self.delivered_count = 0
        self.skipped_count = 0

    def waiting(self, reason: str | None) -> None:
        self.reasons.append(reason)

    def detail(self, text: str | None) -> None:
        self.details.append(text)

    def intact(self) -> bool:
        return self.whole

    def delivered(self, count: int = 1) -> None:
        self.delivered_count += count

    def skipped(self, count: int = 1) -> None:
        self.skipped_count += count

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        if self.stopping:
            return False
        time.sleep(seconds if self.sleep_cap is None else min(seconds, self.sleep_cap))
        return not self.stopping


def params(cls: type[Block], **overrides: Any) -> dict[str, Any]:
    """The block's defaults with ``overrides``, as the runtime hands them over."""
    values = {name: p.default for name, p in cls.params.items()}
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    return values | overrides
