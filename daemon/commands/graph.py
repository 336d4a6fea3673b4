"""``graph``: the running graph's blocks, their types, states and inputs (for --dot)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    sup = daemon.supervisor
    return {
        "source": sup.graph.source,
        "blocks": [
            {
                "name": p.name,
                "type": p.spec.type,
                "state": p.state.value,
                "inputs": list(p.spec.inputs),
            }
            for p in sup.select([])
        ],
    }
