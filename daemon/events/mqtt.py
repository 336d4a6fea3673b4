"""The MQTT bridge: the graph's states and events to a broker, commands back, off the loop.

Why paho-mqtt: it is the Eclipse Foundation's reference client, maintained, the one Home
Assistant itself uses, with MQTT 3.1.1 and 5, TLS and last wills; aiomqtt (the
best-kept asyncio client) is a wrapper around it that wants to own an asyncio loop, and
the client must not run on the supervisor's.

One thread owns the paho client and does everything that can wait: resolving the
broker's name, connecting, the TLS handshake, writing to a socket a slow broker does
not drain. It drives paho's external-loop API (``loop_read``/``loop_write``/
``loop_misc``) around one ``select`` that also wakes on a pipe of ours. The event loop
only puts messages in memory under a lock held for a few assignments, and writes a byte
to that pipe: a broker that is down, slow, or refuses us costs the supervisor nothing.

What waits for the broker, and how much:

- retained topics (availability, each block's state, each kind's ON/OFF, snapshots,
  discovery): only the newest payload per topic is kept; all of them are published again
  on every connection (a broker restarted without persistence has lost them);
- events: a bounded queue (``[mqtt] queue``), the oldest dropped and counted when it is
  full; an event leaves the queue when the broker acknowledges it (QoS 1), so the ones
  in flight when the connection drops go again on the next one (at least once);
- stats: the newest only, and only while connected.

It reconnects with a backoff that doubles from 1 s to ``reconnect_max``; the reason it
is not connected (``cannot resolve 'x'``, ``the broker refused us: Bad user name or
password``, ``connection refused``) is in status. Each connection publishes ``online``
once; the last will says ``offline`` when the daemon dies, and a clean stop says it
itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import json
import logging
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelined.workers.events import RateLimit

from . import topics
from .config import MqttConfig

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from .hub import EventHub

log = logging.getLogger("pipelined.mqtt")
RETRY_FIRST = 1.0
CONNECT_TIMEOUT = 5.0
CONNACK_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
WATCH_EVERY = 1.0
Payload = bytes | Path
"""A payload, or the snapshot file whose bytes it is (read in the thread, not on the loop)."""


class MqttBridge:
    """One broker connection for one daemon; a sink of its EventHub."""

    def __init__(
        self,
        config: MqttConfig,
        instance: str,
        supervisor: Supervisor,
        hub: EventHub,
        command: Any,
    ):
        self.config = config
        self.instance = instance
        self.supervisor = supervisor
        self.hub = hub
        self.command = command  # async (verb, block) -> None: the control command's handler
        self.prefix = config.topic_prefix(instance)
        self.client_id = config.client_id or topics.default_client_id(instance)
        self.discovery = topics.Discovery(
            config.discovery_prefix, self.prefix, instance, _version()
        )
        # Shared with the thread, under the lock.
        self._lock = threading.Lock()
        self._retained: dict[str, Payload] = {}
        self._dirty: set[str] = set()
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._stats: bytes | None = None
        # The thread's, read by status.
        self.connected = False
        self.reason: str | None = "connecting"
        self.sent = self.dropped = self.connections = self.ignored = 0
        self._unacked: dict[int, tuple[str, bytes]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        # The loop's.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching: asyncio.Task[None] | None = None
        self._published_states: dict[str, tuple[Any, float]] = {}
        self._configs: dict[str, bytes] = {}
        self._commands = RateLimit(2.0, 10)

    # -- the event loop's side ----------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._put_retained(topics.available(self.prefix), topics.ONLINE.encode())
        self._thread.start()
        self._watching = asyncio.create_task(self._watch())
        log.info("MQTT: publishing under %s at %s", self.prefix, self.where)

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.broker_port}" + (
            " (TLS)" if self.config.uses_tls else ""
        )

    def event(self, change: str, event: dict[str, Any], active: bool) -> None:
        block, event_kind = event["block"], event["kind"]
        with self._lock:
            if len(self._events) >= self.config.queue:
                self._events.popleft()
                self.dropped += 1
            self._events.append((topics.events(self.prefix), topics.event_payload(change, event)))
            self._set(topics.kind(self.prefix, block, event_kind), b"ON" if active else b"OFF")
            if event.get("snapshot"):
                path = Path(event["snapshot"])
                for name in {block, *self._cameras_of(block)}:
                    self._set(topics.snapshot(self.prefix, name), path)
        self._wake()

    def _cameras_of(self, block: str) -> list[str]:
        """The camera blocks upstream of ``block`` (through every input)."""
        graph = self.supervisor.graph
        seen, todo, found = set(), [block], []
        while todo:
            name = todo.pop()
            spec = graph.blocks.get(name)
            if spec is None or name in seen:
                continue
            seen.add(name)
            if spec.type == "camera" and name != block:
                found.append(name)
            todo += list(spec.inputs)
        return found

    def _put_retained(self, topic: str, payload: Payload) -> None:
        with self._lock:
            self._set(topic, payload)
        self._wake()

    def _set(self, topic: str, payload: Payload) -> None:
        """(Under the lock.) The newest retained payload of a topic, to be published."""
        if self._retained.get(topic) != payload:
            self._retained[topic] = payload
            self._dirty.add(topic)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    async def _watch(self) -> None:
        """Each block's state (on change and every state_interval), stats, discovery."""
        next_stats = 0.0
        while True:
            now = time.monotonic()
            self._states(now)
            if now >= next_stats:
                next_stats = now + self.config.stats_interval
                self._put_stats()
            if self.config.discovery:
                self._announce()
            await asyncio.sleep(WATCH_EVERY)

    def _states(self, now: float) -> None:
        current = {w.name: w for w in self.supervisor.every()}
        for name, watcher in current.items():
            key = (watcher.state.value, watcher.reason)
            last = self._published_states.get(name)
            if last is None or last[0] != key or now - last[1] >= self.config.state_interval:
                self._published_states[name] = (key, now)
                payload = {"state": key[0], "fps": round(watcher.fps, 2), "reason": key[1]}
                self._put_retained(topics.state(self.prefix, name), _json(payload))
        for name in [n for n in self._published_states if n not in current]:  # reloaded away
            del self._published_states[name]
            self._put_retained(topics.state(self.prefix, name), b"")

    def _put_stats(self) -> None:
        status = self.supervisor.status(self.supervisor.every())
        blocks = {
            b["name"]: {k: b.get(k) for k in ("state", "fps", "cpu_percent", "restarts", "events")}
            for b in status["blocks"]
        }
        stats = {"uptime_s": status["uptime_s"], "run": status["run"], "blocks": blocks,
                 "events": status.get("events"), "mqtt": self.status()["mqtt"]}  # fmt: skip
        with self._lock:
            self._stats = _json(stats)
        self._wake()

    def _announce(self) -> None:
        blocks = {w.name: w.spec.type for w in self.supervisor.every()}
        configs = self.discovery.configs(blocks, self.hub.kinds(), self.config.commands)
        for topic in [t for t in self._configs if t not in configs]:
            self._put_retained(topic, b"")  # an entity of a block that is gone
        for topic, payload in configs.items():
            if self._configs.get(topic) != payload:
                self._put_retained(topic, payload)
        self._configs = configs

    def _obey(self, block: str, verb: str) -> None:
        """A command from the broker (commands = true), on the loop."""
        if block not in self.supervisor.blocks:
            self.ignored += 1
            log.warning("MQTT: %s for a block this graph does not have: %r", verb, block)
            return
        if not self._commands.take():
            self.ignored += 1
            log.warning("MQTT: too many commands; %s %s ignored", verb, block)
            return
        log.info("MQTT: %s %s", verb, block, extra={"block": block})
        task = asyncio.ensure_future(self.command(verb, block))
        task.add_done_callback(_log_failure)

    def status(self) -> dict[str, Any]:
        with self._lock:
            queued = len(self._events)
        return {
            "mqtt": {
                "broker": self.where,
                "client_id": self.client_id,
                "prefix": self.prefix,
                "connected": self.connected,
                "reason": self.reason,
                "queued": queued + len(self._unacked),
                "dropped": self.dropped,
                "sent": self.sent,
                "connections": self.connections,
                "commands": self.config.commands,
                "discovery": self.config.discovery,
                "commands_ignored": self.ignored,
            }
        }

    async def close(self) -> None:
        """Say offline, disconnect, and let the thread go (it is a daemon thread: a
        broker that hangs us up cannot keep the daemon from exiting)."""
        if self._watching is not None:
            self._watching.cancel()
        self._stopping.set()
        self._wake()
        await asyncio.to_thread(self._thread.join, CLOSE_TIMEOUT + CONNECT_TIMEOUT)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stopping.is_set():
            client = self._connect()
            if client is not None:
                was = self._serve(client)
                delay = RETRY_FIRST if was else delay
                if self._stopping.is_set():
                    break
            if self.reason:
                self.reason = f"{self.reason.split('; retrying')[0]}; retrying in {delay:g} s"
            log.warning("MQTT: %s", self.reason)
            self._stopping.wait(delay)
            delay = min(delay * 2, self.config.reconnect_max)

    def _connect(self) -> Any:
        """A client connected to the broker (the CONNECT sent); None, and the reason."""
        import paho.mqtt.client as mqtt

        config = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=mqtt.MQTTv311, clean_session=True,
        )  # fmt: skip
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_queued_messages_set(config.queue)
        client.will_set(topics.available(self.prefix), topics.OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._connack: Any = None
        try:
            if config.username:
                client.username_pw_set(config.username, config.read_password())
            if config.uses_tls:
                client.tls_set(
                    ca_certs=config.tls_ca or None, certfile=config.tls_cert or None,
                    keyfile=config.tls_key or None, cert_reqs=ssl.CERT_REQUIRED,
                )  # fmt: skip
            client.connect(config.host, config.broker_port, config.keepalive)
        except Exception as exc:  # paho raises what socket and ssl raise
            self.reason = self._why(exc)
            return None
        return client

    def _why(self, exc: BaseException) -> str:
        host, port = self.config.host, self.config.broker_port
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve the broker's host {host!r}: {exc.strerror or exc}"
        if isinstance(exc, ConnectionRefusedError):
            return f"{host}:{port} refused the connection: is the broker running, on that port?"
        if isinstance(exc, TimeoutError | socket.timeout):
            return f"no answer from {host}:{port} within {CONNECT_TIMEOUT:g} s"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS with {host}:{port}: {exc.verify_message or exc}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS with {host}:{port}: {exc.reason or exc}"
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            return f"{host}:{port}: {exc.strerror or exc}{where}"
        return f"{host}:{port}: {type(exc).__name__}: {exc}"

    def _serve(self, client: Any) -> bool:
        """Carry one connection until it ends; True if the broker accepted us."""
        deadline = time.monotonic() + CONNACK_TIMEOUT
        accepted = False
        while not self._stopping.is_set():
            if self._connack is not None and not accepted:
                if not self._connack:
                    break  # refused: the reason is said
                accepted = True
                self._connected(client)
            if not accepted and time.monotonic() > deadline:
                self.reason = f"{self.where} accepted the connection but never answered MQTT"
                break
            if accepted:
                self._flush(client)
            if not self._step(client):
                if not accepted and self._connack is None:
                    self.reason = self._closed_before_connack()
                break
        if self._stopping.is_set() and accepted:
            self._say_offline(client)
        self._lost(client)
        return accepted

    def _closed_before_connack(self) -> str:
        """Why a broker that took the connection closed it before answering CONNECT."""
        why = f"{self.where} closed the connection before accepting us"
        if self.config.uses_tls and not self.config.tls_cert:
            return f"{why}: does it ask for a client certificate? (tls_cert and tls_key)"
        return f"{why}: see the broker's log"

    def _step(self, client: Any) -> bool:
        """One wait on the socket and our wake pipe; False once the connection is gone."""
        sock = client.socket()
        if sock is None:
            return False
        wants = [sock] if client.want_write() else []
        try:
            readable, _, _ = select.select([sock, self._wake_r], wants, [], 1.0)
        except (OSError, ValueError):
            return False
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
        if sock in readable and client.loop_read() != 0:
            return False
        if client.want_write() and client.loop_write() != 0:
            return False
        return client.loop_misc() == 0 and client.socket() is not None

    def _connected(self, client: Any) -> None:
        self.connected = True
        self.connections += 1
        self.reason = None
        log.info("MQTT: connected to %s as %s", self.where, self.client_id)
        with self._lock:  # the broker may have lost them: every retained topic again
            self._retained[topics.available(self.prefix)] = topics.ONLINE.encode()
            self._dirty = set(self._retained)
        if self.config.commands:
            client.subscribe(topics.commands_filter(self.prefix), qos=1)

    def _flush(self, client: Any) -> None:
        """Hand paho what waits: retained topics, stats, then events in order."""
        with self._lock:
            dirty = [(t, self._retained[t]) for t in self._dirty if t in self._retained]
            self._dirty.clear()
            stats, self._stats = self._stats, None
        for topic, payload in dirty:
            data = _read(payload)
            if data is not None:
                client.publish(topic, data, qos=1, retain=True)
        if stats is not None:
            client.publish(topics.stats(self.prefix), stats, qos=0)
        while True:
            with self._lock:
                if not self._events:
                    return
                topic, data = self._events[0]
            info = client.publish(topic, data, qos=1)
            if info.rc != 0:
                return  # paho's own queue is full (a slow broker): ours holds the rest
            with self._lock:
                if self._events and self._events[0] == (topic, data):
                    self._events.popleft()
            self._unacked[info.mid] = (topic, data)

    def _say_offline(self, client: Any) -> None:
        """A clean stop: ``offline``, retained, then DISCONNECT (which spares the will)."""
        info = client.publish(topics.available(self.prefix), topics.OFFLINE, qos=1, retain=True)
        end = time.monotonic() + CLOSE_TIMEOUT
        while not info.is_published() and time.monotonic() < end and self._step(client):
            pass
        client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_write()

    def _lost(self, client: Any) -> None:
        """The connection is over: what was in flight goes first on the next one."""
        if self.connected:
            self.connected = False
            if not self._stopping.is_set():
                self.reason = self.reason or "the connection to the broker was lost"
        with self._lock:
            for mid in sorted(self._unacked, reverse=True):
                self._events.appendleft(self._unacked[mid])
            self._unacked.clear()
            while len(self._events) > self.config.queue:
                self._events.popleft()
                self.dropped += 1
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()

    # paho's callbacks: in this thread, from loop_read/loop_write.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        self._connack = not code.is_failure
        if code.is_failure:
            self.reason = f"the broker refused us: {code}"

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        if not self._stopping.is_set() and self.connected:
            self.reason = f"the broker hung up: {code}"

    def _on_publish(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        if self._unacked.pop(mid, None) is not None:
            self.sent += 1

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        parsed = topics.parse_command(self.prefix, message.topic, message.payload)
        if parsed is None or self._loop is None:
            self.ignored += 1
            return
        self._loop.call_soon_threadsafe(self._obey, *parsed)


def _read(payload: Payload) -> bytes | None:
    if isinstance(payload, bytes):
        return payload
    try:
        return payload.read_bytes()
    except OSError:
        return None  # a snapshot retention took away


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _version() -> str:
    try:
        return importlib.metadata.version("pipelined")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("MQTT: the command failed: %s", task.exception())
