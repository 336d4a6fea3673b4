"""A real MQTT broker (Debian's mosquitto) and a real subscriber, for the MQTT tests and the
events benchmark.

``Broker`` runs mosquitto on a loopback port of its own, plain or with TLS (certificates
made with openssl: ``make_certificates``) and a password file (``mosquitto_passwd``);
it can be stopped, killed and started again on the same port. ``Subscriber`` is a paho
client in its own thread that keeps every message it gets, with the time it got it.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from harness.daemon import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HAVE_MOSQUITTO = Path(MOSQUITTO).exists()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate
    (for a broker that asks for one), made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("ca", "ca_key", "server", "server_key", "client", "client_key")
    paths = {k: folder / f"{k}.pem" for k in names}
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def key_and_request(name: str, subject: str) -> list[str]:
        return ["-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", str(paths[f"{name}_key"])]  # fmt: skip

    run("req", "-x509", *key_and_request("ca", "/CN=test CA"), "-days", "2",
        "-out", str(paths["ca"]))  # fmt: skip
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=pipelined-test")):
        csr = folder / f"{name}.csr"
        run("req", *key_and_request(name, subject), "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]),
            "-CAkey", str(paths["ca_key"]), "-CAcreateserial", "-days", "2",
            *(["-extfile", str(ext)] if name == "server" else []),
            "-out", str(paths[name]))  # fmt: skip
    return paths


class Broker:
    """mosquitto on 127.0.0.1:``port``; ``users`` makes it ask for a password,
    ``require_certificate`` for a client certificate."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        certificates: dict[str, Path] | None = None,
        users: dict[str, str] | None = None,
        require_certificate: bool = False,
    ):
        self.folder = folder
        self.port = port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "mosquitto.log"
        # As root, mosquitto drops to the user "mosquitto", who cannot read our tmp_path.
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"user {getpass.getuser()}",
        ]
        if certificates:
            lines += [
                f"cafile {certificates['ca']}",
                f"certfile {certificates['server']}",
                f"keyfile {certificates['server_key']}",
            ]
            if require_certificate:  # a client signed by our CA, or no connection
                lines.append("require_certificate true")
        if users:
            passwords = folder / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run(
                    [
                        "mosquitto_passwd",
                        "-b",
                        *(["-c"] if i == 0 else []),
                        str(passwords),
                        user,
                        password,
                    ],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for(self._listening, 20, f"mosquitto on port {self.port}", errors=(OSError,))
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def kill(self) -> None:
        """SIGKILL: the broker is gone at once, and no will of anyone is published."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() when it came

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


class Subscriber:
    """A paho client that subscribes to ``topics`` and keeps what comes (it reconnects
    by itself when the broker comes back). With ``session`` (a client id) its session
    lasts: the broker keeps its messages while it is away, across a restart of a
    broker that persists."""

    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = ("#",),
        tls_ca: Path | None = None,
        user: tuple[str, str] | None = None,
        session: str | None = None,
        cert: tuple[Path, Path] | None = None,
    ):
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.topics = topics
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=session or f"sub-{port}-{id(self)}",
            clean_session=session is None,
        )
        if tls_ca is not None:
            certfile, keyfile = (str(cert[0]), str(cert[1])) if cert else (None, None)
            self.client.tls_set(ca_certs=str(tls_ca), certfile=certfile, keyfile=keyfile)
        if user is not None:
            self.client.username_pw_set(*user)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)
        self.connected = threading.Event()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_for(self.connected.is_set, 20, "the subscriber to connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(
                Message(message.topic, bytes(message.payload), bool(message.retain), time.time())
            )

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait(self, check: Any, timeout: float, what: str) -> Any:
        return wait_for(check, timeout, what)

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
