"""``status [BLOCK…]``: the daemon, the blocks asked for and every wire (pipectl's table).

A reply is one line of at most MAX_LINE bytes. Of the status, only the blocks' stderr
tails grow with what the blocks print, so when the whole does not fit, each tail is cut
to an equal share of the room left, keeping its end (the last words explain an exit).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import MAX_LINE, encode_result

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..watcher import Watcher

REPLY_MARGIN = 1024
"""Room kept in a reply line for its envelope (a long request id)."""
CUT_NOTE = "[earlier lines cut to fit the reply]\n"


async def handle(supervisor: Supervisor, blocks: list[Watcher]) -> dict[str, Any]:
    return fit(supervisor.status(blocks))


def fit(status: dict[str, Any], limit: int = MAX_LINE - REPLY_MARGIN) -> dict[str, Any]:
    """``status``, its stderr tails cut so that its reply line takes at most ``limit``."""
    if _size(status) <= limit:
        return status
    status = copy.deepcopy(status)
    exits = [
        b["last_exit"]
        for b in status["blocks"]
        if b.get("last_exit") and b["last_exit"].get("stderr_tail")
    ]
    tails = [e["stderr_tail"] for e in exits]
    for e in exits:
        e["stderr_tail"] = ""
    room = limit - _size(status)
    share = room // len(exits) if exits and room > 0 else 0
    for e, tail in zip(exits, tails, strict=True):
        e["stderr_tail"] = _end_of(tail, share)
    return status


def _end_of(text: str, room: int) -> str:
    """The end of ``text`` that takes at most ``room`` bytes in JSON (with a note)."""
    if _encoded(text) <= room:
        return text
    room -= _encoded(CUT_NOTE)
    keep = max(room, 0)
    while keep > 0 and _encoded(text[-keep:]) > room:
        keep = min(keep - 1, keep * room // _encoded(text[-keep:]))
    return CUT_NOTE + text[-keep:] if keep > 0 else ""


def _encoded(text: str) -> int:
    """Bytes a string takes in a reply (ASCII JSON, less its quotes)."""
    return len(json.dumps(text)) - 2


def _size(status: dict[str, Any]) -> int:
    return len(encode_result(None, status))
