"""The daemon's events: from the workers' pipes to the store, the journal, MQTT, webhooks
and clip recorders, on the event loop.

Every launch of a worker is ``attach``-ed: it gets the write end of an event pipe (and,
for a recorder in clip mode, the read end of one that brings it the events of its
triggers). The hub keeps the events that are open (started, not ended), gives every
change the next ``seq``, and hands it to the store (a thread of its own) and to its
sinks (MQTT, webhooks: each queues and sends off the loop). A block whose worker exits
with events still open gets them ended for it, marked ``interrupted``, so nothing stays
"on" in Home Assistant after a crash.

An event as the store, pipectl, the page, MQTT and webhooks see it::

    {"id", "block", "kind", "start", "end" (null while open), "active", "score",
     "data", "interrupted", "snapshot" (a path, or null), "snapshot_url",
     "clips": [{"recorder", "path", "url", "start", "end"}], "seq"}

The URLs are on the daemon's page, when it has one (``--http``), else null.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelined.workers.contract import WorkerArgs

from ..graph import BlockSpec, Graph, is_clip_recorder
from .pipe import EventPipe, RoutedEvents
from .store import EventStore, StoreError

log = logging.getLogger("pipelined.events")
RECENT = 1000
"""Events kept in memory after they change: a clip report for one of them needs no query."""
PRUNE_EVERY = 60.0


class Sink(Protocol):
    """Where changes go besides the store: MQTT, webhooks."""

    def event(self, change: str, event: dict[str, Any], active: bool) -> None:
        """``change`` is start, update or end; ``active`` whether any event of the same
        block and kind is still open. Must not wait."""

    def status(self) -> dict[str, Any]:
        """Its part of status: ``{"mqtt": …}`` or ``{"webhooks": […]}``."""
        ...

    async def close(self) -> None: ...


@dataclass
class BlockEvents:
    """What one block's events came to, over all its workers."""

    raised: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    limited: int = 0
    full: int = 0
    snapshots_skipped: int = 0
    malformed: int = 0
    paused: int = 0
    routed: int = 0  # to a clip recorder
    routed_dropped: int = 0
    _worker: dict[str, int] = field(default_factory=dict)  # the live worker's own counts

    def worker_counts(self, counts: dict[str, Any]) -> None:
        self._worker = {k: int(v) for k, v in counts.items() if k != "t"}

    def worker_gone(self) -> None:
        """Fold the exited worker's counts into the totals."""
        self.limited += self._worker.get("limited", 0)
        self.full += self._worker.get("full", 0)
        self.snapshots_skipped += self._worker.get("snapshots_skipped", 0)
        self._worker = {}

    def status(self) -> dict[str, Any]:
        w = self._worker
        return {
            "events": sum(self.raised.values()),
            "events_by_kind": dict(self.raised),
            "events_dropped": {
                "rate": self.limited + w.get("limited", 0),
                "queue": self.full + w.get("full", 0),
                "malformed": self.malformed,
            },
            "snapshots_skipped": self.snapshots_skipped + w.get("snapshots_skipped", 0),
            "events_paused": self.paused,
        }


@dataclass
class _Route:
    """A clip recorder, and where its events go."""

    triggers: tuple[str, ...]
    pipe: RoutedEvents | None = None

    def wants(self, block: str, kind: str) -> bool:
        if not self.triggers:
            return True
        return any(t == block or t == f"{block}:{kind}" for t in self.triggers)


class EventHub:
    """Every event of one daemon, the store they are kept in, and where they go."""

    def __init__(self, graph: Graph, state_dir: Path | None):
        self.graph = graph
        self.config = graph.events
        self.store = EventStore(state_dir, graph.events) if state_dir is not None else None
        self.store_problem: str | None = None
        self.page_url: str | None = None  # the daemon's page, for the events' URLs
        self.seq = 0
        self.open: dict[str, dict[str, Any]] = {}
        self.recent: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.blocks: dict[str, BlockEvents] = collections.defaultdict(BlockEvents)
        self.sinks: list[Sink] = []
        self.routes: dict[str, _Route] = {}
        self.unknown = 0  # updates and ends of events the hub does not know
        self._pruning: asyncio.Task[None] | None = None
        self._linking: set[asyncio.Future[None]] = set()  # clip reports for stored events
        self.use(graph)

    # -- life ----------------------------------------------------------------------------

    async def open_store(self) -> None:
        """Open the store (in its thread); a store that cannot open is a reason in status,
        never a daemon that does not start."""
        if self.store is None:
            return
        try:
            self.seq = await self.store.call(self.store.open)
            await self.store.call(self.store.prune)
        except StoreError as exc:
            self.store_problem = str(exc)
            log.error("%s; events are not kept on this run", exc)
            self.store = None
            return
        self._pruning = asyncio.create_task(self._prune_forever())

    def use(self, graph: Graph) -> None:
        """Take a (reloaded) graph: its ``[events]`` and its clip recorders' triggers."""
        self.graph = graph
        self.config = graph.events
        if self.store is not None:
            self.store.config = graph.events
        routes = {}
        for spec in graph.blocks.values():
            if is_clip_recorder(spec):
                old = self.routes.get(spec.name)
                routes[spec.name] = _Route(
                    tuple(spec.params.get("triggers", [])), old.pipe if old else None
                )
        self.routes = routes

    async def _prune_forever(self) -> None:
        while self.store is not None:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                await self.store.call(self.store.prune)
            except Exception:
                log.exception("pruning the event store failed")

    async def close(self) -> None:
        """End what is open (interrupted), close the sinks, let the store finish."""
        for event_id in list(self.open):
            self._interrupt(event_id)
        if self._pruning is not None:
            self._pruning.cancel()
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("closing %s failed", type(sink).__name__)
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.to_thread(store.close)

    # -- workers -------------------------------------------------------------------------

    def attach(self, spec: BlockSpec) -> Attachment:
        """The pipes of one launch of ``spec``'s worker."""
        return Attachment(self, spec)

    def deliver(self, block: str, message: dict[str, Any]) -> None:
        """A message from ``block``'s worker (parsed and checked by its EventPipe)."""
        kind = message["t"]
        if kind == "event":
            self._event(block, message)
        elif kind == "clip":
            self._clip(block, message)
        elif kind == "counts":
            self.blocks[block].worker_counts(message)

    def worker_exited(self, block: str) -> None:
        for event_id in [i for i, r in self.open.items() if r["block"] == block]:
            self._interrupt(event_id)
        self.blocks[block].worker_gone()
        route = self.routes.get(block)
        if route is not None and route.pipe is not None:
            route.pipe.close()
            route.pipe = None

    def _interrupt(self, event_id: str) -> None:
        record = self.open.pop(event_id)
        record["end"] = max(time.time(), record["start"])
        record["interrupted"] = True
        log.info("%s: %s event %s ended for it: its worker is gone", record["block"],
                 record["kind"], event_id, extra={"block": record["block"]})  # fmt: skip
        self._changed(record, "end")
        self._route(record, "end", record["end"])

    # -- events --------------------------------------------------------------------------

    def _event(self, block: str, m: dict[str, Any]) -> None:
        event_id, phase, at = m["id"], m["phase"], float(m["at"])
        snapshot = m.get("snapshot") if m.get("snapshot") == f"{event_id}.jpg" else None
        if phase in ("start", "moment"):
            if event_id in self.open or event_id in self.recent:
                self.blocks[block].malformed += 1
                return
            record = {
                "id": event_id, "block": block, "kind": m["kind"], "start": at,
                "end": at if phase == "moment" else None, "score": m.get("score"),
                "data": m.get("data"), "snapshot": snapshot, "clips": [], "interrupted": False,
            }  # fmt: skip
            self.blocks[block].raised[m["kind"]] += 1
            if phase == "start":
                self.open[event_id] = record
            self._changed(record, "start")
            self._route(record, phase, at)
            if phase == "moment":
                self._changed(record, "end")
            return
        known = self.open.get(event_id)
        if known is None or known["block"] != block:
            self.unknown += 1
            return
        record = known
        _merge(record, m, snapshot)
        if phase == "end":
            del self.open[event_id]
            record["end"] = max(at, record["start"])
            self._route(record, "end", record["end"])
        self._changed(record, phase)

    def _clip(self, recorder: str, m: dict[str, Any]) -> None:
        """A recorder says which file holds the clip of which events."""
        entry = {"recorder": recorder, "path": m["path"], "start": m["start"], "end": m.get("end")}
        for event_id in m["events"][:100]:
            record = self.open.get(event_id) or self.recent.get(event_id)
            if record is not None:
                self._link(record, entry)
            elif self.store is not None:
                task = asyncio.ensure_future(self._link_stored(event_id, entry))
                self._linking.add(task)
                task.add_done_callback(self._linking.discard)

    async def _link_stored(self, event_id: str, entry: dict[str, Any]) -> None:
        store = self.store
        record = await store.call(store.get, event_id) if store is not None else None
        if record is not None:
            self._link(record, entry)

    def _link(self, record: dict[str, Any], entry: dict[str, Any]) -> None:
        clips = [c for c in record["clips"] if c["path"] != entry["path"]]
        gone = entry["end"] is not None and entry["end"] <= entry["start"]
        if not gone:
            clips.append(entry)
        record["clips"] = sorted(clips, key=lambda c: c["start"])
        self._changed(record, "update")

    def _changed(self, record: dict[str, Any], change: str) -> None:
        self.seq += 1
        record["seq"] = self.seq
        self.recent[record["id"]] = record
        self.recent.move_to_end(record["id"])
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        if self.store is not None:
            self.store.save_soon(record)
        self._log(record, change)
        view = self.view(record)
        active = any(
            r["block"] == record["block"] and r["kind"] == record["kind"]
            for r in self.open.values()
        )
        for sink in self.sinks:
            try:
                sink.event(change, view, active)
            except Exception:
                log.exception("%s could not take an event", type(sink).__name__)

    def _log(self, record: dict[str, Any], change: str) -> None:
        score = record.get("score")
        shown = f" score {score:g}" if isinstance(score, int | float) else ""
        log.info(
            "%s: %s %s %s%s", record["block"], record["kind"], change, record["id"], shown,
            extra={
                "block": record["block"],
                "journal": {
                    "PIPELINED_EVENT_ID": record["id"],
                    "PIPELINED_EVENT_KIND": record["kind"],
                    "PIPELINED_EVENT_PHASE": change,
                    **({"PIPELINED_EVENT_SCORE": score} if shown else {}),
                },
            },
        )  # fmt: skip

    def _route(self, record: dict[str, Any], phase: str, at: float) -> None:
        for name, route in self.routes.items():
            if name == record["block"] or not route.wants(record["block"], record["kind"]):
                continue
            message = {"id": record["id"], "block": record["block"], "kind": record["kind"],
                       "phase": phase, "at": at}  # fmt: skip
            counts = self.blocks[name]
            if route.pipe is None:
                counts.routed_dropped += 1
                continue
            sent, dropped = route.pipe.sent, route.pipe.dropped
            route.pipe.send(message)
            counts.routed += route.pipe.sent - sent
            counts.routed_dropped += route.pipe.dropped - dropped

    # -- what others see -----------------------------------------------------------------

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        """An event as pipectl, the page, MQTT and webhooks get it (see the top)."""
        snapshot = record.get("snapshot")
        path = str(self.store.snapshots / snapshot) if snapshot and self.store else None
        page = self.page_url
        event_id = urllib.parse.quote(record["id"])
        return {
            "id": record["id"],
            "block": record["block"],
            "kind": record["kind"],
            "start": record["start"],
            "end": record["end"],
            "active": record["end"] is None,
            "score": record.get("score"),
            "data": record.get("data"),
            "interrupted": bool(record.get("interrupted")),
            "snapshot": path,
            "snapshot_url": f"{page}/events/{event_id}/snapshot.jpg" if path and page else None,
            "clips": [
                {**c, "url": _clip_url(page, c) if page else None} for c in record.get("clips", [])
            ],
            "seq": record["seq"],
        }

    def snapshot_path(self, event_id: str) -> Path | None:
        """Where an event's snapshot is, if it has one and the store is open."""
        record = self.open.get(event_id) or self.recent.get(event_id)
        if self.store is None:
            return None
        name = record.get("snapshot") if record else f"{event_id}.jpg"
        return self.store.snapshots / name if name else None

    def kinds(self) -> set[tuple[str, str]]:
        """The (block, kind) pairs known now: raised this run, or declared by the block."""
        known = {(b, k) for b, counts in self.blocks.items() for k in counts.raised}
        for spec in self.graph.blocks.values():
            known |= {(spec.name, k) for k in getattr(spec.cls, "event_kinds", ())}
        return known

    def status(self) -> dict[str, Any]:
        store = self.store
        return {
            "store": str(store.path) if store else None,
            "store_problem": self.store_problem,
            "open": len(self.open),
            "seq": self.seq,
            "not_stored": store.dropped if store else 0,
            "unknown": self.unknown,
        }

    def block_status(self, block: str) -> dict[str, Any]:
        return self.blocks[block].status() if block in self.blocks else BlockEvents().status()


def _merge(record: dict[str, Any], m: dict[str, Any], snapshot: str | None) -> None:
    """An update or end onto the open event: the highest score, the data merged, the
    newer snapshot."""
    score = m.get("score")
    if isinstance(score, int | float):
        old = record.get("score")
        record["score"] = score if old is None else max(old, score)
    if isinstance(m.get("data"), dict):
        record["data"] = {**(record.get("data") or {}), **m["data"]}
    if snapshot:
        record["snapshot"] = snapshot


def _clip_url(page: str, clip: dict[str, Any]) -> str:
    file = urllib.parse.quote(os.path.basename(clip["path"]))
    return f"{page}/recordings/{urllib.parse.quote(clip['recorder'])}/{file}"


class Attachment:
    """One launch of one block's worker: its pipes, from before the launch to its exit."""

    def __init__(self, hub: EventHub, spec: BlockSpec):
        self.hub = hub
        self.block = spec.name
        self.events_r, self.events_w = os.pipe2(os.O_CLOEXEC)
        self.inbox_r: int | None = None
        self.inbox_w: int | None = None
        if spec.name in hub.routes:
            self.inbox_r, self.inbox_w = os.pipe2(os.O_CLOEXEC)
        self.pipe: EventPipe | None = None

    @property
    def child_fds(self) -> tuple[int, ...]:
        """What the worker inherits: its ends of the pipes."""
        return (self.events_w,) if self.inbox_r is None else (self.events_w, self.inbox_r)

    def args(self, args: WorkerArgs) -> WorkerArgs:
        config = self.hub.config
        store = self.hub.store
        return dataclasses.replace(
            args,
            events={
                "fd": self.events_w,
                "inbox_fd": self.inbox_r,
                "snapshots": str(store.snapshots) if store is not None else None,
                "rate": config.rate,
                "burst": config.burst,
                "quality": config.snapshot_quality,
            },
        )

    def started(self) -> None:
        """The worker runs: close its ends here, read ours, route it the open events."""
        for fd in self.child_fds:
            os.close(fd)
        config = self.hub.config
        self.pipe = EventPipe(
            self.events_r, self.block, config.rate, config.burst, self._deliver,
            self.hub.blocks[self.block],
        )  # fmt: skip
        route = self.hub.routes.get(self.block)
        if route is not None and self.inbox_w is not None:
            route.pipe = RoutedEvents(self.inbox_w, self.block)
            self.inbox_w = None
            for record in list(self.hub.open.values()):  # a recorder restarted mid-event
                if route.wants(record["block"], record["kind"]):
                    self.hub._route(record, "start", record["start"])

    def _deliver(self, block: str, message: dict[str, Any]) -> None:
        self.hub.deliver(block, message)

    def abandon(self) -> None:
        """The launch failed: close everything."""
        for fd in (self.events_r, self.events_w, self.inbox_r, self.inbox_w):
            if fd is not None:
                os.close(fd)

    def finished(self) -> None:
        """The worker exited: its last lines, then whatever it left open is ended."""
        if self.pipe is not None:
            self.pipe.drain()
        if self.inbox_w is not None:
            os.close(self.inbox_w)
            self.inbox_w = None
        self.hub.worker_exited(self.block)
