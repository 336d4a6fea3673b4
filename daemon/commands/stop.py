"""``stop [BLOCK…]``: stop blocks and wait until they have exited; the daemon stays up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import acted_on

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    await supervisor.stop_blocks(blocks)
    return acted_on(blocks)
