"""The blocks a request names, resolved against the running graph before a command runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import NO_SUCH_BLOCK, CommandError

from .args import get_blocks

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher

WhenNone = Callable[["Supervisor"], list["Watcher"]]
"""What a request that names no block acts on (or the error it gets)."""


def every(supervisor: Supervisor) -> list[Watcher]:
    """Naming no block means every block: ``pipectl stop`` stops them all."""
    return supervisor.every()


def resolve(supervisor: Supervisor, args: dict[str, Any], when_none: WhenNone) -> list[Watcher]:
    """The blocks ``args`` names, in graph order, or ``when_none``'s if it names none.

    An unknown name is a no_such_block error that lists the graph's blocks.
    """
    names = get_blocks(args)
    if not names:
        return when_none(supervisor)
    try:
        return supervisor.select(names)
    except KeyError as exc:
        known = ", ".join(supervisor.blocks)
        raise CommandError(
            NO_SUCH_BLOCK, f"no block named {exc.args[0]} in this graph; its blocks are: {known}"
        ) from None


def acted_on(watchers: list[Watcher]) -> dict[str, Any]:
    """The result of start, stop and restart: each block named, with its state now."""
    return {"blocks": [{"name": w.name, "state": w.state.value} for w in watchers]}
