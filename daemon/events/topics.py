"""What pipelined publishes over MQTT, and Home Assistant's discovery of it: pure functions.

Topics, under ``<prefix>`` (``[mqtt] prefix``, default ``pipelined/<instance>``):

- ``<prefix>/available``: ``online``; ``offline`` (also the last will); retained.
- ``<prefix>/<block>/state``: ``{"state", "fps", "reason"}``, on change and every
  ``state_interval``; retained.
- ``<prefix>/<block>/event/<kind>``: ``ON`` while an event of that kind is open, else
  ``OFF``; retained.
- ``<prefix>/<block>/snapshot``: the JPEG of the block's latest event (also under the
  cameras it reads); retained.
- ``<prefix>/events``: ``{"type": "start"|"update"|"end", "event": {…}}`` per change.
- ``<prefix>/stats``: the blocks' state, fps, CPU and the outlets, every
  ``stats_interval``.
- ``<prefix>/<block>/set``: ``start``, ``stop``, ``restart``, obeyed when
  ``commands = true`` (ours to read).

Discovery (``discovery = true``) follows Home Assistant's MQTT discovery schema: one
retained config per entity at ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
(node_id ``pipelined_<instance>``), every entity of one device (the daemon), all
available while ``<prefix>/available`` says ``online``:

- each camera block: a ``camera`` fed by ``<prefix>/<camera>/snapshot`` (the latest
  event snapshot of any block that reads it);
- each (block, kind) of event: a ``binary_sensor`` on ``<prefix>/<block>/event/<kind>``
  (``device_class`` motion for ``motion``, occupancy for people and vehicles);
- each block: a ``sensor`` of its fps (from its state), and, when commands are allowed,
  a ``switch`` (on: RUNNING or STARTING; turning it on or off sends start or stop).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

AVAILABLE, ONLINE, OFFLINE = "available", "online", "offline"
VERBS = ("start", "stop", "restart")
OCCUPANCY = frozenset({"person", "people", "car", "vehicle", "animal", "dog", "cat", "bicycle"})
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def available(prefix: str) -> str:
    return f"{prefix}/{AVAILABLE}"


def state(prefix: str, block: str) -> str:
    return f"{prefix}/{block}/state"


def kind(prefix: str, block: str, event_kind: str) -> str:
    return f"{prefix}/{block}/event/{event_kind}"


def snapshot(prefix: str, block: str) -> str:
    return f"{prefix}/{block}/snapshot"


def command(prefix: str, block: str) -> str:
    return f"{prefix}/{block}/set"


def events(prefix: str) -> str:
    return f"{prefix}/events"


def stats(prefix: str) -> str:
    return f"{prefix}/stats"


def commands_filter(prefix: str) -> str:
    """What we subscribe to when commands are allowed."""
    return f"{prefix}/+/set"


def parse_command(prefix: str, topic: str, payload: bytes) -> tuple[str, str] | None:
    """``(block, verb)`` of a message on ``<prefix>/<block>/set``, or None."""
    head, tail = f"{prefix}/", "/set"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    block = topic[len(head) : -len(tail)]
    verb = payload.decode("utf-8", "replace").strip().lower()
    if "/" in block or not block or verb not in VERBS:
        return None
    return block, verb


def state_payload(status: dict[str, Any]) -> bytes:
    return _json({"state": status["state"], "fps": status["fps"], "reason": status["reason"]})


def event_payload(change: str, event: dict[str, Any]) -> bytes:
    return _json({"type": change, "event": event})


def default_client_id(instance: str) -> str:
    return f"pipelined-{instance}-{socket.gethostname()}"[:64]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- Home Assistant discovery --------------------------------------------------------------


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


class Discovery:
    """The discovery configs of one daemon: topic -> payload."""

    def __init__(self, discovery_prefix: str, prefix: str, instance: str, version: str):
        self.root = discovery_prefix
        self.prefix = prefix
        self.node = _safe(f"pipelined_{instance}")
        host = _safe(socket.gethostname())
        self.device = {
            "identifiers": [f"pipelined_{_safe(instance)}_{host}"],
            "name": f"pipelined {instance} on {socket.gethostname()}",
            "manufacturer": "pipelined",
            "model": "camera-processing graph",
            "sw_version": version,
        }
        self.origin = {"name": "pipelined", "sw_version": version}

    def topic(self, component: str, object_id: str) -> str:
        return f"{self.root}/{component}/{self.node}/{_safe(object_id)}/config"

    def _entity(self, object_id: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"{self.node}_{_safe(object_id)}",
            "availability_topic": available(self.prefix),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device,
            "origin": self.origin,
        }

    def camera(self, block: str) -> tuple[str, dict[str, Any]]:
        object_id = f"{block}_camera"
        config = self._entity(object_id, f"{block} snapshot")
        config["topic"] = snapshot(self.prefix, block)
        return self.topic("camera", object_id), config

    def binary_sensor(self, block: str, event_kind: str) -> tuple[str, dict[str, Any]]:
        object_id = f"{block}_{event_kind}"
        config = self._entity(object_id, f"{block} {event_kind}")
        config |= {"state_topic": kind(self.prefix, block, event_kind),
                   "payload_on": "ON", "payload_off": "OFF"}  # fmt: skip
        if event_kind == "motion":
            config["device_class"] = "motion"
        elif event_kind in OCCUPANCY:
            config["device_class"] = "occupancy"
        return self.topic("binary_sensor", object_id), config

    def fps_sensor(self, block: str) -> tuple[str, dict[str, Any]]:
        object_id = f"{block}_fps"
        config = self._entity(object_id, f"{block} fps")
        config |= {
            "state_topic": state(self.prefix, block),
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
        }
        return self.topic("sensor", object_id), config

    def switch(self, block: str) -> tuple[str, dict[str, Any]]:
        object_id = f"{block}_running"
        config = self._entity(object_id, f"{block} running")
        config |= {
            "command_topic": command(self.prefix, block),
            "payload_on": "start",
            "payload_off": "stop",
            "state_topic": state(self.prefix, block),
            "value_template": (
                "{{ 'ON' if value_json.state in ('RUNNING', 'STARTING') else 'OFF' }}"
            ),
            "state_on": "ON",
            "state_off": "OFF",
        }
        return self.topic("switch", object_id), config

    def configs(
        self, blocks: dict[str, str], kinds: set[tuple[str, str]], commands: bool
    ) -> dict[str, bytes]:
        """Every config for ``blocks`` (name -> type) and the event ``kinds`` known."""
        out: list[tuple[str, dict[str, Any]]] = []
        for block, block_type in blocks.items():
            if block_type == "camera":
                out.append(self.camera(block))
            out.append(self.fps_sensor(block))
            if commands:
                out.append(self.switch(block))
        for block, event_kind in sorted(kinds):
            if block in blocks:
                out.append(self.binary_sensor(block, event_kind))
        return {topic: _json(config) for topic, config in out}
