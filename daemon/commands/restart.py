"""``restart BLOCK…``: stop and start again; naming no block is a usage error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from pipelined.ctl.protocol import BAD_REQUEST, CommandError

from .blocks import acted_on

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher


def none_named(supervisor: Supervisor) -> NoReturn:
    """Restarting the whole graph by leaving out a name is too easy a slip."""
    raise CommandError(BAD_REQUEST, "restart needs the names of the blocks to restart")


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    supervisor.restart_blocks(blocks)
    return acted_on(blocks)
