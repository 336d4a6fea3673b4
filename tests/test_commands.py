"""The control commands get resolved blocks; "every block" is said, never an empty list.

A real supervisor with its wires and heartbeats in /dev/shm, whose blocks are not
started: the commands here act on STOPPED blocks, so no worker runs. The supervisor's
and control socket's tests drive the same handlers with real workers.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from pipelined.ctl.protocol import BAD_REQUEST, NO_SUCH_BLOCK, CommandError
from pipelined.daemon import commands
from pipelined.daemon.app import Daemon
from pipelined.daemon.graph import parse_graph

BLOCKS = "userblocks.runtime_blocks"
GRAPH = f"""
[blocks.sink]
type = "{BLOCKS}:Tally"
input = "inv"
path = "/nonexistent/tally"

[blocks.count]
type = "{BLOCKS}:Counter"

[blocks.inv]
type = "{BLOCKS}:Invert"
input = "count"
"""


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A daemon of its own instance whose run is open and whose blocks are STOPPED."""
    d = Daemon(parse_graph(GRAPH, "t.toml"), "t" + secrets.token_hex(3), socket_path=None)
    d.supervisor.open()
    try:
        yield d
    finally:
        asyncio.run(d.supervisor.close())


def call(daemon: Daemon, cmd: str, **args: Any) -> Any:
    return asyncio.run(commands.table(daemon)[cmd](args))


def named(result: dict[str, Any]) -> list[str]:
    return [b["name"] for b in result["blocks"]]


def test_select_of_no_name_is_no_block_and_every_is_all_in_graph_order(daemon: Daemon) -> None:
    sup = daemon.supervisor
    assert sup.select([]) == []
    assert [w.name for w in sup.every()] == ["count", "inv", "sink"]
    assert [w.name for w in sup.select(["sink", "count"])] == ["count", "sink"]
    with pytest.raises(KeyError, match="nope"):
        sup.select(["inv", "nope"])


def test_a_request_naming_no_block_means_every_block(daemon: Daemon) -> None:
    for cmd in ("status", "stop"):
        assert named(call(daemon, cmd)) == ["count", "inv", "sink"]
        assert named(call(daemon, cmd, blocks=[])) == ["count", "inv", "sink"]
    assert named(call(daemon, "stop", blocks=["sink"])) == ["sink"]
    assert call(daemon, "stop", blocks=["inv"]) == {"blocks": [{"name": "inv", "state": "STOPPED"}]}
    assert [b["name"] for b in call(daemon, "graph")["blocks"]] == ["count", "inv", "sink"]


def test_restart_naming_no_block_is_refused(daemon: Daemon) -> None:
    for args in ({}, {"blocks": []}):
        with pytest.raises(CommandError) as err:
            call(daemon, "restart", **args)
        assert err.value.code == BAD_REQUEST and "names of the blocks" in err.value.message


def test_unknown_and_malformed_names_are_refused(daemon: Daemon) -> None:
    with pytest.raises(CommandError) as err:
        call(daemon, "stop", blocks=["inv", "nope"])
    assert err.value.code == NO_SUCH_BLOCK
    assert "nope" in err.value.message and "count, inv, sink" in err.value.message
    with pytest.raises(CommandError) as err:
        call(daemon, "restart", blocks="inv")
    assert err.value.code == BAD_REQUEST
