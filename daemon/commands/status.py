"""``status [BLOCK…]``: the object of docs/design.md, for pipectl's table and --json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import blocks_arg

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    procs = blocks_arg(daemon, args)
    return daemon.supervisor.status([p.name for p in procs])
