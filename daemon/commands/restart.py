"""``restart BLOCK…``: stop and start again; naming no block is a usage error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import BAD_REQUEST, CommandError

from .blocks import acted_on, blocks_arg

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("blocks"):
        raise CommandError(BAD_REQUEST, "restart needs the names of the blocks to restart")
    procs = blocks_arg(daemon, args)
    daemon.supervisor.restart_blocks([p.name for p in procs])
    return acted_on(procs)
