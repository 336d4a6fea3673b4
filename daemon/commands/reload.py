"""``reload``: re-read the graph file; only what changed restarts. A bad file changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Daemon


async def handle(daemon: Daemon) -> dict[str, Any]:
    return await daemon.reload()
