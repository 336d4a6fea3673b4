"""Loading and validating a graph file, before anything starts.

Everything a graph can get wrong is found here, at once, so that a user fixes the file
in one pass and the daemon never half-starts a graph: every problem is collected and
names the file, the block and the reason (``graph.toml: block 'red': …``). Loading
only reads: it creates nothing in /dev/shm (it asks /dev/shm how much space is free).

Decisions (docs/design.md, "The graph file"):

- The common keys of every block are ``type``, ``input``/``inputs``, ``max_frame_bytes``
  and the ``[supervisor]`` keys; a block type cannot declare a parameter with one of
  those names.
- ``max_frame_bytes`` may raise a block's slot above what the block says its frames
  need, never below: a smaller slot is a frame that cannot fit.
- A block reads each input once; ``liveness_interval`` must be above 0 (0 would spin).
- The /dev/shm check counts the whole graph against the space free now, so a reload
  of a graph that needs more than half of /dev/shm can be refused while the old one runs.
- A user's block type is never imported here: its class and checks are asked of a
  short-lived worker process (probe.py), so nothing its module does can end, hang or
  change the daemon. Built-in types are imported as before.
- A parameter declared ``state_path`` (a recorder's ``directory``) that is relative is
  made absolute under the state directory given to loading (the daemon's
  ``--state-dir``), so what a graph writes never lands where the daemon happened to be
  started (a clone of the repository); the Graph keeps that directory for its reloads.
  A user type's ``state_path`` parameters are known from the probe's answer, as the
  rest of its declaration is.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import sys
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipelined.workers import codec
from pipelined.workers.block import Block, Kind, Param
from pipelined.workers.blocks.link import Link
from pipelined.workers.contract import (
    SECRET_PLACEHOLDER,
    is_secret_name,
    mask,
    redact,
    secret_strings,
    split_secrets,
    url_password_problem,
)
from pipelined.workers.ipc import wire
from pipelined.workers.ipc.names import SHM_DIR, check_block
from pipelined.workers.ipc.packets import packet_wire_bytes
from pipelined.workers.net.settings import (
    LinkPlan,
    Publication,
    Subscription,
    ZenohSettings,
    parse_publish,
    parse_zenoh,
)
from pipelined.workers.registry import BlockTypeError
from pipelined.workers.video.options import EncodeOptions, parse_encode

from .events.config import (
    EventsConfig,
    MqttConfig,
    WebhooksConfig,
    parse_events,
    parse_mqtt,
    parse_webhooks,
    shown_url,
)
from .probe import RemoteBlock, UserCodeError, UserTypes

BlockType = type[Block] | RemoteBlock
"""A built-in's class, or what a user's class declares (asked of a probe process)."""

RESTART_POLICIES = ("always", "on-failure", "never")
SLOTS = 4
"""Slots in each wire's ring."""
MAX_SLOT_BYTES = 512 * 1024 * 1024
"""The largest frame a wire takes: far above 8K RGB, below a typo's 100 GB."""
BUILTIN_SOURCE = "<built-in>"
MIN_PACKET_BYTES = 4096
"""The smallest packet ring a block may ask for."""
LINK_NAME = "zenoh"
"""The block the daemon adds to a graph with remote wires: its Zenoh link (net/link.py)."""
LINK_TYPE = "zenoh"
ARGS_MARGIN = 4096
"""Room in a worker's one-argument command line for what the daemon adds to the params."""


def wire_bytes(frame_bytes: int, readers: int = 1) -> int:
    """Shared memory one wire takes for frames of up to ``frame_bytes``: the wire's own sum."""
    return wire.wire_bytes(frame_bytes, readers, SLOTS)


def _key(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Supervision:
    """How the supervisor runs one block: the ``[supervisor]`` keys of docs/design.md."""

    restart: str = _key("always", "always | on-failure (not after exit 0) | never")
    backoff_initial: float = _key(0.1, "seconds before the first restart; doubles per crash")
    backoff_max: float = _key(30.0, "the longest backoff, in seconds")
    restart_limit: int = _key(5, "more crashes than this within restart_window: FAILED")
    restart_window: float = _key(60.0, "seconds over which restart_limit counts crashes")
    retry_failed_after: float = _key(
        300.0, "seconds after which a block FAILED by crashes starts again; 0 = never"
    )
    watchdog: float = _key(5.0, "seconds without a heartbeat before a worker is killed; 0 = off")
    startup_timeout: float = _key(30.0, "seconds from launch to the first heartbeat; 0 = none")
    stop_timeout: float = _key(5.0, "seconds from SIGTERM to SIGKILL when stopping")
    liveness_interval: float = _key(
        0.5, "seconds between a worker's checks that the daemon is alive (> 0)"
    )
    autostart: bool = _key(
        True, "false: not started with the graph, only when asked (pipectl start BLOCK)"
    )


SUPERVISOR_KEYS = tuple(f.name for f in fields(Supervision))
BLOCK_KEYS = {
    "type": 'the block\'s type: a built-in, or "package.module:Class" for your own',
    "input": "the block it reads (one name)",
    "inputs": "the blocks it reads, in order (an array of names)",
    "max_frame_bytes": "raises the output slot above what the type computes, never below",
    "encode": 'encode the block\'s frames once for every reader of video: "h264" or a table',
    "publish": 'send the block\'s output to other boxes under a Zenoh key: "site1/door/cam"'
    " or a table (key, encoding, congestion, reliability, quality)",
}
"""The keys every block has besides its type's parameters (and the [supervisor] keys)."""
COMMON_KEYS = (*BLOCK_KEYS, *SUPERVISOR_KEYS)
TOP_LEVEL_KEYS = ("supervisor", "blocks", "events", "mqtt", "webhooks", "zenoh")


@dataclass(frozen=True)
class BlockSpec:
    """One block, validated: what the daemon needs to create its wire and launch it."""

    name: str
    type: str
    cls: BlockType
    params: dict[str, Any]
    inputs: tuple[str, ...]
    supervision: Supervision
    frame_bytes: int | None
    packet_bytes: int | None = None  # the ring of its packet wire, when it publishes packets
    input_kinds: tuple[Kind, ...] = ()  # what it takes of each input: frames or packets
    encode: EncodeOptions | None = None  # its frames encoded by the runtime (``encode``)
    publish: Publication | None = None  # its output sent to other boxes (``publish``)
    fed_by: str | None = None  # the block that writes its packet wire (a remote's: the link)

    def reads(self, name: str, kind: Kind = "frames") -> bool:
        """Whether this block reads ``name``'s wire of that kind."""
        return any(i == name and k == kind for i, k in zip(self.inputs, self.kinds, strict=True))

    @property
    def kinds(self) -> tuple[Kind, ...]:
        frames: tuple[Kind, ...] = ("frames",)
        return self.input_kinds or frames * len(self.inputs)


@dataclass(frozen=True)
class Graph:
    """A validated graph; ``blocks`` keeps the file's order."""

    source: str
    path: Path | None
    blocks: dict[str, BlockSpec]
    state_dir: Path | None = None
    """Where relative ``state_path`` parameters were put; a reload uses the same."""
    events: EventsConfig = field(default_factory=EventsConfig)
    mqtt: MqttConfig | None = None
    webhooks: WebhooksConfig | None = None

    def readers(self, name: str) -> list[str]:
        """The blocks that read ``name``'s frame wire, in graph order."""
        return [b.name for b in self.blocks.values() if b.reads(name, "frames")]

    def packet_readers(self, name: str) -> list[str]:
        """The blocks that read ``name``'s packet wire, in graph order."""
        return [b.name for b in self.blocks.values() if b.reads(name, "packets")]

    def order(self) -> list[str]:
        """Every block after the blocks it reads: the order to start them in."""
        return _topological({n: b.inputs for n, b in self.blocks.items()})


class GraphError(Exception):
    """A graph that cannot run; ``problems`` holds every reason, each a full sentence."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_graph(
    path: str | Path, state_dir: Path | None = None, types: UserTypes | None = None
) -> Graph:
    """Read and validate a graph file. ``source`` is the path as given, for messages.

    With ``state_dir``, relative ``state_path`` parameters (a recorder's folder) are put
    under it; without, they stay relative to the daemon's working directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError([f"{path}: cannot read the graph file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise GraphError([f"{path}: the graph file is not UTF-8 text: {exc}"]) from None
    return parse_graph(text, str(path), path.absolute(), state_dir, types)


def parse_graph(
    text: str,
    source: str,
    path: Path | None = None,
    state_dir: Path | None = None,
    types: UserTypes | None = None,
) -> Graph:
    """Validate graph text; ``source`` names it in every problem.

    User block types are asked of ``types`` (by default a new ``UserTypes``, whose probe
    process ends with the load).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GraphError([f"{source}: not valid TOML: {exc}"]) from None
    with types or UserTypes() as asked:
        return _Loader(source, asked, state_dir).build(data, path)


DEMO_GRAPH = Path(__file__).with_name("demo.toml")
"""The built-in demo's graph file; examples/five-blocks.toml is a link to it."""


def default_graph(state_dir: Path | None = None) -> Graph:
    """The built-in demo: ``daemon/demo.toml`` as it is, so the file and the demo are one
    graph (its screen waits to be asked: ``autostart = false``). With ``state_dir`` its
    recorder records into ``state_dir/recordings``, as any graph's would."""
    data = tomllib.loads(DEMO_GRAPH.read_text(encoding="utf-8"))
    with UserTypes() as types:  # built-ins only: no process is started
        return _Loader(BUILTIN_SOURCE, types, state_dir).build(data, None)


def describe(graph: Graph) -> str:
    """The graph as ``pipelined --check`` prints it: blocks, wires, sizes, settings."""
    wires = {n: b.frame_bytes for n, b in graph.blocks.items() if b.frame_bytes is not None}
    packets = {n: b.packet_bytes for n, b in graph.blocks.items() if b.packet_bytes is not None}
    total = sum(wire_bytes(f, len(graph.readers(n))) for n, f in wires.items())
    total += sum(packet_wire_bytes(p, len(graph.packet_readers(n))) for n, p in packets.items())
    count = f"{len(wires)} wires" + (f", {len(packets)} packet wires" if packets else "")
    lines = [
        f"{graph.source}: {len(graph.blocks)} blocks, {count}, {_size(total)} of shared memory"
    ]
    for b in graph.blocks.values():
        head = f"  {b.name} ({b.type})"
        if b.inputs:
            head += " <- " + ", ".join(b.inputs)
        if b.frame_bytes is not None:
            readers = ", ".join(graph.readers(b.name)) or "no one"
            head += f": frames up to {_size(b.frame_bytes)}, read by {readers}"
        if b.packet_bytes is not None:
            readers = ", ".join(graph.packet_readers(b.name)) or "no one"
            head += f"; packets in {_size(b.packet_bytes)}, read by {readers}"
        lines.append(head)
        if b.type == LINK_TYPE and b.cls is Link:
            plan = LinkPlan.from_params(b.params)
            lines.append(f"      the daemon's Zenoh link: {plan.settings.describe()}")
            for sub in plan.subscriptions:
                lines.append(f"      zenoh:{sub.key} -> {sub.block} ({sub.encoding})")
            continue
        settings, _ = split_secrets({**b.params, **_changed(b.supervision)})  # output gets pasted
        if settings:
            lines.append("      " + ", ".join(f"{k} = {_show(v)}" for k, v in settings.items()))
        if b.encode is not None:
            lines.append(f"      encode: {b.encode.describe()}")
        if b.publish is not None:
            lines.append(f"      publish: {b.publish.describe()}")
    if graph.mqtt is not None:
        m = graph.mqtt
        tls = " with TLS" if m.uses_tls else ""
        extras = [w for w, on in (("commands", m.commands), ("discovery", m.discovery)) if on]
        lines.append(
            f"  mqtt: {m.host}:{m.broker_port}{tls}, prefix {m.prefix or 'pipelined/<instance>'}"
            + (f", {' and '.join(extras)}" if extras else "")
        )
    if graph.webhooks is not None:
        shown = ", ".join(shown_url(u) for u in graph.webhooks.urls)
        lines.append(f"  webhooks: {shown} ({', '.join(graph.webhooks.phases)})")
    return "\n".join(lines)


class _Loader:
    """One validation pass: collects every problem, builds the Graph only if there is none."""

    def __init__(self, source: str, types: UserTypes, state_dir: Path | None = None):
        self.source = source
        self.types = types
        self.state_dir = state_dir
        self.beside: Path | None = None  # the graph file's folder: user modules may live there
        self.problems: list[str] = []
        self.miswired: set[str] = set()  # blocks with wrong inputs: not sized, not to pile on
        self.secrets: dict[str, list[str]] = {}  # per block: values no problem may show

    def fits_command_line(self, name: str, params: dict[str, Any]) -> None:
        """A worker gets its parameters as one argument: refuse now what exec would."""
        public, _ = split_secrets(params)
        try:
            size = len(codec.encode(public))
        except codec.CodecError as exc:
            self.say(name, f"its parameters cannot be passed to the worker: {exc}")
            return
        if size > codec.MAX_ARG_BYTES - ARGS_MARGIN:
            self.say(
                name,
                f"its parameters take {size:,} bytes encoded; a worker's command line holds"
                f" {codec.MAX_ARG_BYTES - ARGS_MARGIN:,} for them. Move large data to a file"
                " and pass its path.",
            )

    def say(self, block: str | None, problem: str) -> None:
        """Report a problem; a block's secrets are hidden in it, whoever wrote the words
        (a user block's check or ``validate`` may quote any parameter)."""
        where = f"block {block!r}: " if block is not None else ""
        problem = mask(problem, self.secrets.get(block, [])) if block is not None else problem
        self.problems.append(f"{self.source}: {where}{problem}")

    def build(self, data: dict[str, Any], path: Path | None) -> Graph:
        self.beside = path.parent if path is not None else None
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.say(None, f"unknown top-level key {key!r}{_hint(key, TOP_LEVEL_KEYS)}")
        events, mqtt, webhooks = self.outside(data)
        defaults = self.supervision(None, data.get("supervisor", {}), Supervision())
        tables = data.get("blocks")
        if not isinstance(tables, dict) or not tables:
            self.say(None, "no blocks: add at least one [blocks.NAME] table")
            raise GraphError(self.problems)
        for name, table in tables.items():
            try:
                check_block(name)
            except ValueError as exc:
                self.say(name, str(exc))
            if not isinstance(table, dict):
                self.say(name, f"must be a table ([blocks.{name}]), not {_show(table)}")
        tables = {n: t for n, t in tables.items() if isinstance(t, dict)}
        self.secrets = {n: secret_strings(t) for n, t in tables.items()}

        classes = {n: c for n, t in tables.items() if (c := self.block_class(n, t))}
        params = {
            n: p for n, c in classes.items() if (p := self.params(n, c, tables[n])) is not None
        }
        supervision = {n: self.supervision(n, t, defaults) for n, t in tables.items()}
        inputs = {n: self.inputs(n, t, tables, classes) for n, t in tables.items()}
        self.cycles(inputs)
        frames = self.frame_sizes(tables, classes, params, inputs)
        packets = {
            n: b for n, c in classes.items() if n in params and (b := self.packets(n, c, params[n]))
        }
        encodes = {
            n: e
            for n, t in tables.items()
            if "encode" in t and (e := self.encode(n, t, classes, packets, frames))
        }
        packets |= {n: e.ring_bytes() for n, e in encodes.items()}
        offered = {n for n in packets if n in params and _offers_packets(classes[n], params[n])}
        publications = {
            n: pub
            for n, t in tables.items()
            if "publish" in t and (pub := self.publication(n, t, classes, offered, frames))
        }
        remotes = {
            n: params[n] for n, t in tables.items() if t.get("type") == "remote" and n in params
        }
        for name in remotes:
            if name in frames and name in packets and remotes[name]["encoding"] == "raw":
                packets[name] = max(packets[name], 3 * frames[name])  # two whole raw frames
        link = self.link(data, tables, publications, remotes, packets, frames, defaults)
        if link is not None:
            inputs[link.name] = link.inputs
        kinds = {
            n: k
            for n, c in classes.items()
            if n in params and (k := self.kinds(n, c, params[n], inputs[n], offered, tables))
        }
        if link is not None:
            kinds[link.name] = link.input_kinds
        for name, values in params.items():
            self.fits_command_line(name, values)
        self.fits_shared_memory(frames, packets, inputs, kinds)
        if self.problems:
            raise GraphError(self.problems)
        blocks = {
            n: BlockSpec(
                n,
                t["type"],
                classes[n],
                params[n],
                inputs[n],
                supervision[n],
                frames.get(n),
                packets.get(n),
                kinds.get(n, ()),
                encodes.get(n),
                publications.get(n),
                LINK_NAME if n in remotes else None,
            )
            for n, t in tables.items()
        }
        if link is not None:
            blocks[link.name] = link
        for name, spec in blocks.items():
            for problem in clip_problems(spec, blocks):
                self.say(name, problem)
        if self.problems:
            raise GraphError(self.problems)
        return Graph(self.source, path, blocks, self.state_dir, events, mqtt, webhooks)

    def outside(
        self, data: dict[str, Any]
    ) -> tuple[EventsConfig, MqttConfig | None, WebhooksConfig | None]:
        """The tables for what leaves the box: ``[events]``, ``[mqtt]``, ``[webhooks]``."""
        events, problems = parse_events(data.get("events", {}))
        mqtt: MqttConfig | None = None
        webhooks: WebhooksConfig | None = None
        if "mqtt" in data:
            mqtt, more = parse_mqtt(data["mqtt"])
            problems += more
        if "webhooks" in data:
            webhooks, more = parse_webhooks(data["webhooks"])
            problems += more
        for problem in problems:
            self.say(None, problem)
        return events, mqtt, webhooks

    def block_class(self, name: str, table: dict[str, Any]) -> BlockType | None:
        type_name = table.get("type")
        if type_name is None:
            self.say(name, 'no type: set type = "camera", say, or "package.module:ClassName"')
            return None
        if not isinstance(type_name, str):
            self.say(name, f"type must be a string, not {_show(type_name)}")
            return None
        try:
            cls = self.types.resolve(type_name, self.beside)
        except BlockTypeError as exc:
            self.say(name, str(exc))
            return None
        for key in sorted(set(cls.params) & set(COMMON_KEYS)):
            self.say(name, f"block type {type_name!r} declares parameter {key!r}, a reserved key")
        return cls

    def params(self, name: str, cls: BlockType, table: dict[str, Any]) -> dict[str, Any] | None:
        """The block's own parameters, defaults filled in; None if any is wrong."""
        before = len(self.problems)
        for key in table:
            if key not in cls.params and key not in COMMON_KEYS:
                valid = [*cls.params, *COMMON_KEYS]
                hint = _hint(key, valid) or f" (it takes: {', '.join(cls.params) or 'none'})"
                self.say(name, f"unknown parameter {key!r} for type {table['type']!r}{hint}")
        values = {}
        for key, param in cls.params.items():
            if key not in table:
                if param.required:
                    self.say(name, f"missing parameter {key!r}{_doc(param.doc)}")
                values[key] = copy.deepcopy(param.default)
            elif shown_problem := _url_problem(table[key]):
                self.say(name, f"parameter {key!r} = {shown_problem}")
            elif problem := _param_problem(param, table[key]):
                if is_secret_name(key):  # "not int 123456": never a secret's value
                    problem = _hide_value(problem, table[key])
                self.say(name, f"parameter {key!r} {problem}")
            else:
                values[key] = table[key]
        if len(self.problems) > before:
            return None
        try:
            for problem in cls.validate(values):
                self.say(name, problem)
        except Exception as exc:  # user code
            self.say(name, f"{cls.__name__}.validate failed: {_failure(exc)}")
        if len(self.problems) > before:
            return None
        return self.placed(cls, values)

    def placed(self, cls: BlockType, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with each relative ``state_path`` under the state directory."""
        if self.state_dir is None:
            return values
        for key, param in cls.params.items():
            value = values.get(key)
            if param.state_path and isinstance(value, str) and value:
                values[key] = str(self.state_dir / value)  # an absolute value stays as it is
        return values

    def fits_shared_memory(
        self,
        frames: dict[str, int],
        packets: dict[str, int],
        inputs: dict[str, tuple[str, ...]],
        kinds: dict[str, tuple[Kind, ...]],
    ) -> None:
        """Refuse now a graph whose wires /dev/shm cannot hold (it asks for the free space)."""

        def readers(name: str, kind: Kind) -> int:
            return sum(
                (i, k) == (name, kind)
                for n, ins in inputs.items()
                for i, k in zip(ins, kinds.get(n) or ("frames",) * len(ins), strict=False)
            )

        total = sum(wire_bytes(size, readers(n, "frames")) for n, size in frames.items())
        total += sum(packet_wire_bytes(size, readers(n, "packets")) for n, size in packets.items())
        free = _shm_free()
        if free is not None and total > free:
            self.say(
                None,
                f"the wires need {_size(total)} of shared memory, but {SHM_DIR} has only"
                f" {_size(free)} free",
            )

    def packets(self, name: str, cls: BlockType, params: dict[str, Any]) -> int | None:
        """The size of the block's packet ring, if it publishes packets."""
        try:
            size = cls.packet_bytes(params)
        except Exception as exc:  # user code
            self.say(name, f"{cls.__name__}.packet_bytes failed: {_failure(exc)}")
            return None
        if size is not None and not (_is_int(size) and size >= MIN_PACKET_BYTES):
            self.say(name, f"{cls.__name__}.packet_bytes returned {size!r}, not a size >= 4096")
            return None
        return size

    def encode(
        self,
        name: str,
        table: dict[str, Any],
        classes: dict[str, BlockType],
        packets: dict[str, int],
        frames: dict[str, int],
    ) -> EncodeOptions | None:
        """The block's ``encode`` key: checked, and only where there are frames to encode."""
        options, problems = parse_encode(table["encode"])
        for problem in problems:
            self.say(name, problem)
        if options is None:
            return None
        cls = classes.get(name)
        if cls is not None and not cls.has_output:
            self.say(name, f"type {table['type']!r} has no output to encode: remove encode")
            return None
        if name in packets:
            self.say(
                name,
                "publishes its source's own encoded packets already (an rtsp:// camera, a"
                " file, a device asked for MJPEG or H264): remove encode",
            )
            return None
        return options if name in frames else None

    def publication(
        self,
        name: str,
        table: dict[str, Any],
        classes: dict[str, BlockType],
        offered: Collection[str],
        frames: dict[str, int],
    ) -> Publication | None:
        """The block's ``publish`` key: checked, and only where there is output to send."""
        cls = classes.get(name)
        if cls is not None and not cls.has_output:
            self.say(name, f"type {table['type']!r} has no output to publish: remove publish")
            return None
        publication, problems = parse_publish(table["publish"], name in offered)
        for problem in problems:
            self.say(name, problem)
        if publication is None or (publication.kind == "frames" and name not in frames):
            return None
        return publication

    def link(
        self,
        data: dict[str, Any],
        tables: dict[str, Any],
        publications: dict[str, Publication],
        remotes: dict[str, dict[str, Any]],
        packets: dict[str, int],
        frames: dict[str, int],
        supervision: Supervision,
    ) -> BlockSpec | None:
        """The Zenoh link block, for a graph that publishes or reads remote wires."""
        settings: ZenohSettings | None = None
        if "zenoh" in data:
            settings, problems = parse_zenoh(data["zenoh"])
            for problem in problems:
                self.say(None, problem)
        published = [b for b in tables if "publish" in tables[b]]
        if not published and not remotes:
            return None
        users = ", ".join(repr(n) for n in [*published, *remotes][:3])
        if "zenoh" not in data:
            self.say(
                None,
                f"blocks {users} send or read remote wires, and there is no [zenoh] table to"
                ' say where the other boxes are: add [zenoh] with listen = ["tcp/0.0.0.0:7447"]'
                ' or connect = ["tcp/HOST:7447"]',
            )
        elif settings is not None and not (
            settings.connect or settings.listen or settings.scouting
        ):
            self.say(
                None,
                f"[zenoh]: blocks {users} send or read remote wires, and [zenoh] reaches no"
                " other box: set listen or connect (or scouting = true)",
            )
        if LINK_NAME in tables:
            self.say(
                LINK_NAME,
                f"the name {LINK_NAME!r} is the daemon's Zenoh link in a graph with remote"
                " wires: rename this block",
            )
        keys: dict[str, str] = {}
        for name, publication in publications.items():
            if publication.key in keys:
                self.say(
                    name, f"publishes {publication.key!r}, as block {keys[publication.key]!r} does"
                )
            keys.setdefault(publication.key, name)
        self.one_congestion(publications)
        if settings is None or self.problems:
            return None
        subscriptions = tuple(
            Subscription(
                block=name,
                key=params["source"].removeprefix("zenoh:"),
                encoding=params["encoding"],
                ring_bytes=packets[name],
                frame_bytes=frames[name],
                stall_timeout=params["stall_timeout"],
            )
            for name, params in remotes.items()
        )
        plan = LinkPlan(settings, publications, subscriptions)
        kinds: tuple[Kind, ...] = tuple(
            "packets" if p.kind == "packets" else "frames" for p in publications.values()
        )
        return BlockSpec(
            name=LINK_NAME,
            type=LINK_TYPE,
            cls=Link,
            params=plan.to_params(),
            inputs=tuple(publications),
            supervision=supervision,
            frame_bytes=None,
            input_kinds=kinds,
        )

    def one_congestion(self, publications: dict[str, Publication]) -> None:
        """A box's publications share one Zenoh queue, whose waits Zenoh sets per session
        (``settings.queue_waits``): they all take the same congestion control."""
        first: dict[str, str] = {}
        for name, publication in publications.items():
            first.setdefault(publication.congestion, name)
        if len(first) > 1:
            (one, a), (other, b) = list(first.items())[:2]
            self.say(
                b,
                f"publishes with congestion {other!r}, and block {a!r} with {one!r}: a"
                " box's publications share one Zenoh queue, whose waits Zenoh sets for the"
                " whole session; give them all the same congestion",
            )

    def kinds(
        self,
        name: str,
        cls: BlockType,
        params: dict[str, Any],
        inputs: tuple[str, ...],
        packets: Collection[str],
        tables: dict[str, Any],
    ) -> tuple[Kind, ...] | None:
        """What the block takes of each input; a packet input must carry packets (that the
        block offers to readers: ``packets``)."""
        offered = [i in packets for i in inputs]
        try:
            kinds = tuple(cls.input_kinds(params, offered))
        except Exception as exc:  # user code
            self.say(name, f"{cls.__name__}.input_kinds failed: {_failure(exc)}")
            return None
        if len(kinds) != len(inputs) or not set(kinds) <= {"frames", "packets"}:
            self.say(
                name, f"{cls.__name__}.input_kinds returned {kinds!r} for {len(inputs)} inputs"
            )
            return None
        for i, kind in zip(inputs, kinds, strict=True):
            if kind == "packets" and i not in packets and i in tables:
                self.say(
                    name,
                    f"takes encoded video from {i!r}, but {i!r} ({tables[i].get('type')!r})"
                    " publishes no packets: give it an encoded source (an rtsp:// camera, a"
                    " video file), or take its frames",
                )
        if "packets" in kinds and len(kinds) > 1:
            self.say(name, "takes encoded video, which it can do from one input only")
        return kinds

    def supervision(
        self, block: str | None, table: Mapping[str, Any], base: Supervision
    ) -> Supervision:
        """``base`` with the supervisor keys in ``table`` applied; wrong ones reported."""
        if not isinstance(table, dict):
            self.say(None, f"[supervisor] must be a table, not {_show(table)}")
            return base
        changes: dict[str, Any] = {}
        for key, value in table.items():
            if key not in SUPERVISOR_KEYS:
                if block is None:
                    self.say(
                        None, f"[supervisor]: unknown key {key!r}{_hint(key, SUPERVISOR_KEYS)}"
                    )
                continue
            problem = _supervisor_problem(key, value)
            if problem:
                self.say(block, f"{key} {problem}" if block else f"[supervisor]: {key} {problem}")
            else:
                plain = key in ("restart", "restart_limit", "autostart")
                changes[key] = value if plain else float(value)
        return replace(base, **changes)

    def inputs(
        self,
        name: str,
        table: dict[str, Any],
        tables: dict[str, Any],
        classes: dict[str, BlockType],
    ) -> tuple[str, ...]:
        """The blocks ``name`` reads, as written; reports names, counts and self-reads."""
        raw = self.input_names(name, table)
        if raw is None:
            self.miswired.add(name)
            return ()
        before = len(self.problems)
        for i in sorted({i for i in raw if raw.count(i) > 1}):
            self.say(name, f"reads {i!r} more than once")
        for i in dict.fromkeys(raw):
            if i == name:
                self.say(name, "reads itself: a block cannot be its own input")
            elif i not in tables:
                self.say(name, f"input {i!r} names no block{_hint(i, list(tables))}")
            elif i in classes and not classes[i].has_output:
                self.say(name, f"input {i!r} is a {tables[i]['type']!r} block, which has no output")
        if name in classes:
            cls = classes[name]
            low, high = cls.min_inputs, cls.max_inputs
            if len(raw) < low or (high is not None and len(raw) > high):
                self.say(name, f"type {table['type']!r} takes {_count(low, high)}, not {len(raw)}")
        if len(self.problems) > before:
            self.miswired.add(name)
        return tuple(raw)

    def input_names(self, name: str, table: dict[str, Any]) -> list[str] | None:
        """``input = "x"`` or ``inputs = [...]`` as a list; None if written wrong."""
        if "input" in table and "inputs" in table:
            self.say(name, "sets both input and inputs: use one of them")
            return None
        raw = table.get("inputs", [table["input"]] if "input" in table else [])
        if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
            key = "inputs" if "inputs" in table else "input"
            want = "an array of block names" if key == "inputs" else "a block name"
            self.say(name, f"{key} must be {want}, not {_show(table[key])}")
            return None
        return raw

    def cycles(self, inputs: dict[str, tuple[str, ...]]) -> None:
        """Report each cycle once, on its first block in file order."""
        order = list(inputs)
        seen: set[frozenset[str]] = set()
        state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
        stack: list[str] = []

        def visit(n: str) -> None:
            state[n] = 1
            stack.append(n)
            for i in inputs[n]:
                if i not in inputs or i == n:
                    continue  # reported already
                if state.get(i) == 1:
                    loop = stack[stack.index(i) :]
                    if frozenset(loop) not in seen:
                        seen.add(frozenset(loop))
                        first = min(loop, key=order.index)
                        k = loop.index(first)
                        # reversed: the arrows follow the data, from writer to reader
                        path = [*loop[k:], *loop[:k], first][::-1]
                        self.say(first, "is in a cycle: " + " -> ".join(path))
                elif i not in state:
                    visit(i)
            stack.pop()
            state[n] = 2

        for n in order:
            if n not in state:
                visit(n)

    def frame_sizes(
        self,
        tables: dict[str, Any],
        classes: dict[str, BlockType],
        params: dict[str, dict[str, Any]],
        inputs: dict[str, tuple[str, ...]],
    ) -> dict[str, int]:
        """Each output's slot size, from its inputs' sizes; checks fit and /dev/shm space."""
        declared: dict[str, int | None] = {}  # blocks whose max_frame_bytes is fine or unset
        for name, table in tables.items():
            value = table.get("max_frame_bytes")
            if value is not None and not (_is_int(value) and value > 0):
                self.say(name, f"max_frame_bytes must be an integer > 0, not {_show(value)}")
            elif value is not None and name in classes and not classes[name].has_output:
                self.say(name, f"type {table['type']!r} has no output: remove max_frame_bytes")
            else:
                declared[name] = value
        sizes: dict[str, int] = {}
        for name in _topological(inputs):
            if name not in params or name not in declared or name in self.miswired:
                continue
            if not classes[name].has_output:
                continue
            if any(i not in sizes for i in inputs[name]):
                continue  # an input is wrong, and reported
            want = declared[name]
            ins = [sizes[i] for i in inputs[name]]
            needed = self.output_bytes(name, classes[name], params[name], ins, want is not None)
            if want is not None and needed is not None and want < needed:
                self.say(
                    name,
                    f"max_frame_bytes = {want} is smaller than its frames:"
                    f" up to {needed} bytes ({_size(needed)})",
                )
                continue
            size = want or needed
            if size is None:
                continue
            if size > MAX_SLOT_BYTES:
                self.say(
                    name,
                    f"frames of up to {size} bytes ({_size(size)}) are more than a wire takes"
                    f" ({_size(MAX_SLOT_BYTES)})",
                )
                continue
            sizes[name] = size
        return sizes

    def output_bytes(
        self, name: str, cls: BlockType, params: dict[str, Any], sizes: list[int], declared: bool
    ) -> int | None:
        """What the block says its largest frame is; None if it cannot say."""
        try:
            size = cls.max_output_bytes(params, sizes)
        except NotImplementedError:
            if not declared:
                self.say(
                    name,
                    f"{cls.__name__} does not say how large its frames are: set max_frame_bytes",
                )
            return None
        except Exception as exc:  # user code
            self.say(name, f"{cls.__name__}.max_output_bytes failed: {_failure(exc)}")
            return None
        if not (_is_int(size) and size > 0):
            self.say(name, f"{cls.__name__}.max_output_bytes returned {size!r}, not a size > 0")
            return None
        return size


RECORDER = "pipelined.workers.blocks.recorder"


def is_recorder(cls: BlockType) -> bool:
    """Whether ``cls`` is the built-in recorder or a subclass of it.

    Its module is imported with a graph that has a recorder; without one, the daemon
    does not import it (and OpenCV with it) just to find that none is there. A user's
    class is never imported here: what its bases are was asked with the rest.
    """
    if isinstance(cls, RemoteBlock):
        return cls.is_a(f"{RECORDER}:Recorder")
    module = sys.modules.get(RECORDER)
    return module is not None and issubclass(cls, module.Recorder)


def is_clip_recorder(spec: BlockSpec) -> bool:
    """A recorder in clip mode: the daemon routes it the events of its ``triggers``."""
    return spec.params.get("mode") == "clips" and is_recorder(spec.cls)


def clip_problems(spec: BlockSpec, blocks: dict[str, BlockSpec]) -> list[str]:
    """A clip recorder's triggers must name blocks of the graph, and its pre-roll must
    be one its input keeps."""
    if not is_clip_recorder(spec):
        return []
    problems = []
    for trigger in spec.params.get("triggers", []):
        block = trigger.partition(":")[0]
        if block not in blocks:
            problems.append(f"trigger {trigger!r} names no block{_hint(block, list(blocks))}")
    source = blocks.get(spec.inputs[0]) if spec.inputs else None
    if source is not None:
        kept = source.encode.preroll if source.encode else source.params.get("preroll")
        wanted = spec.params.get("preroll", 0.0)
        if isinstance(kept, int | float) and wanted > kept:
            problems.append(
                f"preroll = {wanted:g} s, but {source.name!r} keeps {kept:g} s of packets:"
                f" raise {source.name!r}'s preroll"
                + (" (in its encode table)" if source.encode else "")
            )
    return problems


def _url_problem(value: Any) -> str | None:
    """``'URL': why`` for the first URL in ``value`` whose password cannot be sent as
    written; its password is not shown."""
    if isinstance(value, str):
        problem = url_password_problem(value)
        return f"{redact(value)!r}: {problem}" if problem else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        if found := _url_problem(item):
            return found
    return None


def _hide_value(problem: str, value: Any) -> str:
    """``problem`` without ``value`` (a secret) in any of the ways it may be written."""
    for shown in sorted({repr(value), str(value)}, key=len, reverse=True):
        if shown:
            problem = problem.replace(shown, SECRET_PLACEHOLDER)
    return problem


def _param_problem(param: Param | Any, value: Any) -> str | None:
    try:
        return param.problem(value)
    except Exception as exc:  # a check of ours (a user block's is asked of its process)
        return f"cannot be checked: {_failure(exc)}"


def _failure(exc: Exception) -> str:
    """``TypeName: message`` of what a block's code raised (there, or here)."""
    return str(exc) if isinstance(exc, UserCodeError) else f"{type(exc).__name__}: {exc}"


def _supervisor_problem(key: str, value: Any) -> str | None:
    if key == "restart":
        if value not in RESTART_POLICIES:
            return f"must be one of {', '.join(RESTART_POLICIES)}, not {_show(value)}"
    elif key == "restart_limit":
        if not (_is_int(value) and value >= 0):
            return f"must be an integer >= 0, not {_show(value)}"
    elif key == "autostart":
        if not isinstance(value, bool):
            return f"must be true or false, not {_show(value)}"
    elif not (_is_number(value) and math.isfinite(value) and value >= 0):
        return f"must be a number of seconds >= 0, not {_show(value)}"
    elif key == "liveness_interval" and value == 0:
        return "must be more than 0 seconds"
    return None


def _topological(inputs: Mapping[str, Iterable[str]]) -> list[str]:
    """Blocks after their inputs, else in the given order; blocks in cycles are left out."""
    done: list[str] = []
    waiting = {n: {i for i in ins if i in inputs and i != n} for n, ins in inputs.items()}
    while True:
        ready = [n for n, ins in waiting.items() if not ins - set(done)]
        if not ready:
            return done
        done.append(ready[0])
        del waiting[ready[0]]


def _offers_packets(cls: BlockType, params: dict[str, Any]) -> bool:
    """Whether readers may take the block's packets (a raw remote's are the link's alone)."""
    offers = getattr(cls, "offers_packets", None)
    return True if offers is None else bool(offers(params))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _doc(doc: str) -> str:
    return f" ({doc})" if doc else ""


def _count(low: int, high: int | None) -> str:
    def n(k: int) -> str:
        return f"{k} input" + ("" if k == 1 else "s")

    if high == 0:
        return "no inputs"
    if high == low:
        return f"exactly {n(low)}"
    if high is None:
        return f"at least {n(low)}"
    return f"{low} to {high} inputs" if low else f"at most {n(high)}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def _changed(s: Supervision) -> dict[str, Any]:
    default = Supervision()
    return {k: v for k, v in asdict(s).items() if getattr(default, k) != v}


def _shm_free() -> int | None:
    """Bytes free in /dev/shm; None where it cannot be asked (then the wire will say)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
