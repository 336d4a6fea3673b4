"""``events``: what the blocks raised, from the event store, for pipectl and the page.

Arguments (all optional): ``blocks`` (their events; none: every block's, also of blocks
a reload took away), ``since`` and ``until`` (Unix seconds: events that overlap the
range), ``order`` (``"newest"`` first, the default, or ``"oldest"``), ``limit`` (100
unless said, 1000 at most) and ``after`` (a ``seq``: the events that changed since, in
the order they changed, for ``pipectl events -f`` and the page's live list). The result::

    {"events": [{"id", "block", "kind", "start", "end", "active", "score", "data",
                 "interrupted", "snapshot", "snapshot_url", "clips", "seq"}],
     "seq": 42, "more": false, "store": "/var/lib/pipelined/events.db"}

``seq`` is the newest change there is: the next ``after``. The store is asked in its own
thread. Without a store (it could not be opened) the events of this run that are still
in memory answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import BAD_REQUEST, CommandError

from .args import get_arg, get_blocks

if TYPE_CHECKING:
    from ..events.hub import EventHub

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ORDERS = ("newest", "oldest")


async def handle(hub: EventHub, args: dict[str, Any]) -> dict[str, Any]:
    blocks = get_blocks(args)
    since = get_arg(args, "since", (int, float, type(None)), None)
    until = get_arg(args, "until", (int, float, type(None)), None)
    after = get_arg(args, "after", (int, type(None)), None)
    order = get_arg(args, "order", str, "newest")
    limit = get_arg(args, "limit", int, DEFAULT_LIMIT)
    if order not in ORDERS:
        raise CommandError(BAD_REQUEST, f"'order' must be newest or oldest, not {order!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise CommandError(BAD_REQUEST, f"'limit' must be between 1 and {MAX_LIMIT}, not {limit}")
    seq = hub.seq  # before the query: a change while it runs is seen on the next ask
    store = hub.store
    if store is not None:
        found, more = await store.call(
            store.query, blocks, since, until, after, limit, order == "newest"
        )
    else:
        found, more = _in_memory(hub, blocks, since, until, after, limit, order == "newest")
    current = {**hub.recent, **hub.open}  # what changed since the store was asked
    return {
        "events": [hub.view(current.get(r["id"], r)) for r in found],
        "seq": seq,
        "more": more,
        "store": str(store.path) if store is not None else None,
    }


def _in_memory(
    hub: EventHub,
    blocks: list[str],
    since: float | None,
    until: float | None,
    after: int | None,
    limit: int,
    newest: bool,
) -> tuple[list[dict[str, Any]], bool]:
    records = [
        r
        for r in hub.recent.values()
        if (not blocks or r["block"] in blocks)
        and (since is None or r["end"] is None or r["end"] >= since)
        and (until is None or r["start"] <= until)
        and (after is None or r["seq"] > after)
    ]
    if after is not None:
        records.sort(key=lambda r: r["seq"])
    else:
        records.sort(key=lambda r: (r["start"], r["id"]), reverse=newest)
    return records[:limit], len(records) > limit
