"""``stop [BLOCK…]``: stop blocks and wait until they have exited; the daemon stays up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import blocks_arg

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    procs = blocks_arg(daemon, args)
    return {"stopped": await daemon.supervisor.stop_blocks([p.name for p in procs])}
