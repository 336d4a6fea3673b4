"""The graph file's ``[events]``, ``[mqtt]`` and ``[webhooks]`` tables, checked at load.

Each parser takes the table as TOML gave it and returns the settings and a list of
problems (each a sentence that names the table and the key), so the loader reports
them with everything else before anything starts. A password never sits in the graph
file (graph files get pasted into bug reports): ``[mqtt]`` takes ``password_file`` or
``$PIPELINED_MQTT_PASSWORD``, and refuses ``password``. Files named here (the password,
TLS keys) are checked to be readable now, so a typo fails the load, not a reconnect
loop at 3 a.m.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PASSWORD_ENV = "PIPELINED_MQTT_PASSWORD"
PHASES = ("start", "update", "end")


def _key(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: the rate limit per block, the store's retention, the snapshots."""

    rate: float = _key(5.0, "events a second each block may raise, on average")
    burst: int = _key(20, "events a block may raise at once above its rate")
    max_age_seconds: float = _key(7 * 86400.0, "events older than this are deleted; 0 = no limit")
    max_events: int = _key(10000, "at most this many events are kept; 0 = no limit")
    max_snapshot_bytes: int = _key(
        256 * 1024**2, "snapshot JPEGs beyond this total go, oldest first; 0 = no limit"
    )
    snapshot_quality: int = _key(80, "JPEG quality of the snapshots, 1 to 100")


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: where the broker is, who we are there, and what we publish."""

    host: str = _key("", "the broker's host name or address (required)")
    port: int = _key(0, "the broker's port; 0: 1883, or 8883 with TLS")
    prefix: str = _key("", 'the topics\' prefix; "": pipelined/<instance>')
    client_id: str = _key("", '"": pipelined-<instance>-<host name>')
    username: str = _key("", "the user name, if the broker wants one")
    password_file: str = _key("", f"a file whose first line is the password (else ${PASSWORD_ENV})")
    tls: bool = _key(False, "TLS; on by itself when tls_ca or tls_cert is set")
    tls_ca: str = _key("", "the CA certificate(s) to trust (PEM); with tls alone: the system's")
    tls_cert: str = _key("", "our client certificate (PEM), for brokers that ask for one")
    tls_key: str = _key("", "its private key (PEM)")
    commands: bool = _key(False, "obey start, stop and restart on <prefix>/<block>/set")
    discovery: bool = _key(False, "announce entities for Home Assistant's MQTT discovery")
    discovery_prefix: str = _key("homeassistant", "Home Assistant's discovery prefix")
    keepalive: int = _key(30, "seconds between keep-alive pings (the last will after 1.5x)")
    state_interval: float = _key(60.0, "each block's state is published again this often")
    stats_interval: float = _key(60.0, "<prefix>/stats this often")
    queue: int = _key(1000, "events kept while the broker is away; the oldest go first")
    reconnect_max: float = _key(30.0, "the longest wait between reconnects")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca or self.tls_cert)

    @property
    def broker_port(self) -> int:
        return self.port or (8883 if self.uses_tls else 1883)

    def topic_prefix(self, instance: str) -> str:
        return self.prefix or f"pipelined/{instance}"

    def read_password(self, environ: Any = os.environ) -> str | None:
        """The password: the first line of ``password_file``, else the environment."""
        if self.password_file:
            text = Path(self.password_file).read_text(encoding="utf-8")
            return text.splitlines()[0] if text else ""
        return environ.get(PASSWORD_ENV) or None


@dataclass(frozen=True)
class WebhooksConfig:
    """``[webhooks]``: URLs that get each event's JSON by POST."""

    urls: tuple[str, ...] = _key((), "http:// or https:// URLs (required)")
    timeout: float = _key(5.0, "seconds a POST may take")
    retries: int = _key(3, "attempts after the first, with a doubling wait from 1 s")
    queue: int = _key(100, "events waiting per URL; the oldest go first when it is full")
    phases: tuple[str, ...] = _key(PHASES, "which messages to send: start, update, end")


def keys_of(cls: type) -> dict[str, str]:
    """Each key of a settings class and its meaning, for messages and the reference."""
    return {f.name: f.metadata.get("doc", "") for f in fields(cls)}


def parse_events(table: Any) -> tuple[EventsConfig, list[str]]:
    parsed = _Table("[events]", table, keys_of(EventsConfig))
    values: dict[str, Any] = {
        "rate": parsed.number("rate", 5.0, low=0.01, high=1000),
        "burst": parsed.integer("burst", 20, low=1, high=10000),
        "max_age_seconds": parsed.number("max_age_seconds", 7 * 86400.0, low=0),
        "max_events": parsed.integer("max_events", 10000, low=0),
        "max_snapshot_bytes": parsed.integer("max_snapshot_bytes", 256 * 1024**2, low=0),
        "snapshot_quality": parsed.integer("snapshot_quality", 80, low=1, high=100),
    }
    return EventsConfig(**values), parsed.problems


def parse_mqtt(table: Any) -> tuple[MqttConfig | None, list[str]]:
    parsed = _Table("[mqtt]", table, keys_of(MqttConfig) | {"password": ""})
    if not parsed.ok:
        return None, parsed.problems
    if "password" in parsed.table:
        parsed.say(
            "password does not belong in a graph file (it gets pasted, and shown): put it in"
            f" a file and set password_file, or set ${PASSWORD_ENV} in the daemon's"
            " environment (systemctl edit pipelined: Environment=…)"
        )
    host = parsed.text("host", "")
    if not host.strip():
        parsed.say('host is required: the broker\'s name or address (host = "192.168.1.5")')
    prefix = parsed.text("prefix", "")
    if prefix and (problem := topic_problem(prefix)):
        parsed.say(f"prefix {prefix!r} {problem}")
    discovery_prefix = parsed.text("discovery_prefix", "homeassistant")
    if problem := topic_problem(discovery_prefix):
        parsed.say(f"discovery_prefix {discovery_prefix!r} {problem}")
    client_id = parsed.text("client_id", "")
    if len(client_id.encode()) > 256:
        parsed.say("client_id must be at most 256 bytes")
    values: dict[str, Any] = {
        "host": host.strip(),
        "port": parsed.integer("port", 0, low=0, high=65535),
        "prefix": prefix,
        "client_id": client_id,
        "username": parsed.text("username", ""),
        "password_file": parsed.path("password_file"),
        "tls": parsed.flag("tls", False),
        "tls_ca": parsed.path("tls_ca"),
        "tls_cert": parsed.path("tls_cert"),
        "tls_key": parsed.path("tls_key"),
        "commands": parsed.flag("commands", False),
        "discovery": parsed.flag("discovery", False),
        "discovery_prefix": discovery_prefix,
        "keepalive": parsed.integer("keepalive", 30, low=5, high=3600),
        "state_interval": parsed.number("state_interval", 60.0, low=1, high=86400),
        "stats_interval": parsed.number("stats_interval", 60.0, low=1, high=86400),
        "queue": parsed.integer("queue", 1000, low=1, high=100000),
        "reconnect_max": parsed.number("reconnect_max", 30.0, low=1, high=3600),
    }
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        parsed.say("tls_cert and tls_key go together: set both, or neither")
    return (MqttConfig(**values) if not parsed.problems else None), parsed.problems


def parse_webhooks(table: Any) -> tuple[WebhooksConfig | None, list[str]]:
    parsed = _Table("[webhooks]", table, keys_of(WebhooksConfig))
    if not parsed.ok:
        return None, parsed.problems
    urls = parsed.table.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        parsed.say('urls must be an array of one or more URLs (urls = ["http://…"])')
        urls = []
    for url in urls:
        if problem := url_problem(url):
            parsed.say(f"{shown_url(url)!r} {problem}")
    phases = parsed.table.get("phases", list(PHASES))
    if not isinstance(phases, list) or not phases or not set(phases) <= set(PHASES):
        parsed.say(f"phases must be an array of {', '.join(PHASES)}, not {phases!r}")
        phases = list(PHASES)
    values: dict[str, Any] = {
        "urls": tuple(urls),
        "timeout": parsed.number("timeout", 5.0, low=0.1, high=300),
        "retries": parsed.integer("retries", 3, low=0, high=100),
        "queue": parsed.integer("queue", 100, low=1, high=100000),
        "phases": tuple(dict.fromkeys(phases)),
    }
    return (WebhooksConfig(**values) if not parsed.problems else None), parsed.problems


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a prefix we publish under, or None."""
    if "+" in topic or "#" in topic:
        return "holds a wildcard (+ or #), which a topic we publish to cannot"
    if "\0" in topic:
        return "holds a NUL character"
    if topic.startswith("$"):
        return "starts with $, which brokers keep for themselves ($SYS)"
    if topic.startswith("/") or topic.endswith("/") or "//" in topic:
        return "has an empty level (a / at either end, or //)"
    if not topic.strip():
        return "is empty"
    return None


def url_problem(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is no number)
    except ValueError as exc:
        return f"is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    return None


def shown_url(url: str) -> str:
    """A webhook URL as status and logs show it: scheme, host and port only. Its path
    and query often are the secret (a Home Assistant webhook id, a Slack token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a malformed URL)"
    if ":" in host:
        host = f"[{host}]"
    tail = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{port}{tail}"


class _Table:
    """One table being read: each getter checks a key and notes what is wrong."""

    def __init__(self, name: str, table: Any, known: dict[str, str]):
        self.name = name
        self.problems: list[str] = []
        self.ok = isinstance(table, dict)
        self.table: dict[str, Any] = table if isinstance(table, dict) else {}
        if not self.ok:
            self.say(f"must be a table ({name} on a line of its own), not {table!r}")
        for key in self.table:
            if key not in known:
                close = [k for k in known if k.startswith(key[:3])]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.say(f"unknown key {key!r}{hint}; it takes {', '.join(known)}")

    def say(self, problem: str) -> None:
        self.problems.append(f"{self.name}: {problem}")

    def number(self, key: str, default: float, low: float = 0, high: float = math.inf) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.say(f"{key} must be a number, not {value!r}")
            return default
        if not (math.isfinite(value) and low <= value <= high):
            span = f"between {low:g} and {high:g}" if math.isfinite(high) else f">= {low:g}"
            self.say(f"{key} must be {span}, not {value!r}")
            return default
        return float(value)

    def integer(self, key: str, default: int, low: int = 0, high: int | None = None) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.say(f"{key} must be an integer, not {value!r}")
            return default
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f">= {low}"
            self.say(f"{key} must be {span}, not {value}")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.say(f"{key} must be true or false, not {value!r}")
            return default
        return value

    def text(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            self.say(f"{key} must be a string, not {value!r}")
            return default
        return value

    def path(self, key: str) -> str:
        """A file the daemon will read: made absolute (a relative path is relative to
        the daemon's working directory, as every path of a graph is), readable now."""
        value = self.text(key, "")
        if not value:
            return ""
        path = Path(value).expanduser().absolute()
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            self.say(f"{key}: cannot read {path}: {exc.strerror or exc}")
        return str(path)
