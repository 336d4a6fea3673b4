"""MQTT against a real broker (Debian's mosquitto, started here on a free port) and a real
subscriber: availability and the last will, states, events from the moving square,
commands when allowed and ignored when not, Home Assistant discovery checked against its
schema's keys, a broker down at start, killed and restarted, TLS with a password file,
and bad input (a host that does not resolve, a wrong password, a hanging webhook)."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest
from harness.daemon import RunningDaemon, free_port, wait_for
from mqtt_broker import HAVE_MOSQUITTO, Broker, Subscriber, make_certificates

pytestmark = pytest.mark.skipif(not HAVE_MOSQUITTO, reason="needs Debian's mosquitto")

MOTION = """
[blocks.camera]
type = "camera"
source = "testsrc"
size = [160, 120]
fps = 10

[blocks.motion]
type = "motion"
input = "camera"
region = [0.8, 0.2, 0.2, 0.3]
end_after = 0.3
"""

TICKS = """
[blocks.source]
type = "userblocks.runtime_blocks:Counter"
fps = 20
side = 16

[blocks.ticks]
type = "userblocks.event_blocks:Every"
input = "source"
every = {every}
kind = "person"
"""


def mqtt_table(port: int, prefix: str, **keys: object) -> str:
    lines = ["[mqtt]", 'host = "127.0.0.1"', f"port = {port}", f'prefix = "{prefix}"']
    for key, value in keys.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def flowing(d: RunningDaemon, block: str) -> bool:
    """Whether the block's frames still go out: the graph did not stop."""
    before = d.block(block)["frames_out"]
    return bool(wait_for(lambda: d.block(block)["frames_out"] > before, 30, f"{block}'s frames"))


def events_of(sub: Subscriber, prefix: str) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(f"{prefix}/events")]


def states(sub: Subscriber, prefix: str, block: str) -> list[str]:
    return [json.loads(m.payload)["state"] for m in sub.on(f"{prefix}/{block}/state") if m.payload]


def test_availability_states_motion_events_and_the_last_will(tmp_path):
    prefix = f"t/{secrets.token_hex(3)}"
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, (f"{prefix}/#",))
        d = RunningDaemon(MOTION + mqtt_table(broker.port, prefix))
        try:
            d.start()
            d.wait_all_running()
            d.until(
                lambda: "online" in [m.text for m in sub.on(f"{prefix}/available")], 30, "online"
            )
            d.until(lambda: "RUNNING" in states(sub, prefix, "motion"), 30, "motion's state")

            def motion_came_and_went():
                events = events_of(sub, prefix)
                ended = {e["event"]["id"] for e in events if e["type"] == "end"}
                return [e for e in events if e["type"] == "start" and e["event"]["id"] in ended]

            (start, *_) = d.until(motion_came_and_went, 60, "a motion event's start and end")
            event = start["event"]
            assert (event["block"], event["kind"], event["active"]) == ("motion", "motion", True)
            assert event["snapshot"].endswith(f"{event['id']}.jpg") and event["score"] > 0
            flips = [m.text for m in sub.on(f"{prefix}/motion/event/motion")]
            assert "ON" in flips and "OFF" in flips
            picture = sub.on(f"{prefix}/camera/snapshot")  # the camera's: for Home Assistant
            assert (
                picture and picture[-1].payload[:2] == b"\xff\xd8" and picture[-1].retain is False
            )

            # commands are not allowed: a set is not even read
            sub.publish(f"{prefix}/motion/set", "stop")
            time.sleep(1.5)
            assert d.block("motion")["state"] == "RUNNING"
            assert d.status()["mqtt"]["commands"] is False

            d.call("stop", blocks=["motion"])  # pipectl stop: the state follows
            d.until(lambda: states(sub, prefix, "motion")[-1] == "STOPPED", 30, "STOPPED")
            status = d.status()["mqtt"]
            assert status["connected"] and status["reason"] is None and status["sent"] > 0

            d.kill()  # SIGKILL: the broker says offline for us (the last will)
            wait_for(lambda: sub.on(f"{prefix}/available")[-1].text == "offline", 30, "the will")
        finally:
            d.close()
            sub.close()


# Home Assistant's MQTT discovery schema (its documentation and homeassistant/components/
# mqtt/{camera,binary_sensor,sensor,switch}.py): what each platform requires, and every key
# it accepts that we might send.
COMMON = {
    "name",
    "unique_id",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "icon",
    "qos",
    "object_id",
    "json_attributes_topic",
    "entity_category",
    "enabled_by_default",
    "encoding",
}
SCHEMA = {
    "camera": ({"topic"}, COMMON | {"topic", "image_encoding"}),
    "binary_sensor": (
        {"state_topic"},
        COMMON
        | {
            "state_topic",
            "payload_on",
            "payload_off",
            "device_class",
            "value_template",
            "off_delay",
            "expire_after",
            "force_update",
        },
    ),
    "sensor": (
        {"state_topic"},
        COMMON
        | {
            "state_topic",
            "value_template",
            "unit_of_measurement",
            "state_class",
            "device_class",
            "expire_after",
            "force_update",
            "suggested_display_precision",
        },
    ),
    "switch": (
        {"command_topic"},
        COMMON
        | {
            "command_topic",
            "state_topic",
            "payload_on",
            "payload_off",
            "state_on",
            "state_off",
            "value_template",
            "optimistic",
            "retain",
            "device_class",
        },
    ),
}
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "name",
    "sw_version",
    "hw_version",
    "serial_number",
    "via_device",
    "suggested_area",
    "configuration_url",
}


def test_commands_when_allowed_and_discovery_as_home_assistant_reads_it(tmp_path):
    prefix, discovery = f"t/{secrets.token_hex(3)}", f"ha{secrets.token_hex(2)}"
    graph = (
        TICKS.format(every=20)
        + '[blocks.camera]\ntype = "camera"\nsize = [64, 48]\nfps = 5\n'
        + mqtt_table(
            broker_port := free_port(),
            prefix,
            commands=True,
            discovery=True,
            discovery_prefix=discovery,
        )
    )
    with Broker(tmp_path / "broker", port=broker_port) as broker:
        sub = Subscriber(broker.port, (f"{prefix}/#", f"{discovery}/#"))
        d = RunningDaemon(graph)
        try:
            d.start()
            d.wait_all_running()
            configs_at = f"{discovery}/binary_sensor/pipelined_{d.instance}/ticks_person/config"
            d.until(lambda: sub.on(configs_at), 30, "a binary sensor for the person events")
            configs = {
                m.topic: json.loads(m.payload)
                for m in sub.messages
                if m.topic.startswith(f"{discovery}/") and m.payload
            }
            by_platform: dict[str, list[dict]] = {}
            for topic, config in configs.items():
                root, platform, node, _, last = topic.split("/")
                assert (root, node, last) == (discovery, f"pipelined_{d.instance}", "config")
                required, allowed = SCHEMA[platform]
                assert required <= set(config), (topic, config)
                assert set(config) <= allowed, (topic, set(config) - allowed)
                assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"]
                assert config["availability_topic"] == f"{prefix}/available"
                by_platform.setdefault(platform, []).append(config)
            assert len({c["unique_id"] for c in configs.values()}) == len(configs)
            assert [c["topic"] for c in by_platform["camera"]] == [f"{prefix}/camera/snapshot"]
            sensors = {c["state_topic"] for c in by_platform["binary_sensor"]}
            assert f"{prefix}/ticks/event/person" in sensors
            assert f"{prefix}/ticks/event/tick" in sensors  # declared by the block, before any
            assert {c["command_topic"] for c in by_platform["switch"]} == {
                f"{prefix}/{b}/set" for b in ("source", "ticks", "camera")
            }
            assert all(c["unit_of_measurement"] == "fps" for c in by_platform["sensor"])

            sub.publish(f"{prefix}/ticks/set", "stop")
            d.wait_state("ticks", "STOPPED", 30)
            d.until(lambda: states(sub, prefix, "ticks")[-1] == "STOPPED", 30, "STOPPED state")
            sub.publish(f"{prefix}/ticks/set", "START")
            d.wait_state("ticks", "RUNNING", 30)
            sub.publish(f"{prefix}/ticks/set", "explode")  # not a command
            sub.publish(f"{prefix}/nosuch/set", "stop")  # not a block
            d.until(lambda: d.status()["mqtt"]["commands_ignored"] >= 2, 30, "ignored commands")
            assert d.block("ticks")["state"] == "RUNNING"

            assert d.stop() == 0  # a clean stop says offline itself
            wait_for(lambda: sub.on(f"{prefix}/available")[-1].text == "offline", 30, "offline")
        finally:
            d.close()
            sub.close()


def test_a_broker_down_at_start_then_killed_and_restarted(tmp_path):
    """The graph never stops; events raised while the broker is away arrive when it is
    back; each connection says online once."""
    prefix = f"t/{secrets.token_hex(3)}"
    broker = Broker(tmp_path / "broker")
    broker.config.write_text(
        broker.config.read_text()
        + f"persistence true\npersistence_location {broker.folder}/\nautosave_interval 1\n"
    )
    broker.start()  # once, for the subscriber's lasting session (it keeps its messages)
    sub = Subscriber(broker.port, (f"{prefix}/#",), session=f"sub-{prefix}")
    broker.stop()
    d = RunningDaemon(TICKS.format(every=10) + mqtt_table(broker.port, prefix, reconnect_max=1.0))
    try:
        d.start()
        d.wait_all_running()
        reason = d.until(lambda: d.status()["mqtt"]["reason"], 30, "why it is not connected")
        assert "refused the connection" in reason
        d.until(lambda: d.status()["mqtt"]["queued"] >= 3, 30, "events queued while it is away")
        away_until = time.time()
        assert flowing(d, "ticks")

        broker.start()
        d.until(lambda: d.status()["mqtt"]["connected"], 30, "a connection")
        early = d.until(  # they arrive one by one: wait for all three, not the first
            lambda: (
                len(
                    e := [
                        x
                        for x in events_of(sub, prefix)
                        if x["event"]["data"]["raised_at"] < away_until
                    ]
                )
                >= 3
                and e
            ),
            30,
            "the three events raised while the broker was down",
        )
        assert len(early) >= 3

        time.sleep(1.5)  # the broker saves the sessions every second
        broker.kill()
        d.until(lambda: not d.status()["mqtt"]["connected"], 30, "the loss seen")
        d.until(lambda: d.status()["mqtt"]["queued"] >= 3, 30, "events queued again")
        killed_until = time.time()
        assert d.block("ticks")["state"] == "RUNNING" and flowing(d, "ticks")

        broker.start()
        d.until(
            lambda: any(
                killed_until - 30 < e["event"]["data"]["raised_at"] < killed_until
                and e["event"]["start"] > away_until + 2
                for e in events_of(sub, prefix)
            ),
            30,
            "events raised while the broker was killed",
        )
        d.until(lambda: d.status()["mqtt"]["queued"] == 0, 30, "the queue emptied")
        status = d.status()["mqtt"]
        assert status["connections"] == 2 and status["dropped"] == 0
        live = [m for m in sub.on(f"{prefix}/available") if m.text == "online" and not m.retain]
        assert len(live) <= 2, live  # one per connection, never a storm
    finally:
        d.close()
        sub.close()
        broker.stop()


def test_tls_with_a_password_file_a_wrong_password_then_the_right_one(tmp_path):
    certificates = make_certificates(tmp_path / "certs")
    password = tmp_path / "mqtt-password"
    password.write_text("wrong\n")
    prefix = f"t/{secrets.token_hex(3)}"
    broker = Broker(tmp_path / "broker", certificates=certificates, users={"cam": "right s3cret"})
    with broker:
        table = mqtt_table(
            broker.port,
            prefix,
            tls_ca=str(certificates["ca"]),
            username="cam",
            password_file=str(password),
            reconnect_max=1.0,
        )
        d = RunningDaemon(TICKS.format(every=10) + table)
        sub = Subscriber(
            broker.port, (f"{prefix}/#",), tls_ca=certificates["ca"], user=("cam", "right s3cret")
        )
        try:
            d.start()
            d.wait_all_running()
            reason = d.until(
                lambda: (r := d.status()["mqtt"]["reason"]) and "refused us" in r and r,
                30,
                "the broker's refusal",
            )
            assert "wrong" not in reason and "s3cret" not in json.dumps(d.status())
            assert d.block("ticks")["state"] == "RUNNING"
            password.write_text("right s3cret\n")  # read again at each connection
            d.until(lambda: d.status()["mqtt"]["connected"], 30, "a connection with TLS")
            d.until(lambda: events_of(sub, prefix), 30, "events over TLS")
            assert "s3cret" not in " ".join(
                Path(f"/proc/{p}/cmdline").read_text() for p in [d.proc.pid]
            )
        finally:
            d.close()
            sub.close()


def test_a_broker_that_asks_for_a_client_certificate_gets_ours(tmp_path):
    """tls_cert and tls_key: without them the broker's refusal is the reason; with them
    (a reload) the daemon connects and its events arrive."""
    certificates = make_certificates(tmp_path / "certs")
    prefix = f"t/{secrets.token_hex(3)}"
    broker = Broker(tmp_path / "broker", certificates=certificates, require_certificate=True)
    with broker:
        without = mqtt_table(broker.port, prefix, tls_ca=str(certificates["ca"]), reconnect_max=1.0)
        d = RunningDaemon(TICKS.format(every=10) + without)
        sub = Subscriber(broker.port, (f"{prefix}/#",), tls_ca=certificates["ca"],
                         cert=(certificates["client"], certificates["client_key"]))  # fmt: skip
        try:
            d.start()
            d.wait_all_running()
            reason = d.until(
                lambda: "closed" in (r := d.status()["mqtt"]["reason"] or "") and r, 30, "why"
            )
            assert "client certificate? (tls_cert and tls_key)" in reason
            assert d.block("ticks")["state"] == "RUNNING"
            d.graph.write_text(
                TICKS.format(every=10)
                + mqtt_table(broker.port, prefix, tls_ca=str(certificates["ca"]),
                             tls_cert=str(certificates["client"]),
                             tls_key=str(certificates["client_key"]), reconnect_max=1.0)
            )  # fmt: skip
            d.call("reload")
            d.until(lambda: d.status()["mqtt"]["connected"], 30, "a connection with our cert")
            d.until(lambda: events_of(sub, prefix), 30, "events over TLS with a client cert")
        finally:
            d.close()
            sub.close()


class Hooks(http.server.ThreadingHTTPServer):
    """A webhook receiver: /good keeps each body, /hang never answers."""

    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.startswith("/hang"):
                    outer.release.wait(60)
                    return
                outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


def resolver_wrapper(folder: Path) -> list[str]:
    """Run the daemon with a resolv.conf of its own that names no server: a name is not
    resolved without a packet leaving the box (root: a private mount namespace)."""
    conf = folder / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = f'mount --bind {conf} /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a resolv.conf of the daemon's own")
def test_bad_input_each_says_why_in_status_and_disturbs_nothing_else(tmp_path):
    hooks = Hooks()
    port = hooks.server_address[1]
    graph = (
        TICKS.format(every=10)
        + mqtt_table(1883, "t/x").replace('"127.0.0.1"', '"broker.invalid"')
        + f'[webhooks]\nurls = ["http://127.0.0.1:{port}/hang/secret-id",'
        f' "http://127.0.0.1:{port}/good"]\ntimeout = 1.0\nretries = 1\nqueue = 5\n'
    )
    d = RunningDaemon(graph)
    try:
        d.start(wrapper=resolver_wrapper(tmp_path))
        d.wait_all_running()
        reason = d.until(lambda: d.status()["mqtt"]["reason"], 30, "the broker's reason")
        d.until(
            lambda: "cannot resolve" in (r := d.status()["mqtt"]["reason"]) and r,
            30,
            f"cannot resolve (was {reason!r})",
        )
        hang, _ = d.until(
            lambda: (h := d.status()["webhooks"])[0]["reason"] and h,
            30,
            "the hanging hook's reason",
        )
        assert (
            hang["url"] == f"http://127.0.0.1:{port}/…" and "no answer within 1 s" in hang["reason"]
        )
        d.until(lambda: len(hooks.bodies) >= 5, 30, "the good hook's events")
        body = hooks.bodies[0]
        assert body["type"] in ("start", "end") and body["event"]["block"] == "ticks"
        d.until(lambda: d.status()["webhooks"][0]["dropped"] > 0, 30, "the hanging queue full")
        assert d.status()["webhooks"][1]["dropped"] == 0
        started = time.monotonic()
        status = d.status()
        assert time.monotonic() - started < 5  # (an outcome: the socket answers at all)
        assert all(b["state"] == "RUNNING" for b in status["blocks"])
        assert "secret-id" not in json.dumps(status)

        # A prefix with a wildcard is refused at the reload; the running graph carries on.
        d.graph.write_text(graph.replace('prefix = "t/x"', 'prefix = "t/#"'))
        with pytest.raises(Exception, match=r"prefix 't/#' holds a wildcard"):
            d.call("reload")
        assert d.block("ticks")["state"] == "RUNNING"
    finally:
        d.close()
        hooks.close()


def test_the_daemon_stops_at_once_whatever_the_broker_does(tmp_path):
    """A broker that accepts TCP and never answers MQTT: the daemon still stops cleanly."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    d = RunningDaemon(TICKS.format(every=10) + mqtt_table(silent.getsockname()[1], "t/y"))
    try:
        d.start()
        d.wait_all_running()
        d.until(
            lambda: "never answered MQTT" in (d.status()["mqtt"]["reason"] or ""),
            30,
            "the silent broker's reason",
        )
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        assert time.monotonic() - started < 25
    finally:
        d.close()
        silent.close()
