"""The daemon's systemd glue, on this machine, without a systemd running as PID 1.

sd_notify is a datagram to $NOTIFY_SOCKET and socket activation is an inherited fd
with $LISTEN_FDS: both are played here by the test, against a real daemon, real
workers and systemd-python's real calls. What only a real systemd can show (the unit
going active on READY=1, its watchdog, the journal) is in test_systemd_deb.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.daemon import RunningDaemon, wait_for
from systemd import journal

from pipelined.daemon import systemd as sd
from pipelined.daemon.events.hub import EventHub
from pipelined.daemon.graph import parse_graph

GRAPH_TOML = Path(__file__).parent.parent / "packaging" / "graph.toml"


def packaged_graph_daemon() -> RunningDaemon:
    """A daemon on the graph the package installs, recording into its own directory."""
    text = GRAPH_TOML.read_text()
    assert 'directory = "recordings"' in text  # relative: under the daemon's state directory
    return RunningDaemon(text)


class NotifyListener:
    """The systemd end of sd_notify: a datagram socket whose messages a thread collects,
    each with the time it arrived."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float = 60, after: int = 0) -> int:
        """Index of the first message from ``after`` on that carries ``key``."""

        def find() -> int | None:
            for i in range(after, len(self.messages)):
                if key in self.messages[i][1]:
                    return i + 1  # 0 would read as "not yet"
            return None

        return wait_for(find, timeout, f"{key} from the daemon") - 1

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notified() -> Iterator[tuple[RunningDaemon, NotifyListener]]:
    daemon = packaged_graph_daemon()
    listener = NotifyListener(daemon.dir)
    daemon.env.update(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="1000000")
    daemon.start()
    yield daemon, listener
    daemon.close()
    listener.close()


def test_ready_status_watchdog_reload_stopping(
    notified: tuple[RunningDaemon, NotifyListener],
) -> None:
    """READY=1 only once every block runs; STATUS, WATCHDOG at half the interval,
    RELOADING=1 + MONOTONIC_USEC then READY=1 around a reload, STOPPING=1 on SIGTERM."""
    daemon, notify = notified
    ready = notify.wait_for("READY")
    states = [b["state"] for b in daemon.status()["blocks"]]
    assert states == ["RUNNING"] * 4, states
    before = [m for _, m in notify.messages[:ready]]
    assert any(m.get("STATUS", "").startswith("starting: 4 blocks") for m in before), before
    assert notify.messages[ready][1]["STATUS"].startswith("4 blocks: 4 running, 0 failed; camera")

    time.sleep(2.2)
    pings = [t for t, m in notify.messages if "WATCHDOG" in m]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # Every WATCHDOG_USEC/2, so each ping lands well before systemd's limit (1 s here).
    assert len(pings) >= 4 and all(0.35 < g < 0.9 for g in gaps[1:]), gaps
    assert notify.wait_for("STATUS", after=ready + 1)  # kept current (fps) after READY

    graph = daemon.graph.read_text().replace("hsv_low = [0, 120, 70]", "hsv_low = [0, 90, 50]")
    daemon.graph.write_text(graph)
    mark = len(notify.messages)
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert daemon.call("reload")["restarted"] == ["red"]
    reloading = notify.wait_for("RELOADING", after=mark)
    sent = int(notify.messages[reloading][1]["MONOTONIC_USEC"])
    assert 0 <= sent - now_usec < 5_000_000
    assert notify.wait_for("READY", after=reloading) > reloading

    mark = len(notify.messages)
    assert daemon.stop() == 0
    stopping = notify.wait_for("STOPPING", after=mark)
    assert notify.messages[stopping][1]["STATUS"] == "stopping the graph"


def test_socket_activation_takes_the_socket_and_hides_it_from_workers(tmp_path: Path) -> None:
    """Under systemd-socket-activate the daemon answers on the inherited socket, and no
    worker inherits $LISTEN_FDS (nor the fd)."""
    tool = shutil.which("systemd-socket-activate") or "/lib/systemd/systemd-socket-activate"
    if not os.access(tool, os.X_OK):
        pytest.skip("systemd-socket-activate is not installed (Debian's systemd package)")
    daemon = packaged_graph_daemon()
    # The activator makes the daemon's socket and hands it over as fd 3.
    daemon.start(wrapper=[tool, "-l", str(daemon.socket)])
    try:
        wait_for(daemon.socket.exists, 10, "the activator's socket")
        with daemon.client(timeout=30) as client:  # it may still be starting
            assert client.call("hello")["instance"] == daemon.instance
        status = daemon.wait_all_running(60)
        assert "control socket from systemd (fd 3)" in daemon.log_text()
        for block in status["blocks"]:
            environ = Path(f"/proc/{block['pid']}/environ").read_bytes().split(b"\0")
            assert not [v for v in environ if v.startswith((b"LISTEN_FDS=", b"LISTEN_PID="))]
            assert not os.path.exists(f"/proc/{block['pid']}/fd/3") or not os.readlink(
                f"/proc/{block['pid']}/fd/3"
            ).startswith("socket:")
        assert daemon.stop() == 0
    finally:
        daemon.close()


# -- the journal handler, with the journal's send() replaced --------------------------


def _record(name: str, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_journal_entries_carry_block_instance_and_worker_pid() -> None:
    """Only valid journal fields go out, with PIPELINED_BLOCK and PIPELINED_PID from the
    record's extras (the watcher and the worker process set them on every line about a block)."""
    sent: list[tuple[str, dict[str, object]]] = []
    handler = sd.BlockJournalHandler("main")
    handler.send = lambda message, **fields: sent.append((message, fields))  # type: ignore[method-assign]
    handler.emit(_record("pipelined.block", "%s: %s", "red", "hello", block="red", worker_pid=4242))
    handler.emit(_record("pipelined.block", "%s: %s", "edges", "x", block="edges", worker_pid=None))
    handler.emit(_record("pipelined", "run %s of instance %s", "abc", "main"))

    (m1, f1), (_, f2), (_, f3) = sent
    assert m1 == "red: hello" and f1["PIPELINED_BLOCK"] == "red" and f1["PIPELINED_PID"] == "4242"
    assert f2["PIPELINED_BLOCK"] == "edges" and "PIPELINED_PID" not in f2  # no worker known
    assert "PIPELINED_BLOCK" not in f3 and f3["LOGGER"] == "pipelined"
    for fields in (f1, f2, f3):
        assert fields["PIPELINED_INSTANCE"] == "main"
        assert fields["SYSLOG_IDENTIFIER"] == "pipelined" and fields["PRIORITY"] == "6"
        names = [k for k in fields if not k.startswith("CODE_")]
        assert all(journal._valid_field_name(k) for k in names), names


def test_journal_only_when_stderr_is_the_journal(tmp_path: Path) -> None:
    """$JOURNAL_STREAM must name fd 2 itself: a redirected stderr keeps plain lines."""
    st = os.fstat(2)
    assert sd.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not sd.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not sd.stderr_is_journal({})
    assert not sd.log_to_journal("main", {})


def test_notifier_is_silent_without_systemd() -> None:
    sent: list[str] = []
    quiet = sd.Notifier(environ={}, send=sent.append)
    quiet.ready("x")
    quiet.watchdog()
    quiet.stopping()
    assert sent == [] and quiet.watchdog_s is None
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert sd.Notifier(environ=env, send=sent.append).watchdog_s == 4.0
    other = {**env, "WATCHDOG_PID": "1"}  # the watchdog is someone else's
    assert sd.Notifier(environ=other, send=sent.append).watchdog_s is None


def test_an_events_journal_line_carries_its_id_kind_phase_and_score() -> None:
    """The hub's line about an event, through the journal handler: the PIPELINED_EVENT_*
    fields that `journalctl PIPELINED_EVENT_KIND=motion` selects by."""
    graph = parse_graph('[blocks.camera]\ntype = "camera"\n', "graph.toml")
    hub = EventHub(graph, None)
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("pipelined.events")
    level = logger.level
    logger.addHandler(catcher)
    logger.setLevel(logging.INFO)
    try:
        event = {"id": "1764600000.000-abc123", "block": "camera", "kind": "motion"}
        hub._log({**event, "score": 0.25}, "start")
        hub._log({**event, "score": None}, "end")
    finally:
        logger.removeHandler(catcher)
        logger.setLevel(level)
    sent: list[tuple[str, dict[str, object]]] = []
    handler = sd.BlockJournalHandler("main")
    handler.send = lambda message, **fields: sent.append((message, fields))  # type: ignore[method-assign]
    for record in records:
        handler.emit(record)
    (m1, f1), (_, f2) = sent
    assert m1 == "camera: motion start 1764600000.000-abc123 score 0.25"
    assert f1["PIPELINED_BLOCK"] == "camera" and f1["PIPELINED_EVENT_KIND"] == "motion"
    assert f1["PIPELINED_EVENT_ID"] == event["id"] and f1["PIPELINED_EVENT_PHASE"] == "start"
    assert f1["PIPELINED_EVENT_SCORE"] == "0.25"
    assert f2["PIPELINED_EVENT_PHASE"] == "end" and "PIPELINED_EVENT_SCORE" not in f2
    for fields in (f1, f2):
        names = [k for k in fields if not k.startswith("CODE_")]
        assert all(journal._valid_field_name(k) for k in names), names
