"""``graph``: the running graph's blocks, their types, states and inputs (for --dot)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..supervisor import Supervisor


async def handle(supervisor: Supervisor) -> dict[str, Any]:
    return {
        "source": supervisor.graph.source,
        "blocks": [
            {
                "name": w.name,
                "type": w.spec.type,
                "state": w.state.value,
                "inputs": list(w.spec.inputs),
            }
            for w in supervisor.every()
        ],
    }
