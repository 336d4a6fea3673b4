"""``wires``: each wire's writer, readers, frames and per-reader drops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..supervisor import Supervisor


async def handle(supervisor: Supervisor) -> dict[str, Any]:
    return {"wires": supervisor.wire_status()}
