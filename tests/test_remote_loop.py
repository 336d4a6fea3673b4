"""The remote path on one box, without root: a daemon that publishes a block's frames and
reads them back through Zenoh (a session receives its own samples), so that the link's
supervision can be tested anywhere: a crashed link is restarted and the remote block
carries on without a restart, and a reload that changes only ``[zenoh]`` restarts only
the link. Two boxes in two network namespaces are tests/test_remote_boxes.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from harness.daemon import RunningDaemon, free_port
from userblocks.remote_blocks import expected, number_of

from pipelined.daemon.supervisor import SPARE_READERS
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import WireReader

SHAPE = (120, 160, 3)


def loop_graph(port: int, lease: float = 10.0) -> str:
    return f"""
[supervisor]
backoff_initial = 0.05

[zenoh]
listen = ["tcp/127.0.0.1:{port}"]
lease = {lease}

[blocks.bars]
type = "userblocks.remote_blocks:Bars"
size = [160, 120]
fps = 15
publish = {{ key = "loop/raw", encoding = "raw" }}

[blocks.door]
type = "remote"
source = "zenoh:loop/raw"
encoding = "raw"
size = [160, 120]
"""


@pytest.fixture
def loop() -> Iterator[RunningDaemon]:
    port = free_port()
    daemon = RunningDaemon(loop_graph(port), prefix="lp")
    daemon.port = port  # type: ignore[attr-defined]
    try:
        daemon.start().wait_all_running()
        daemon.until(lambda: remote(daemon)["state"] == "receiving", 60, "door receiving")
        yield daemon
    finally:
        daemon.close()


def remote(daemon: RunningDaemon) -> dict[str, Any]:
    return next(w for w in daemon.status()["remote_wires"] if w["direction"] == "in")


def exact_frames(daemon: RunningDaemon, count: int) -> None:
    """``count`` frames of door, each exactly the picture bars made with its number."""
    names = RunNames(daemon.instance, daemon.status()["run"])
    reader = WireReader(names, "door", SPARE_READERS - 1)
    try:
        got = 0
        for _ in range(count * 100):
            frame = reader.read_copy(timeout=1.0)
            if frame is None:
                continue
            assert (frame.array == expected(number_of(frame.array), SHAPE)).all()
            got += 1
            if got == count:
                return
        raise AssertionError(f"{got} of {count} frames of door")
    finally:
        reader.close()


def door_moves(daemon: RunningDaemon, link_pid: int, what: str) -> None:
    """The new link (not ``link_pid``) takes samples onto door's wire again."""
    daemon.until(
        lambda: (
            daemon.block("zenoh")["pid"] not in (None, link_pid) and remote(daemon)["frames"] > 10
        ),
        60,
        what,
    )


def test_a_box_reading_its_own_key_says_so_not_no_peer(loop) -> None:
    """No other box is connected, and both ends of the key are blocks of this graph:
    status says the wire is sending and receiving, and that its peer is this box."""
    out = loop.until(
        lambda: next((w for w in loop.status()["remote_wires"] if w["state"] == "sending"), None),
        30,
        "bars sending",
    )
    assert (out["block"], out["peer"]) == ("bars", "this box")
    wire = remote(loop)
    assert (wire["state"], wire["peer"]) == ("receiving", "this box")
    text = loop.pipectl("status", timeout=30).stdout
    table = text[text.index("REMOTE WIRE") :]
    assert "this box" in table and "no peer" not in table, text


def test_a_crashed_link_is_restarted_and_the_remote_block_carries_on(loop) -> None:
    exact_frames(loop, 5)
    door, link = loop.block("door"), loop.block("zenoh")["pid"]
    os.kill(link, signal.SIGKILL)
    loop.until(lambda: loop.block("zenoh")["restarts"] == 1, 30, "the link restarted")
    loop.wait_state("zenoh", "RUNNING")
    door_moves(loop, link, "door's samples after the link's restart")
    exact_frames(loop, 3)
    after = loop.block("door")
    assert (after["pid"], after["restarts"]) == (door["pid"], door["restarts"])


def test_a_reload_of_zenoh_alone_restarts_only_the_link(loop) -> None:
    before = {b["name"]: b["pid"] for b in loop.status()["blocks"]}
    loop.graph.write_text(loop_graph(loop.port, lease=5.0))  # type: ignore[attr-defined]
    assert loop.call("reload") == {"added": [], "removed": [], "restarted": ["zenoh"]}
    loop.wait_all_running()
    door_moves(loop, before["zenoh"], "door's samples after the reload")
    after = {b["name"]: b["pid"] for b in loop.status()["blocks"]}
    assert after["bars"] == before["bars"] and after["door"] == before["door"]
    assert after["zenoh"] != before["zenoh"]
    exact_frames(loop, 3)


def test_a_stopped_link_says_so_for_each_remote_wire(loop) -> None:
    loop.call("stop", blocks=["zenoh"])
    wires = loop.status()["remote_wires"]
    assert {(w["block"], w["direction"], w["state"]) for w in wires} == {
        ("bars", "out", "link stopped"),
        ("door", "in", "link stopped"),
    }
    loop.call("start", blocks=["zenoh"])
    loop.until(lambda: remote(loop)["state"] == "receiving", 60, "door receiving again")
