"""The supervisor: owns one run of a graph, its wires, heartbeats and block watchers.

As circus's arbiter holds its watchers, the supervisor holds one ``Watcher`` per block
(watcher.py), which runs the block's worker by its restart policy. The supervisor
creates every wire before any worker starts (a reader never finds its input missing),
starts blocks sources first, and keeps the wires across a block's restarts, so the
readers of a restarting block simply wait. Stopping unlinks everything of the run.
Control commands (daemon/commands/) call the public methods here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from pipelined.workers.ipc.heartbeat import Heartbeat
from pipelined.workers.ipc.names import RunNames, new_run_token
from pipelined.workers.ipc.packets import PacketWire
from pipelined.workers.ipc.segment import unlink_run
from pipelined.workers.ipc.wire import Wire

from . import runs
from .graph import BlockSpec, Graph
from .history import History
from .process import worker_args
from .states import State
from .watcher import Watcher

log = logging.getLogger("pipelined")
SPARE_READERS = 2
"""Reader slots on every wire beyond the graph's readers, for live viewers."""
TICK = 0.1
STARTING_TICK = 0.01
"""While a block starts, its first heartbeat is looked for often: it marks it RUNNING."""
SAMPLE_EVERY = 1.0


class Supervisor:
    """One daemon start: a run token, the graph it runs, and everything it created."""

    def __init__(self, graph: Graph, instance: str, group: int | None = None):
        self.graph = graph
        self.names = RunNames(instance, new_run_token())
        self.group = group
        self.wires: dict[str, Wire] = {}
        self.packet_wires: dict[str, PacketWire] = {}
        self.blocks: dict[str, Watcher] = {}
        self.started = time.monotonic()
        self.history = History()
        self._ticker: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()

    # -- the run's objects -------------------------------------------------------------

    def open(self) -> None:
        """Clean up dead runs, then create this run's wires and heartbeats."""
        runs.remove_dead_runs(self.names.instance, keep=self.names.run)
        runs.claim(self.names, self.group)
        try:
            for name in self.graph.order():
                self._create(self.graph.blocks[name])
        except BaseException:
            unlink_run(self.names)
            raise
        log.info(
            "run %s of instance %s: %d blocks, %d wires",
            self.names.run,
            self.names.instance,
            len(self.blocks),
            len(self.wires),
        )

    def _create(self, spec: BlockSpec) -> None:
        """Make the block's watcher, and its wire and heartbeat unless they exist already.

        A block restarted by a reload keeps both, so its readers stay attached.
        """
        name = spec.name
        if spec.frame_bytes is not None and name not in self.wires:
            readers = len(self.graph.readers(name)) + SPARE_READERS
            self.wires[name] = Wire.create(
                self.names, name, spec.frame_bytes, readers, group=self.group
            )
        if spec.packet_bytes is not None and name not in self.packet_wires:
            readers = len(self.graph.packet_readers(name)) + SPARE_READERS
            self.packet_wires[name] = PacketWire.create(
                self.names, name, spec.packet_bytes, readers, group=self.group
            )
        old = self.blocks.get(name)
        beat = old.heartbeat if old else Heartbeat.create(self.names, name, self.group)
        self.blocks[name] = Watcher(spec, worker_args(self.names, spec, self.graph), beat)

    def _drop_wire(self, name: str) -> None:
        """Unlink the block's frame and packet wires (readers that have them mapped keep them)."""
        for wire in (self.wires.pop(name, None), self.packet_wires.pop(name, None)):
            if wire is not None:
                wire.unlink()
                wire.close()

    def _drop(self, name: str) -> None:
        """Forget a stopped block: unlink its wire and heartbeat."""
        watcher = self.blocks.pop(name)
        watcher.heartbeat.unlink()
        watcher.heartbeat.close()
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

        A changed block keeps its wire, so its readers carry on. A wire that changes size
        or readers is made anew, and its readers restart with it, since their reader
        slots belong to the old one.
        """
        async with self._reloading:
            old, new = self.graph, graph
            removed = [n for n in old.blocks if n not in new.blocks]
            added = [n for n in new.blocks if n not in old.blocks]
            kept = [n for n in old.blocks if n in new.blocks]
            changed = {n for n in kept if old.blocks[n] != new.blocks[n]}
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
            await self.stop_blocks(self.select(changed | set(removed)))
            for name in removed:
                self._drop(name)
            self.history.forget(removed)
            for name in rewired:
                self._drop_wire(name)
            self.graph = new
            for name in new.order():
                if name in added or name in changed:
                    self._create(new.blocks[name])
            self.start_blocks(self.autostarted(self.select(changed | set(added))))
            result = {"added": added, "removed": removed, "restarted": sorted(changed)}
            log.info("reloaded %s: %s", new.source, result)
            return result

    async def close(self) -> None:
        """Stop every block, then unlink every object of the run."""
        if self._ticker is not None:
            self._ticker.cancel()
        await self.stop_blocks(self.every())
        for watcher in self.blocks.values():
            watcher.heartbeat.close()
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
        }

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

    def summary(self) -> str:
        """One line for systemd's STATUS= and the log."""
        states = [p.state for p in self.blocks.values()]
        running = sum(s == State.RUNNING for s in states)
        failed = sum(s == State.FAILED for s in states)
        return f"{len(states)} blocks: {running} running, {failed} failed"
