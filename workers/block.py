"""The block API: what a built-in or user block implements.

A block is a class. The daemon reads its ``params`` to validate the graph file before
anything starts, and asks it how large its output frames can be to size its wire. In
the worker process the runtime makes one instance, calls ``setup()`` once, then
``process()`` for every new frame, and ``close()`` at the end.

    class Dim(Block):
        params = {"strength": Param(float, default=0.5, doc="0..1", check=in_range(0, 1))}

        def process(self, frames):
            return (frames[0] * (1 - self.config["strength"])).astype(frames[0].dtype)

``params`` declares the parameters (a class attribute); ``self.config`` holds their values
as the graph file set them, defaults filled in. ``self.context.log`` is a logger
(``.info(...)``, ``.warning(...)``), and ``self.context.waiting("why")`` shows in status why
the block does nothing for now. Reading a value from ``self.params`` or calling
``self.context.log(...)`` raises a TypeError that says so.

A block with inputs runs each time its first input has a new frame, and gets the newest
frame of every input (a frame only once all inputs have sent one). A block with no
inputs (a source) is called in a loop and paces itself; while its source is missing it
calls ``self.context.waiting("why")`` and ``self.context.sleep(seconds)``.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from .ipc.packets import CodecParams, Packet, PacketReader, PacketWriter

Kind = Literal["frames", "packets"]
"""What a block takes of an input: its decoded frames, or its encoded packets as received."""


class ConfigurationError(Exception):
    """This block's configuration can never run here (no display for a screen, say).

    Raised from ``setup()``: the supervisor marks the block FAILED with this message
    instead of restarting it over and over.
    """


REQUIRED: Any = object()
"""Default of a parameter that the graph file must set."""


@dataclass(frozen=True)
class Param:
    """One parameter of a block: its accepted types, default and check.

    ``check`` returns a problem ("must be between 0 and 255") or None. ``state_path``
    marks a path the block writes to (a recorder's folder): a relative one is taken under
    the daemon's state directory when the graph is loaded, never where the daemon stands.
    """

    types: type | tuple[type, ...]
    default: Any = REQUIRED
    doc: str = ""
    check: Callable[[Any], str | None] | None = None
    state_path: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter, or None."""
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True  # TOML writes 30 for 30.0
        if not ok:
            return f"must be {type_names(types)}, not {_describe(value)}"
        return self.check(value) if self.check else None


def type_names(types: tuple[type, ...]) -> str:
    """``(int, str)`` as "an integer or a string": how messages and the reference say it."""
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "an array",
        dict: "a table",
        datetime.datetime: "a date-time",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True)
class Rule:
    """A parameter check with words for the reference (``pipelined blocks``): ``text``
    says what values pass, ``test`` returns the problem with a value, or None."""

    text: str
    test: Callable[[Any], str | None]

    def __call__(self, value: Any) -> str | None:
        return self.test(value)


def in_range(low: float, high: float) -> Rule:
    """Check a number in [low, high]."""

    def check(value: Any) -> str | None:
        if isinstance(value, float) and math.isnan(value):
            return "must be a number, not nan"
        if not low <= value <= high:
            return f"must be between {low} and {high}, not {value}"
        return None

    return Rule(f"{low:g} to {high:g}", check)


def int_list(length: int, low: int, high: int) -> Rule:
    """Check an array of ``length`` integers, each in [low, high]."""

    def check(value: Any) -> str | None:
        if len(value) != length or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return f"must be an array of {length} integers, not {value!r}"
        bad = [v for v in value if not low <= v <= high]
        if bad:
            return f"values must be between {low} and {high}, not {bad[0]}"
        return None

    return Rule(f"{length} integers, each {low} to {high}", check)


def one_of(*choices: str) -> Rule:
    """Check a string that is one of ``choices``."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"

    return Rule("one of " + ", ".join(choices), check)


def rule_text(check: Callable[[Any], str | None] | None) -> str:
    """What a check accepts, in words: a Rule's text, else the first line of its docstring."""
    if check is None:
        return ""
    if isinstance(check, Rule):
        return check.text
    doc = (check.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
"""What a block's helpers log through: its ``context.log``, or a plain logger."""


class BlockLog(logging.LoggerAdapter[logging.Logger]):
    """A block's logger: ``self.context.log.info("...")``, ``.warning``, ``.error``.

    Calling it as a function is a common slip; it raises a TypeError that says how instead
    of Python's bare "'Logger' object is not callable".
    """

    def __init__(self, name: str):
        super().__init__(logging.getLogger(f"pipelined.block.{name}"))

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "self.context.log is a logger, not a function: write"
            " self.context.log.info(...) (or .warning, .error, .exception)"
        )


class _Declarations(dict[str, "Param"]):
    """``self.params`` seen from a block instance: the declarations, which hold no values.

    Iterating it or asking ``"x" in self.params`` works; reading ``self.params["x"]`` is
    the slip of someone who wants the value, and the error says where the value is.
    """

    def __getitem__(self, key: str) -> Param:
        raise TypeError(
            f"self.params[{key!r}] is the declaration of parameter {key!r} (a Param), not"
            f" its value: read the value the graph file set as self.config[{key!r}]"
        )

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]


class _ParamsAttribute:
    """A Block class's ``params``: the table of declarations on the class, and the same
    table behind a reminder on an instance (``_Declarations``)."""

    def __init__(self, table: dict[str, Param]):
        self.table = table

    def __get__(self, instance: object, owner: type | None = None) -> dict[str, Param]:
        return self.table if instance is None else _Declarations(self.table)


class Context(Protocol):
    """What the runtime offers a block while it runs."""

    log: BlockLog
    """The block's logger: ``.info("...")``, ``.warning``, ``.error``; lines go to the
    daemon's log (the journal under systemd) with the block's name."""
    inputs: list[str]
    """The blocks this one reads, in the order of its frames."""

    @property
    def stopping(self) -> bool:
        """True once the block should return as soon as it can."""
        ...

    def waiting(self, reason: str | None) -> None:
        """Say that the block waits for its source (shown in status); None when it has it."""
        ...

    def detail(self, text: str | None) -> None:
        """A line on how the block runs, shown in status (a camera's delivered size, fps)."""
        ...

    def delivered(self, count: int = 1) -> None:
        """A sink counts what it delivered out of the graph (frames or packets written to
        a file, frames sent to viewers): its frames out, and so its output rate in status.

        A block with an output need not: the frames it publishes are counted for it.
        """
        ...

    def skipped(self, count: int = 1) -> None:
        """Frames the block took in and let go by design (a sink thinning to its own rate):
        counted apart from the frames it missed because it could not keep up."""
        ...

    def intact(self) -> bool:
        """False if the first input frame was overwritten while the block worked on it.

        The runtime checks this itself after ``process``; a block that hands a copy of
        the frame elsewhere (a server, a file) asks first.
        """
        ...

    def sleep(self, seconds: float) -> bool:
        """Sleep while keeping the heartbeat going; False if the block is asked to stop."""
        ...

    @property
    def packets(self) -> PacketWriter | None:
        """The block's packet wire, when it publishes encoded video (``packet_bytes``)."""
        ...

    def frames_wanted(self) -> bool:
        """Whether anyone takes the block's frames now: a reader attached to its wire (a
        block, a live view on the daemon's page) or the encoder of its ``encode`` key.

        A camera decodes nothing while this is False. It costs a system call per reader
        slot: ask a few times a second, not for every packet.
        """
        ...

    @property
    def incoming(self) -> PacketReader | None:
        """The block's own packet wire, read, when another process fills it: a ``remote``
        block's, which the daemon's Zenoh link writes. None for every other block."""
        ...

    def event(
        self,
        kind: str,
        phase: str = "moment",
        *,
        key: str = "",
        score: float | None = None,
        data: Mapping[str, Any] | None = None,
        frame: np.ndarray | None = None,
    ) -> str | None:
        """Say that something happened: the daemon stores it, logs it, and tells MQTT,
        webhooks and clip recorders. Never waits; returns the event's id, or None when
        the block is over its rate (``[events] rate``) and the event was dropped (counted).

        ``kind`` is ``motion``, ``person`` or the block's own word; ``phase`` is
        ``start`` (then ``update`` and ``end`` of the same kind, and ``key`` for several
        at once) or ``moment`` (start and end at once). ``score`` is how sure or how
        much; ``data`` plain JSON of at most 8 KiB; ``frame`` (BGR or grey) becomes the
        event's snapshot JPEG (a copy is taken now: a view of the input is fine). The
        event's time is that of the frame the block is working on.
        """
        ...

    def rewind(self, seconds: float) -> bool:
        """Start the packet input again at the oldest keyframe within ``seconds`` of its
        newest packet (a clip's pre-roll); False if it holds none."""
        ...

    def clip(self, events: list[str], path: str, start: float, end: float | None) -> None:
        """Tell the daemon that the file ``path`` holds the clip of ``events``, from
        ``start`` (Unix seconds) to ``end`` (None while it is written)."""
        ...


class Block:
    """Base of every block. Subclasses set ``params`` and override ``process``.

    ``params`` (on the class) declares the parameters; ``self.config`` (on the instance)
    holds their values as the graph file set them, with the defaults filled in.
    """

    params: ClassVar[dict[str, Param]] = {}
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    has_output: ClassVar[bool] = True
    packets_when: ClassVar[str] = ""
    """For the reference: when the block publishes packets ("when its source is encoded")."""
    frame_time_ns: int | None = None
    """A source that knows when its frame was taken (not now: a remote block's frames were
    taken on another box) sets this before returning the frame, in ``time.monotonic_ns()``
    terms; the runtime stamps the frame with it instead of the time it was published."""
    event_kinds: ClassVar[tuple[str, ...]] = ()
    """The kinds of event the block raises, when it knows them in advance: Home Assistant
    discovery announces a binary sensor for each before the first one happens."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("params")
        if isinstance(declared, dict):
            setattr(cls, "params", _ParamsAttribute(declared))  # noqa: B010 (mypy: ClassVar)

    def __init__(self, name: str, config: dict[str, Any], context: Context | None = None):
        self.name = name
        self.config = config
        """The parameters' values, as the graph file set them, defaults filled in."""
        self.context: Context = context or _Detached(name)

    @property
    def p(self) -> dict[str, Any]:
        """``config``'s old name, for blocks written before it had one."""
        return self.config

    # -- load time (the daemon, before anything starts) ------------------------------

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        """Problems that span parameters, or that no retry can fix (a malformed URL)."""
        return []

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        """The largest output frame, which sizes this block's wire.

        The default is the largest input frame: right for filters that keep the size.
        Sources and blocks that grow their frame must override it.
        """
        if not input_bytes:
            raise NotImplementedError(f"{cls.__name__} has no inputs: say how big its frames are")
        return max(input_bytes)

    @classmethod
    def input_kinds(cls, params: dict[str, Any], offered: Sequence[bool]) -> list[Kind]:
        """What the block takes of each input: "frames" (the default) or "packets".

        ``offered[i]`` says whether input i carries packets (a camera with an encoded
        source, or a block with ``encode`` set). A block that takes packets takes one
        input only, and gets ``process_packet`` calls instead of ``process``.
        """
        return ["frames"] * len(offered)

    @classmethod
    def offers_packets(cls, params: dict[str, Any]) -> bool:
        """Whether readers may take the block's packets (its packet wire is for them). A
        remote block of raw frames has a packet wire for the link's use alone."""
        return True

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int | None:
        """The size of the block's own packet ring, if it publishes encoded video itself
        (a camera whose source sends H.264); None: it publishes frames only."""
        return None

    # -- run time (the worker process) -----------------------------------------------

    def setup(self) -> None:
        """Open devices, files, models. Runs before the first heartbeat."""

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        """Turn the newest input frames into one output frame (None: no output this time)."""
        raise NotImplementedError

    def output_like(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], np.dtype] | None:
        """Shape and dtype of the next output, if the block can write it in place.

        Blocks that return a shape here get ``process_into`` instead of ``process``,
        and write straight into the wire's slot: no copy.
        """
        return None

    def process_into(self, frames: list[np.ndarray], out: np.ndarray) -> bool:
        """Write the output into ``out``; False to publish nothing this time."""
        raise NotImplementedError

    def process_packet(self, packet: Packet, codec: CodecParams) -> None:
        """Take one packet of a packet input (see ``input_kinds``), in the order received;
        ``codec`` is what its generation says of the stream (codec, size, extradata)."""
        raise NotImplementedError

    def take_event(self, event: dict[str, Any]) -> None:
        """An event the daemon routes to this block (a recorder in clip mode gets those of
        its ``triggers``): ``id``, ``block``, ``kind``, ``phase``, ``at`` (Unix seconds).
        Called between frames or packets, in the block's own thread."""

    def close(self) -> None:
        """Release what ``setup`` opened. Runs on every exit the worker controls."""


setattr(Block, "params", _ParamsAttribute({}))  # noqa: B010 (mypy sees the ClassVar)


@dataclass
class _Detached:
    """The context of a block used outside a worker, in a test or a notebook."""

    name: str
    reason: str | None = None
    inputs: list[str] = field(default_factory=list)
    details: list[str | None] = field(default_factory=list)
    written: int = 0
    skipped_frames: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    log: BlockLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = BlockLog(self.name)

    @property
    def stopping(self) -> bool:
        return False

    def waiting(self, reason: str | None) -> None:
        self.reason = reason

    def detail(self, text: str | None) -> None:
        self.details.append(text)

    def delivered(self, count: int = 1) -> None:
        self.written += count

    def skipped(self, count: int = 1) -> None:
        self.skipped_frames += count

    def intact(self) -> bool:
        return True

    def sleep(self, seconds: float) -> bool:
        import time

        time.sleep(seconds)
        return True

    @property
    def packets(self) -> None:
        return None

    @property
    def incoming(self) -> None:
        return None

    def frames_wanted(self) -> bool:
        return True  # the caller of process() takes them

    def event(
        self,
        kind: str,
        phase: str = "moment",
        *,
        key: str = "",
        score: float | None = None,
        data: Mapping[str, Any] | None = None,
        frame: np.ndarray | None = None,
    ) -> str | None:
        """Kept in ``events`` (with the frame), for a test or a notebook to look at."""
        import time

        event_id = f"{time.time():.3f}-{len(self.events):06d}"
        self.events.append(
            {"id": event_id, "kind": kind, "phase": phase, "key": key, "score": score,
             "data": dict(data) if data is not None else None, "frame": frame}
        )  # fmt: skip
        return event_id

    def rewind(self, seconds: float) -> bool:
        return False

    def clip(self, events: list[str], path: str, start: float, end: float | None) -> None:
        self.clips.append({"events": events, "path": path, "start": start, "end": end})
