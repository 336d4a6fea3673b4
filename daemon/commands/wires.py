"""``wires``: each frame and packet wire's writer, readers, traffic and per-reader drops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    sup = daemon.supervisor
    return {"wires": sup.wire_status(), "packet_wires": sup.packet_wire_status()}
