"""``start [BLOCK…]``: start stopped, exited or failed blocks (all when none is named)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import acted_on, blocks_arg

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    procs = blocks_arg(daemon, args)
    daemon.supervisor.start_blocks([p.name for p in procs])
    return acted_on(procs)
