"""``wires``: each frame and packet wire's writer, readers, traffic and per-reader drops,
and the remote wires the Zenoh link reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..supervisor import Supervisor


async def handle(supervisor: Supervisor) -> dict[str, Any]:
    return {
        "wires": supervisor.wire_status(),
        "packet_wires": supervisor.packet_wire_status(),
        "remote_wires": supervisor.remote_wire_status(),
    }
