"""``wires``: each wire's writer, readers, frames and per-reader drops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    return {"wires": daemon.supervisor.wire_status()}
