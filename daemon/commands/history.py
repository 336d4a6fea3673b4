"""``history [BLOCK…]``: each block's frames in and out per second and CPU over the last
hour, a point every 10 s (daemon/history.py): the page's plots, ``status --watch``'s
sparklines. Apart from ``status``, which stays small."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    return supervisor.history.series(w.name for w in blocks)
