"""``start [BLOCK…]``: start stopped, exited or failed blocks (all when none is named)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import acted_on

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    supervisor.start_blocks(blocks)
    return acted_on(blocks)
