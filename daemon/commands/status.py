"""``status [BLOCK…]``: the daemon, the blocks asked for and every wire (pipectl's table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    return supervisor.status(blocks)
