"""What a graph file says about Zenoh: the ``[zenoh]`` table, a block's ``publish`` key, and
a ``remote`` block's ``zenoh:`` source, checked, and turned into a Zenoh configuration.

Plain Python: loading a graph imports ``zenoh`` only to ask it, at the end, whether it
takes the configuration we built (``zenoh_problems``).

Decisions (docs/design.md, "Wires across machines"):

- One Zenoh session per daemon, in its link process: ``listen`` binds once, a box has one
  identity (its TLS certificate), and every remote wire of the box shares its links.
- Multicast scouting is off unless ``scouting = true``: boxes on a shared network must
  not find each other by accident. Zenoh's admin space, plugins and shared-memory
  transport are off: the data plane carries frames and nothing else.
- With ``[zenoh.tls]`` every endpoint must be ``tls/``: nothing travels in the clear by
  mistake beside a TLS link.
- A key names one stream: no wildcards (``*``, ``**``, ``$*``), no empty chunks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("peer", "client")
ENCODINGS = ("h264", "jpeg", "raw")
CONGESTION = ("block", "drop")
RELIABILITY = ("reliable", "best_effort")
PROTOCOLS = ("tcp", "tls", "udp", "quic", "unixsock-stream")
SCHEME = "zenoh:"
DEFAULT_LEASE = 10.0
_ENDPOINT = re.compile(r"(?P<proto>[a-z][a-z0-9-]*)/(?P<address>[^#\s]+)(?:#[^\s]*)?\Z")
ZENOH_KEYS = ("mode", "connect", "listen", "scouting", "lease", "tls", "access_control")
TLS_KEYS = ("root_ca", "certificate", "private_key", "mutual", "verify_name")
PUBLISH_KEYS = ("key", "encoding", "congestion", "reliability", "quality")


def key_problem(key: Any) -> str | None:
    """Why ``key`` cannot name a remote wire, or None.

    Zenoh's own rules (no empty chunk, no leading or trailing ``/``, no ``#`` or ``?``),
    and ours: no wildcard, since a wire is one stream, and no whitespace or control
    characters, which are typos more often than names.
    """
    if not isinstance(key, str):
        return f'must be a string like "site1/door/cam", not {key!r}'
    if not key:
        return 'is empty: name the stream, like "site1/door/cam"'
    if any(c.isspace() or ord(c) < 32 for c in key):
        return f"{key!r} holds whitespace or control characters"
    if key.startswith("/") or key.endswith("/") or "//" in key:
        return f"{key!r} has an empty chunk (a leading, trailing or doubled '/')"
    if "#" in key or "?" in key:
        return f"{key!r} holds '#' or '?', which Zenoh keys cannot"
    chunks = key.split("/")
    if any("*" in c or "$" in c for c in chunks):
        return (
            f"{key!r} holds a wildcard ('*', '**' or '$*'): a remote wire is one stream,"
            " named by a key without wildcards"
        )
    if key.startswith("@"):
        return f"{key!r} starts with '@', which is Zenoh's own (admin) space"
    return None


def parse_source(value: Any) -> str:
    """The key of a ``remote`` block's ``source = "zenoh:KEY"``; ValueError saying why not."""
    if not isinstance(value, str) or not value.startswith(SCHEME):
        raise ValueError(f'source must be "zenoh:KEY" (like "zenoh:site1/door/cam"), not {value!r}')
    key = value[len(SCHEME) :]
    problem = key_problem(key)
    if problem:
        raise ValueError(f"source {value!r}: the key {problem}")
    return key


@dataclass(frozen=True)
class Tls:
    """One box's TLS identity: a CA to check peers by, and its own certificate and key."""

    root_ca: str
    certificate: str | None = None
    private_key: str | None = None
    mutual: bool = False
    verify_name: bool = True


@dataclass(frozen=True)
class ZenohSettings:
    """The ``[zenoh]`` table, checked."""

    mode: str = "peer"
    connect: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()
    scouting: bool = False
    lease: float = DEFAULT_LEASE
    tls: Tls | None = None
    access_control: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["connect"], out["listen"] = list(self.connect), list(self.listen)
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ZenohSettings:
        values = dict(raw)
        values["connect"] = tuple(values.get("connect", ()))
        values["listen"] = tuple(values.get("listen", ()))
        if values.get("tls") is not None:
            values["tls"] = Tls(**values["tls"])
        return cls(**values)

    def config(self) -> dict[str, Any]:
        """Zenoh configuration paths and their values (``Config.insert_json5``)."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "connect/endpoints": list(self.connect),
            # Never give up on a peer that is not there yet (a box still booting): keep
            # trying in the background, and open the session all the same.
            "connect/exit_on_failure": False,
            "connect/timeout_ms": -1,
            "scouting/multicast/enabled": self.scouting,
            "transport/link/tx/lease": round(self.lease * 1000),
            "adminspace/enabled": False,
            "plugins_loading/enabled": False,
            "transport/shared_memory/enabled": False,
        }
        if self.mode == "peer":
            out["listen/endpoints"] = list(self.listen)
        tls = self.tls
        if tls is not None:
            out["transport/link/tls/root_ca_certificate"] = tls.root_ca
            out["transport/link/tls/enable_mtls"] = tls.mutual
            out["transport/link/tls/verify_name_on_connect"] = tls.verify_name
            if tls.certificate and tls.private_key:
                out["transport/link/tls/listen_certificate"] = tls.certificate
                out["transport/link/tls/listen_private_key"] = tls.private_key
                out["transport/link/tls/connect_certificate"] = tls.certificate
                out["transport/link/tls/connect_private_key"] = tls.private_key
        if self.access_control is not None:
            out["access_control"] = self.access_control
        return out

    def describe(self) -> str:
        parts = [self.mode]
        if self.listen:
            parts.append("listen " + ", ".join(self.listen))
        if self.connect:
            parts.append("connect " + ", ".join(self.connect))
        if self.tls is not None:
            parts.append("mutual TLS" if self.tls.mutual else "TLS")
        if self.access_control is not None:
            parts.append("access control")
        parts.append("multicast scouting " + ("on" if self.scouting else "off"))
        return "; ".join(parts)


def parse_zenoh(table: Any) -> tuple[ZenohSettings | None, list[str]]:
    """The ``[zenoh]`` table checked: settings, or None and every problem (``[zenoh]: …``)."""
    problems: list[str] = []

    def say(problem: str) -> None:
        problems.append(f"[zenoh]: {problem}")

    if not isinstance(table, dict):
        return None, [f"[zenoh] must be a table, not {table!r}"]
    for key in table:
        if key not in ZENOH_KEYS:
            say(f"unknown key {key!r} (it takes: {', '.join(ZENOH_KEYS)})")
    mode = table.get("mode", "peer")
    if mode not in MODES:
        say(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    endpoints = {k: _endpoints(k, table.get(k, []), say) for k in ("connect", "listen")}
    scouting = table.get("scouting", False)
    if not isinstance(scouting, bool):
        say(f"scouting must be true or false, not {scouting!r}")
    lease = table.get("lease", DEFAULT_LEASE)
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0.5 <= lease <= 600:
        say(f"lease must be a number of seconds from 0.5 to 600, not {lease!r}")
        lease = DEFAULT_LEASE
    if mode == "client" and endpoints["listen"]:
        say('a client does not listen: remove listen, or use mode = "peer"')
    if mode == "client" and not endpoints["connect"] and scouting is not True:
        say("a client needs a router or peer to connect to: set connect")
    tls = _tls(table["tls"], endpoints, say) if "tls" in table else None
    plain = [e for e in (*endpoints["connect"], *endpoints["listen"]) if not e.startswith("tls/")]
    if tls is not None and plain:
        say(
            f"[zenoh.tls] is set, but {plain[0]!r} is not a tls/ endpoint: with TLS every"
            " endpoint must be tls/HOST:PORT, so that nothing travels in the clear by mistake"
        )
    tls_endpoints = [
        e for e in (*endpoints["connect"], *endpoints["listen"]) if e.startswith("tls/")
    ]
    if tls_endpoints and "tls" not in table:
        say(f"{tls_endpoints[0]!r} needs [zenoh.tls] (root_ca, certificate, private_key)")
    access = table.get("access_control")
    if access is not None and not isinstance(access, dict):
        say("access_control must be a table (Zenoh's access_control configuration)")
        access = None
    if problems:
        return None, problems
    settings = ZenohSettings(
        mode=mode,
        connect=tuple(endpoints["connect"]),
        listen=tuple(endpoints["listen"]),
        scouting=scouting,
        lease=float(lease),
        tls=tls,
        access_control=access,
    )
    return settings, [f"[zenoh]: {p}" for p in zenoh_problems(settings)]


def _endpoints(key: str, value: Any, say: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        say(f'{key} must be an array of endpoints like "tcp/10.0.0.2:7447", not {value!r}')
        return []
    good = []
    for endpoint in value:
        match = _ENDPOINT.match(endpoint)
        if match is None:
            example = '"tcp/10.0.0.2:7447"'
            say(f"{key}: {endpoint!r} is not an endpoint: write PROTOCOL/ADDRESS, like {example}")
        elif match["proto"] not in PROTOCOLS:
            known = ", ".join(PROTOCOLS)
            say(f"{key}: {endpoint!r}: unknown protocol {match['proto']!r} (use {known})")
        else:
            good.append(endpoint)
    return good


def _tls(table: Any, endpoints: dict[str, list[str]], say: Any) -> Tls | None:
    if not isinstance(table, dict):
        say("tls must be a table ([zenoh.tls])")
        return None
    for key in table:
        if key not in TLS_KEYS:
            say(f"tls: unknown key {key!r} (it takes: {', '.join(TLS_KEYS)})")
    files = {}
    for key in ("root_ca", "certificate", "private_key"):
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            say(f"tls: {key} must be the path of a PEM file, not {value!r}")
        elif not os.access(value, os.R_OK):
            why = "permission denied" if os.path.exists(value) else "no such file"
            say(f"tls: {key}: cannot read {value!r} ({why})")
        files[key] = value
    if "root_ca" not in table:
        say("tls: root_ca is required: the CA that peers' certificates are checked against")
    mutual = table.get("mutual", False)
    verify = table.get("verify_name", True)
    for key, flag in (("mutual", mutual), ("verify_name", verify)):
        if not isinstance(flag, bool):
            say(f"tls: {key} must be true or false, not {flag!r}")
    has_identity = "certificate" in table and "private_key" in table
    if ("certificate" in table) != ("private_key" in table):
        say("tls: certificate and private_key come together")
    if endpoints["listen"] and not has_identity:
        say("tls: a box that listens needs its certificate and private_key")
    if mutual is True and not has_identity:
        say("tls: mutual TLS needs this box's certificate and private_key too")
    if not isinstance(files.get("root_ca"), str):
        return None
    return Tls(
        root_ca=files["root_ca"],
        certificate=files.get("certificate"),
        private_key=files.get("private_key"),
        mutual=mutual is True,
        verify_name=verify is not False,
    )


def zenoh_problems(settings: ZenohSettings) -> list[str]:
    """What Zenoh itself says of the configuration we would give it (an access-control
    table it cannot read, say); nothing is opened."""
    import zenoh

    config = zenoh.Config()
    problems = []
    for path, value in settings.config().items():
        try:
            config.insert_json5(path, json.dumps(value))
        except Exception as exc:  # zenoh.ZError, or a panic's message
            problems.append(f"Zenoh does not take {path.replace('/', '.')}: {_first_line(exc)}")
    return problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Publication:
    """A block's ``publish`` key, checked: where and how its output crosses to other boxes."""

    key: str
    encoding: str
    congestion: str = "block"
    reliability: str = "reliable"
    quality: int = 85  # JPEG quality

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def kind(self) -> str:
        """Which of the block's wires the link reads: its packets (h264) or its frames."""
        return "packets" if self.encoding == "h264" else "frames"

    def describe(self) -> str:
        extra = f", quality {self.quality}" if self.encoding == "jpeg" else ""
        return (
            f"zenoh:{self.key} as {self.encoding} (congestion {self.congestion},"
            f" {self.reliability.replace('_', '-')}{extra})"
        )


def parse_publish(value: Any, has_packets: bool) -> tuple[Publication | None, list[str]]:
    """``publish = "KEY"`` or ``publish = {key = …, encoding = …, …}``.

    Without an encoding a block that publishes packets (a camera's H.264, or ``encode``)
    sends them as they are (``h264``), any other sends JPEG: raw frames only when asked.
    """
    table = {"key": value} if isinstance(value, str) else value
    if not isinstance(table, dict):
        return None, [f'publish must be a key ("site1/door/cam") or a table, not {value!r}']
    problems = []
    for key in table:
        if key not in PUBLISH_KEYS:
            problems.append(f"publish: unknown key {key!r} (it takes: {', '.join(PUBLISH_KEYS)})")
    problem = key_problem(table.get("key"))
    if problem:
        problems.append(f"publish: the key {problem}")
    encoding = table.get("encoding", "h264" if has_packets else "jpeg")
    congestion = table.get("congestion", "block")
    reliability = table.get("reliability", "reliable")
    quality = table.get("quality", 85)
    for name, got, choices in (
        ("encoding", encoding, ENCODINGS),
        ("congestion", congestion, CONGESTION),
        ("reliability", reliability, RELIABILITY),
    ):
        if got not in choices:
            problems.append(f"publish: {name} must be one of {', '.join(choices)}, not {got!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        problems.append(f"publish: quality must be an integer from 1 to 100, not {quality!r}")
    if encoding == "h264" and not has_packets:
        problems.append(
            'publish: encoding "h264" sends the block\'s packets, and it makes none: add'
            ' encode = "h264", or publish "jpeg" (or "raw")'
        )
    if problems:
        return None, problems
    return Publication(table["key"], encoding, congestion, reliability, quality), []


@dataclass(frozen=True)
class Subscription:
    """A remote block as the link sees it: the key it reads and the wire it fills."""

    block: str
    key: str
    encoding: str
    ring_bytes: int  # its packet wire's ring: no sample may take more than half
    frame_bytes: int  # its frame wire's slots: the largest raw frame it takes
    stall_timeout: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_QUEUE = "transport/link/tx/queue/congestion_control/drop"


def queue_waits(publications: Mapping[str, Publication], lease: float) -> dict[str, Any]:
    """Zenoh configuration paths for how long a publication's message may wait for the link.

    Every publication goes to Zenoh with congestion control ``drop``, never ``block``:
    Zenoh answers a ``block`` message that waits longer than its ``wait_before_close``
    (5 s) by closing the transport, and that close names the peer, not the connection: a
    wait that began on a link cut a moment ago and ends after the link is back tears down
    the new connection, whose own waiting messages then do the same to the next one
    (eclipse-zenoh/zenoh#1876, #1886). A dead link is for the lease to notice.

    ``congestion = "block"`` (the default) is a wait with a bound: a message waits for the
    link up to ``lease`` seconds (the time after which the link is taken as dead anyway),
    a large frame's fragments all together, and is then dropped whole. ``drop`` keeps
    Zenoh's own waits (1 ms, a large frame's fragments 50 ms in all). Zenoh sets these per
    session, so a box's publications all take one (the graph loader sees to it).
    """
    if not any(p.congestion == "block" for p in publications.values()):
        return {}
    bound = round(lease * 1_000_000)  # microseconds
    return {f"{_QUEUE}/wait_before_drop": bound, f"{_QUEUE}/max_wait_before_drop_fragments": bound}


@dataclass(frozen=True)
class LinkPlan:
    """Everything the link process is told: the session, what to publish, what to read."""

    settings: ZenohSettings
    publications: dict[str, Publication] = field(default_factory=dict)  # by block
    subscriptions: tuple[Subscription, ...] = ()

    def config(self) -> dict[str, Any]:
        """The session's Zenoh configuration: the ``[zenoh]`` table's, and the queue's
        waits that the publications ask for (``queue_waits``)."""
        return self.settings.config() | queue_waits(self.publications, self.settings.lease)

    def to_params(self) -> dict[str, Any]:
        return {
            "zenoh": self.settings.to_dict(),
            "publish": {b: p.to_dict() for b, p in self.publications.items()},
            "subscribe": [s.to_dict() for s in self.subscriptions],
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LinkPlan:
        return cls(
            ZenohSettings.from_dict(params["zenoh"]),
            {b: Publication(**p) for b, p in params.get("publish", {}).items()},
            tuple(Subscription(**s) for s in params.get("subscribe", [])),
        )
