"""``recordings``: the segments the graph's recorders wrote, for pipectl and the page.

Arguments (all optional): ``blocks`` (recorders; none: every recorder of the graph),
``since`` and ``until`` (Unix seconds: segments that overlap the range), ``order``
(``"oldest"`` first, the default, or ``"newest"``), ``limit`` (at most this many, 1000
unless said, 5000 at most: a reply is one line of at most 1 MiB) and ``after`` (the
``"block/file"`` of the last segment of the page before: the next page begins after it).
The result::

    {"recorders": [{"block", "directory"}],
     "recordings": [{"block", "file", "path", "start", "end", "duration", "bytes"}],
     "more": false}

``start`` and ``end`` are Unix seconds; ``more`` says the limit cut the list. The folders
are read in a thread of this module's own, never on the event loop: a folder of weeks of
segments takes a while to list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import BAD_REQUEST, CommandError
from pipelined.workers.video.segments import Namer, Segment

from ..graph import is_recorder
from .args import get_arg

if TYPE_CHECKING:
    from ..graph import BlockSpec
    from ..supervisor import Supervisor
    from ..watcher import Watcher

DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
ORDERS = ("oldest", "newest")
_reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")

Key = tuple[int, str, str]


async def handle(
    supervisor: Supervisor, blocks: list[Watcher], args: dict[str, Any]
) -> dict[str, Any]:
    since = get_arg(args, "since", (int, float, type(None)), None)
    until = get_arg(args, "until", (int, float, type(None)), None)
    order = get_arg(args, "order", str, "oldest")
    limit = get_arg(args, "limit", int, DEFAULT_LIMIT)
    after = get_arg(args, "after", (str, type(None)), None)
    if order not in ORDERS:
        raise CommandError(BAD_REQUEST, f"'order' must be oldest or newest, not {order!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise CommandError(BAD_REQUEST, f"'limit' must be between 1 and {MAX_LIMIT}, not {limit}")
    named = bool(get_arg(args, "blocks", list, []))
    specs = recorders([w.spec for w in blocks], named)
    cursor = _cursor(after, specs) if after else None
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(_reader, list_recordings, specs, since, until)
    newest = order == "newest"
    found.sort(key=lambda pair: _key(*pair), reverse=newest)
    if cursor is not None:
        found = [p for p in found if (_key(*p) < cursor if newest else _key(*p) > cursor)]
    return {
        "recorders": [{"block": s.name, "directory": str(directory(s))} for s in specs],
        "recordings": [_entry(block, segment) for block, segment in found[:limit]],
        "more": len(found) > limit,
    }


def recorders(specs: list[BlockSpec], named: bool) -> list[BlockSpec]:
    """The recorders among ``specs``; a block named that is not one is a bad request."""
    chosen = [s for s in specs if is_recorder(s.cls)]
    if named and len(chosen) < len(specs):
        other = next(s for s in specs if not is_recorder(s.cls))
        raise CommandError(
            BAD_REQUEST, f"block {other.name!r} is a {other.type!r}, not a recorder: it has no"
            " recordings",
        )  # fmt: skip
    return chosen


def directory(spec: BlockSpec) -> Path:
    """Where a recorder writes: relative to the daemon's working directory, as its worker's."""
    return Path(spec.params.get("directory", "recordings")).absolute()


def list_recordings(
    specs: list[BlockSpec], since: float | None, until: float | None
) -> list[tuple[str, Segment]]:
    """Every segment of these recorders that overlaps [since, until] (None: open ended)."""
    low = -(2**63) if since is None else int(since * 1e9)
    high = 2**63 if until is None else int(until * 1e9)
    found = []
    for spec in specs:
        for segment in Namer(spec.name).scan(directory(spec)):
            if segment.end_ns >= low and segment.start_ns <= high:
                found.append((spec.name, segment))
    return found


def _key(block: str, segment: Segment) -> Key:
    return (segment.start_ns, block, segment.name)


def _cursor(after: str, specs: list[BlockSpec]) -> Key:
    block, _, file = after.partition("/")
    start = Namer(block).start_ns(file) if block in {s.name for s in specs} else None
    if start is None:
        raise CommandError(
            BAD_REQUEST, f"'after' must be BLOCK/FILE of a recording listed before, not {after!r}"
        )
    return (start, block, file)


def _entry(block: str, segment: Segment) -> dict[str, Any]:
    return {
        "block": block,
        "file": segment.name,
        "path": str(segment.path),
        "start": round(segment.start_ns / 1e9, 3),
        "end": round(segment.end_ns / 1e9, 3),
        "duration": round(segment.duration, 3),
        "bytes": segment.size,
    }
