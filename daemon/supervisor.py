"""The supervisor: owns one run of a graph, its wires, heartbeats and block watchers.

As circus's arbiter holds its watchers, the supervisor holds one ``Watcher`` per block
(watcher.py), which runs the block's worker by its restart policy. The supervisor
creates every wire before any worker starts (a reader never finds its input missing),
starts blocks sources first, and keeps the wires across a block's restarts, so the
readers of a restarting block simply wait. Stopping unlinks everything of the run.
Control commands (daemon/commands/) call the public methods here.

Creating is all or nothing, at start as at a reload: a run whose names are taken in
/dev/shm tries another token; a reload makes everything the new graph needs before it
stops anything, and a reload that cannot make it changes nothing (``ReloadError``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelined.workers.ipc.heartbeat import Heartbeat
from pipelined.workers.ipc.names import RunNames, new_run_token
from pipelined.workers.ipc.packets import PacketWire, PacketWireError
from pipelined.workers.ipc.report import Report
from pipelined.workers.ipc.segment import (
    NameTaken,
    NoRoom,
    rename_entry,
    unlink_entry,
    unlink_run,
)
from pipelined.workers.ipc.wire import Wire, WireError

from . import runs
from .events.hub import EventHub
from .graph import LINK_TYPE, BlockSpec, Graph
from .history import History
from .process import worker_args
from .states import ALIVE, State
from .watcher import Watcher

log = logging.getLogger("pipelined")
SPARE_READERS = 2
"""Reader slots on every wire beyond the graph's readers, for live viewers."""
TICK = 0.1
STARTING_TICK = 0.01
"""While a block starts, its first heartbeat is looked for often: it marks it RUNNING."""
SAMPLE_EVERY = 1.0
RUN_ATTEMPTS = 5
"""Run tokens tried when a name of the run exists already (a neighbour in /dev/shm)."""
FRAMES, PACKETS = "frames", "packets"


class RunError(Exception):
    """The run's objects cannot be created: the daemon cannot start."""


class ReloadError(Exception):
    """What a new graph needs cannot be made; the running graph is as it was."""


@dataclass(frozen=True)
class _Plan:
    """What a reload changes, by block name."""

    added: list[str]
    removed: list[str]
    changed: set[str]  # to stop (if running) and start anew: added ones included
    rewired: set[str]  # kept blocks whose wires are made anew

    @classmethod
    def between(cls, old: Graph, new: Graph) -> _Plan:
        removed = [n for n in old.blocks if n not in new.blocks]
        added = [n for n in new.blocks if n not in old.blocks]
        kept = [n for n in old.blocks if n in new.blocks]
        changed = {n for n in kept if old.blocks[n] != new.blocks[n]} | set(added)
        rewired = {
            n
            for n in kept
            if old.blocks[n].frame_bytes != new.blocks[n].frame_bytes
            or old.blocks[n].packet_bytes != new.blocks[n].packet_bytes
            or old.readers(n) != new.readers(n)
            or old.packet_readers(n) != new.packet_readers(n)
        }
        for wire in rewired:
            changed |= {wire, *new.readers(wire), *new.packet_readers(wire)}
            feeder = new.blocks[wire].fed_by
            if feeder is not None:  # the link writes a remote block's packets
                changed.add(feeder)
        return cls(added, removed, changed, rewired)


@dataclass
class _Made:
    """What a reload made for the new graph before stopping anything; ``undo`` removes it."""

    staging: RunNames  # where the new wires of rewired blocks wait for the switch
    wires: dict[tuple[str, str], Wire | PacketWire] = field(default_factory=dict)
    staged: dict[tuple[str, str], Wire | PacketWire] = field(default_factory=dict)
    beats: dict[str, Heartbeat] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    watchers: dict[str, Watcher] = field(default_factory=dict)

    def undo(self) -> None:
        for wire in [*self.wires.values(), *self.staged.values()]:
            wire.unlink()
            wire.close()
        records: list[Heartbeat | Report] = [*self.beats.values(), *self.reports.values()]
        for record in records:
            record.unlink()
            record.close()


def _remote_wires(graph: Graph, link: str) -> list[dict[str, Any]]:
    """The remote wires of a link as the graph says them, for when the link says nothing."""
    spec = graph.blocks.get(link)
    if spec is None:
        return []
    wires: list[dict[str, Any]] = [
        {"block": b, "direction": "out", "key": p["key"], "encoding": p["encoding"]}
        for b, p in spec.params.get("publish", {}).items()
    ]
    wires += [
        {"block": s["block"], "direction": "in", "key": s["key"], "encoding": s["encoding"]}
        for s in spec.params.get("subscribe", [])
    ]
    return wires


def _wire_names(names: RunNames, kind: str, block: str, readers: int) -> list[str]:
    """The /dev/shm entries of a wire: its segment, then its doorbells."""
    if kind == FRAMES:
        bells = [names.doorbell(block, i) for i in range(readers)]
        return [names.wire(block)[1:], *(f"sem.{b[1:]}" for b in bells)]
    bells = [names.packet_doorbell(block, i) for i in range(readers)]
    return [names.packets(block)[1:], *(f"sem.{b[1:]}" for b in bells)]


class Supervisor:
    """One daemon start: a run token, the graph it runs, and everything it created."""

    def __init__(
        self,
        graph: Graph,
        instance: str,
        group: int | None = None,
        new_token: Callable[[], str] = new_run_token,
        preview_token: str | None = None,
        hub: EventHub | None = None,
    ):
        self.graph = graph
        self.hub = hub  # the daemon's events: every worker gets its pipes there
        self.preview_token = preview_token  # for preview blocks that set no token
        self._new_token = new_token
        self.names = RunNames(instance, new_token())
        self.group = group
        self.wires: dict[str, Wire] = {}
        self.packet_wires: dict[str, PacketWire] = {}
        self.blocks: dict[str, Watcher] = {}
        self.reports: dict[str, Report] = {}  # what the Zenoh link says of its remote wires
        self.started = time.monotonic()
        self.history = History()
        self._ticker: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()

    # -- the run's objects -------------------------------------------------------------

    def open(self) -> None:
        """Clean up dead runs, then claim a run and create its wires and heartbeats.

        Another user's entries of the instance are left alone and logged, once. A name
        that exists already (someone made it first) means another run token, up to
        RUN_ATTEMPTS times; RunError when the run cannot be made.
        """
        instance = self.names.instance
        runs.remove_dead_runs(instance, keep=self.names.run)
        foreign = runs.foreign(instance)
        if foreign:
            shown = ", ".join(f"{entry} (uid {uid})" for entry, uid in foreign[:10])
            more = f" and {len(foreign) - 10} more" if len(foreign) > 10 else ""
            log.warning(
                "%d entries in /dev/shm with instance %s's names belong to another user;"
                " leaving them alone: %s%s",
                len(foreign),
                instance,
                shown,
                more,
            )
        for attempt in range(1, RUN_ATTEMPTS + 1):
            try:
                self._create_run()
                break
            except NameTaken as exc:
                if attempt == RUN_ATTEMPTS:
                    raise RunError(
                        f"cannot create run objects in /dev/shm: {exc}, at each of"
                        f" {RUN_ATTEMPTS} run tokens tried. Is someone creating pipelined's"
                        " names there? The packaged unit gives the daemon a /dev/shm of its own."
                    ) from None
                old, self.names = self.names, RunNames(instance, self._new_token())
                log.warning(
                    "%s; trying another run token (%s, not %s)", exc, self.names.run, old.run
                )
            except (OSError, NoRoom, WireError, PacketWireError) as exc:
                raise RunError(f"cannot create run {self.names.run} in /dev/shm: {exc}") from None
        log.info(
            "run %s of instance %s: %d blocks, %d wires",
            self.names.run,
            self.names.instance,
            len(self.blocks),
            len(self.wires),
        )

    def _create_run(self) -> None:
        """Claim ``self.names`` and create every object of the graph; all or nothing.

        On failure it removes what it made, and only that: a name that was taken
        belongs to someone else (perhaps a live daemon of ours with the same token).
        """
        claimed = False
        try:
            runs.claim(self.names, self.group)
            claimed = True
            for name in self.graph.order():
                self._create(self.graph.blocks[name])
        except BaseException:
            for name in list(self.blocks):
                self._drop(name)
            for name in list(self.wires) + list(self.packet_wires):
                self._drop_wire(name)
            if claimed:
                runs.unclaim(self.names)
            raise

    def _create(self, spec: BlockSpec) -> None:
        """Make the block's wires, heartbeat and watcher (at start)."""
        for (kind, name), wire in self._make_wires(self.names, spec, self.graph).items():
            self._wires(kind)[name] = wire
        beat = Heartbeat.create(self.names, spec.name, self.group)
        if spec.type == LINK_TYPE:
            self.reports[spec.name] = Report.create(self.names, spec.name, self.group)
        args = worker_args(self.names, spec, self.graph, self.preview_token)
        self.blocks[spec.name] = Watcher(spec, args, beat, hub=self.hub)

    def _drop_wire(self, name: str) -> None:
        """Unlink the block's frame and packet wires (readers that have them mapped keep them)."""
        for kind in (FRAMES, PACKETS):
            wire = self._wires(kind).pop(name, None)
            if wire is not None:
                self._unlink_wire(kind, name, wire)
                wire.close()

    def _drop(self, name: str) -> None:
        """Forget a stopped block: unlink its wire and heartbeat."""
        watcher = self.blocks.pop(name)
        watcher.heartbeat.unlink()
        watcher.heartbeat.close()
        report = self.reports.pop(name, None)
        if report is not None:
            report.unlink()
            report.close()
        self._drop_wire(name)

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Start every block (but those with ``autostart = false``); watch them until
        cancelled."""
        self.start_blocks(self.autostarted(self.every()))
        self._ticker = asyncio.create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        next_sample = 0.0
        while True:
            for watcher in list(self.blocks.values()):
                watcher.tick()
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + SAMPLE_EVERY
                for watcher in list(self.blocks.values()):
                    watcher.sample()
                self.history.add({w.name: w.figures() for w in self.blocks.values()})
            starting = any(w.state == State.STARTING for w in self.blocks.values())
            await asyncio.sleep(STARTING_TICK if starting else TICK)

    @staticmethod
    def autostarted(watchers: Iterable[Watcher]) -> list[Watcher]:
        """The blocks that start with the graph: ``autostart = false`` waits to be asked."""
        return [w for w in watchers if w.spec.supervision.autostart]

    def every(self) -> list[Watcher]:
        """Every block, in graph order: what "all blocks" means, said out loud."""
        return self._in_order(self.blocks.values())

    def select(self, names: Iterable[str]) -> list[Watcher]:
        """The named blocks (no name: none), in graph order; KeyError lists unknown names."""
        names = list(names)
        unknown = [n for n in names if n not in self.blocks]
        if unknown:
            raise KeyError(", ".join(unknown))
        return self._in_order(self.blocks[n] for n in dict.fromkeys(names))

    def _in_order(self, watchers: Iterable[Watcher]) -> list[Watcher]:
        """Sources first: each block after the blocks it reads."""
        rank = {name: i for i, name in enumerate(self.graph.order())}
        return sorted(watchers, key=lambda w: rank.get(w.name, len(rank)))

    def start_blocks(self, watchers: Iterable[Watcher]) -> None:
        """Start these blocks, sources first; a block already up is left alone."""
        for watcher in self._in_order(watchers):
            watcher.start()

    async def stop_blocks(self, watchers: Iterable[Watcher]) -> None:
        """Stop these blocks (readers first) and wait until every one has exited."""
        stopping = [w.stop() for w in reversed(self._in_order(watchers))]
        await asyncio.gather(*stopping)

    def restart_blocks(self, watchers: Iterable[Watcher]) -> None:
        """Stop and start these blocks again, each once its old worker is gone."""
        for watcher in self._in_order(watchers):
            watcher.restart()

    async def reload(self, graph: Graph) -> dict[str, list[str]]:
        """Run ``graph`` instead, restarting only the blocks whose configuration changed.

        All or nothing: everything the new graph needs (wires, heartbeats, watchers) is
        made first, while the old graph runs on; only then are the changed blocks
        stopped, the new objects put in place and the blocks started. ReloadError if
        anything cannot be made: then nothing has changed.

        A changed block keeps its wire, so its readers carry on. A wire that changes size
        or readers is made anew (under staged names, renamed over the old ones at the
        switch, so its names are never free), and its readers restart with it, since
        their reader slots belong to the old one.
        """
        async with self._reloading:
            plan = _Plan.between(self.graph, graph)
            made = self._prepare(graph, plan)
            await self._switch(graph, plan, made)
            result = {
                "added": plan.added,
                "removed": plan.removed,
                "restarted": sorted(plan.changed - set(plan.added)),
            }
            log.info("reloaded %s: %s", graph.source, reload_summary(result))
            return result

    def _prepare(self, new: Graph, plan: _Plan) -> _Made:
        """Make what ``new`` needs beside the running graph; ReloadError undoes it all."""
        made = _Made(self.names.staged())
        try:
            for name in new.order():
                spec = new.blocks[name]
                if name in plan.added:
                    made.wires.update(self._make_wires(self.names, spec, new))
                    made.beats[name] = Heartbeat.create(self.names, name, self.group)
                if spec.type == LINK_TYPE and name not in self.reports:
                    made.reports[name] = Report.create(self.names, name, self.group)
                elif name in plan.rewired:
                    made.staged.update(self._make_wires(made.staging, spec, new))
                if name in plan.changed:
                    beat = made.beats.get(name) or self.blocks[name].heartbeat
                    args = worker_args(self.names, spec, new, self.preview_token)
                    made.watchers[name] = Watcher(spec, args, beat, hub=self.hub)
        except Exception as exc:
            made.undo()
            if not isinstance(exc, OSError | NoRoom | WireError | PacketWireError):
                log.exception("preparing the reload failed")
            raise ReloadError(str(exc)) from None
        return made

    def _make_wires(
        self, names: RunNames, spec: BlockSpec, graph: Graph
    ) -> dict[tuple[str, str], Wire | PacketWire]:
        """The block's frame and packet wires, as ``graph`` needs them, under ``names``."""
        made: dict[tuple[str, str], Wire | PacketWire] = {}
        try:
            if spec.frame_bytes is not None:
                readers = len(graph.readers(spec.name)) + SPARE_READERS
                made[FRAMES, spec.name] = Wire.create(
                    names, spec.name, spec.frame_bytes, readers, group=self.group
                )
            if spec.packet_bytes is not None:
                own = 1 if spec.fed_by is not None else 0  # a remote block reads its own
                readers = len(graph.packet_readers(spec.name)) + own + SPARE_READERS
                made[PACKETS, spec.name] = PacketWire.create(
                    names, spec.name, spec.packet_bytes, readers, group=self.group
                )
        except BaseException:
            for wire in made.values():
                wire.unlink()
                wire.close()
            raise
        return made

    async def _switch(self, new: Graph, plan: _Plan, made: _Made) -> None:
        """Stop what changes, put the prepared objects in place, start. Makes nothing."""
        going = self.select((plan.changed - set(plan.added)) | set(plan.removed))
        # A start may slip in while we wait: stop until none is up or due to come back.
        while any(w.state in ALIVE or w.policy.restart_in is not None for w in going):
            await self.stop_blocks(going)
        # From here on nothing awaits: no command sees the graph half switched.
        for name in plan.removed:
            self._drop(name)
        self.history.forget(plan.removed)
        for name in plan.rewired:
            for kind in (FRAMES, PACKETS):
                wire = self._wires(kind).pop(name, None)
                staged = made.staged.get((kind, name))
                if staged is not None:
                    self._promote(kind, name, staged, made.staging)
                    self._wires(kind)[name] = staged
                if wire is not None:
                    self._unlink_wire(kind, name, wire, keep=staged)
                    wire.close()
        for (kind, name), wire in made.wires.items():
            self._wires(kind)[name] = wire
        self.graph = new
        if self.hub is not None:
            self.hub.use(new)
        self.blocks.update(made.watchers)
        self.reports.update(made.reports)
        self.start_blocks(self.autostarted(made.watchers.values()))

    def _wires(self, kind: str) -> dict[str, Any]:
        return self.wires if kind == FRAMES else self.packet_wires

    def _promote(self, kind: str, name: str, wire: Wire | PacketWire, staging: RunNames) -> None:
        """Rename a staged wire's segment and doorbells over the run's own names."""
        for old, new in zip(
            _wire_names(staging, kind, name, wire.layout.readers),
            _wire_names(self.names, kind, name, wire.layout.readers),
            strict=True,
        ):
            rename_entry(old, new)

    def _unlink_wire(
        self, kind: str, name: str, wire: Wire | PacketWire, keep: Wire | PacketWire | None = None
    ) -> None:
        """Unlink a wire's names of the run, but those its replacement ``keep`` took over."""
        kept = set(_wire_names(self.names, kind, name, keep.layout.readers)) if keep else set()
        for entry in _wire_names(self.names, kind, name, wire.layout.readers):
            if entry not in kept:
                unlink_entry(entry)

    async def close(self) -> None:
        """Stop every block, then unlink every object of the run."""
        if self._ticker is not None:
            self._ticker.cancel()
        await self.stop_blocks(self.every())
        for watcher in self.blocks.values():
            watcher.heartbeat.close()
        for report in self.reports.values():
            report.close()
        wires: list[Wire | PacketWire] = [*self.wires.values(), *self.packet_wires.values()]
        for wire in wires:
            wire.close()
        removed = unlink_run(self.names)
        log.info("stopped; removed %d objects of run %s", len(removed), self.names.run)

    # -- reporting ---------------------------------------------------------------------

    def status(self, watchers: Iterable[Watcher]) -> dict[str, Any]:
        """The object of ``pipectl status --json``, with these blocks (and every wire)."""
        return {
            "instance": self.names.instance,
            "run": self.names.run,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "graph": str(self.graph.path) if self.graph.path else None,
            "blocks": [w.status() for w in self._in_order(watchers)],
            "wires": self.wire_status(),
            "packet_wires": self.packet_wire_status(),
            "remote_wires": self.remote_wire_status(),
            **(self.outlets() if self.hub is not None else {}),
        }

    def outlets(self) -> dict[str, Any]:
        """What leaves the box: the event store, MQTT and the webhooks (docs/design.md)."""
        assert self.hub is not None
        out: dict[str, Any] = {"events": self.hub.status(), "mqtt": None, "webhooks": []}
        for sink in self.hub.sinks:
            out.update(sink.status())
        return out

    def wire_status(self) -> list[dict[str, Any]]:
        """Each wire, and the frames each reader let go by: ``missed`` for the readers it
        paces (their first input: a frame that went by was one to process), ``skipped``
        for those that sample it (a later input: the newest frame is all they want)."""
        out = []
        for name, wire in self.wires.items():
            stats = wire.stats()
            readers = self.graph.readers(name)
            gone = {r: stats["readers"][i]["dropped"] for i, r in enumerate(readers)}
            paced = {r for r in readers if self._first_frame_input(r) == name}
            out.append(
                {
                    "name": name,
                    "writer": name,
                    "readers": readers,
                    "frames": stats["frames"],
                    "missed": {r: n for r, n in gone.items() if r in paced},
                    "skipped": {r: n for r, n in gone.items() if r not in paced},
                    "slot_bytes": wire.layout.slot_bytes,
                    "slots": wire.layout.slots,
                }
            )
        return out

    def _first_frame_input(self, block: str) -> str | None:
        spec = self.graph.blocks[block]
        return next(
            (i for i, k in zip(spec.inputs, spec.kinds, strict=True) if k == "frames"), None
        )

    def packet_wire_status(self) -> list[dict[str, Any]]:
        out = []
        for name, wire in self.packet_wires.items():
            stats = wire.stats()
            readers = self.graph.packet_readers(name)
            per = dict(zip(readers, stats["readers"], strict=False))
            out.append(
                {
                    "name": name,
                    "writer": name,
                    "readers": readers,
                    "packets": stats["packets"],
                    "bytes": stats["bytes"],
                    "missed": {r: row["dropped"] for r, row in per.items()},
                    "gaps": {r: row["gaps"] for r, row in per.items()},
                    "ring_bytes": wire.layout.data_bytes,
                }
            )
        return out

    def remote_wire_status(self) -> list[dict[str, Any]]:
        """Each remote wire as the Zenoh link last reported it: block, direction (``out``:
        published, ``in``: a remote block), key, encoding, peer, state, frames, bytes, fps,
        bytes_per_s, missed (and for ``in``: refused, reason). A link that is not
        running reports nothing: its wires say so."""
        out: list[dict[str, Any]] = []
        for name, report in self.reports.items():
            watcher = self.blocks.get(name)
            document = (
                report.read() if watcher is not None and watcher.state == State.RUNNING else None
            )
            wires = document.get("remote_wires") if document else None
            if isinstance(wires, list):
                out += [w for w in wires if isinstance(w, dict)]
                continue
            state = watcher.state.value if watcher is not None else "absent"
            for wire in _remote_wires(self.graph, name):
                out.append({**wire, "state": f"link {state.lower()}", "peer": None})
        return out

    def summary(self) -> str:
        """One line for systemd's STATUS= and the log."""
        states = [p.state for p in self.blocks.values()]
        running = sum(s == State.RUNNING for s in states)
        failed = sum(s == State.FAILED for s in states)
        return f"{len(states)} blocks: {running} running, {failed} failed"


def reload_summary(result: dict[str, list[str]]) -> str:
    """What a reload did, for a person: ``restarted red (settings or wiring changed)``."""
    parts = []
    for key, why in (
        ("added", "new in the file"),
        ("removed", "gone from the file"),
        ("restarted", "settings or wiring changed"),
    ):
        names = result.get(key) or []
        if names:
            parts.append(f"{key} {', '.join(names)} ({why})")
    return "; ".join(parts) if parts else "nothing changed, no block restarted"
