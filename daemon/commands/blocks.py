"""The ``blocks`` argument of a command, resolved against the running graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import NO_SUCH_BLOCK, CommandError

from .args import get_blocks

if TYPE_CHECKING:
    from ..app import Daemon
    from ..watcher import Watcher


def blocks_arg(daemon: Daemon, args: dict[str, Any]) -> list[Watcher]:
    """The blocks an argument names (all for none), or a no_such_block error."""
    names = get_blocks(args)
    try:
        return daemon.supervisor.select(names)
    except KeyError as exc:
        known = ", ".join(daemon.supervisor.blocks)
        raise CommandError(
            NO_SUCH_BLOCK, f"no block named {exc.args[0]} in this graph; its blocks are: {known}"
        ) from None


def acted_on(procs: list[Watcher]) -> dict[str, Any]:
    """The result of start, stop and restart: each block named, with its state now."""
    return {"blocks": [{"name": p.name, "state": p.state.value} for p in procs]}
