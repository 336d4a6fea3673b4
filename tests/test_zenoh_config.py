"""Wires across machines, as a graph file says them: the ``[zenoh]`` table, ``publish``
and ``remote`` blocks, checked when the graph loads (each refusal names the file, the
block and the reason), the Zenoh configuration built from them, and the header every
sample carries. No network here: tests/test_remote_boxes.py runs two real boxes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zenoh

from pipelined.daemon.graph import Graph, GraphError, describe, load_graph
from pipelined.workers.net.header import _FIXED, Header, HeaderError, parse
from pipelined.workers.net.settings import LinkPlan, key_problem

CAMERA = """
[blocks.cam]
type = "camera"
source = "testsrc"
size = [320, 240]
"""
H264_CAMERA = CAMERA + 'encode = "h264"\n'
LISTEN = '[zenoh]\nlisten = ["tcp/127.0.0.1:7447"]\n'
REMOTE = """
[blocks.door]
type = "remote"
source = "zenoh:site1/door/cam"
size = [320, 240]
"""


def load(tmp_path: Path, text: str) -> Graph:
    path = tmp_path / "graph.toml"
    path.write_text(text)
    return load_graph(path)


def refused(tmp_path: Path, text: str, where: str | None, *words: str) -> list[str]:
    """Expect ``text`` refused with a problem naming the file, the block ``where`` (None:
    the graph as a whole) and every word; returns the problems."""
    with pytest.raises(GraphError) as info:
        load(tmp_path, text)
    problems = info.value.problems
    assert all(p.startswith(f"{tmp_path / 'graph.toml'}: ") for p in problems)
    head = f"block {where!r}: " if where else ""
    assert any(head in p and all(w in p for w in words) for p in problems), (
        f"no problem with {head!r} and {words} in:\n{info.value}"
    )
    return problems


# -- what loads -------------------------------------------------------------------------


def test_a_graph_with_remote_wires_gets_the_link_and_scouting_stays_off(tmp_path: Path) -> None:
    graph = load(
        tmp_path,
        LISTEN
        + H264_CAMERA
        + 'publish = "site1/door/cam"\n'
        + REMOTE
        + '\n[blocks.edges]\ntype = "edge_detector"\ninput = "door"\n'
        + 'publish = { key = "site1/door/edges", encoding = "raw" }\n',
    )
    link = graph.blocks["zenoh"]
    assert link.type == "zenoh" and set(link.inputs) == {"cam", "edges"}
    assert dict(zip(link.inputs, link.input_kinds, strict=True)) == {
        "cam": "packets",  # a camera's H.264 goes as it is
        "edges": "frames",
    }
    assert graph.blocks["door"].fed_by == "zenoh"
    assert graph.blocks["cam"].publish is not None
    assert graph.blocks["cam"].publish.encoding == "h264"
    plan = LinkPlan.from_params(link.params)
    assert [s.key for s in plan.subscriptions] == ["site1/door/cam"]
    config = plan.settings.config()
    assert config["scouting/multicast/enabled"] is False  # boxes never find each other
    assert config["adminspace/enabled"] is False
    assert config["listen/endpoints"] == ["tcp/127.0.0.1:7447"]
    text = describe(graph)
    assert "multicast scouting off" in text and "zenoh:site1/door/cam -> door" in text
    assert "publish: zenoh:site1/door/edges as raw" in text


def test_a_block_without_packets_publishes_jpeg_unless_asked(tmp_path: Path) -> None:
    graph = load(tmp_path, LISTEN + CAMERA + 'publish = "site1/cam"\n')
    assert graph.blocks["cam"].publish is not None
    assert graph.blocks["cam"].publish.encoding == "jpeg"  # never 6 MB raw frames by default


def test_zenoh_without_remote_wires_opens_nothing(tmp_path: Path) -> None:
    graph = load(tmp_path, LISTEN + CAMERA)
    assert "zenoh" not in graph.blocks


def test_scouting_is_on_only_when_asked(tmp_path: Path) -> None:
    graph = load(tmp_path, "[zenoh]\nscouting = true\n" + CAMERA + 'publish = "a/b"\n')
    plan = LinkPlan.from_params(graph.blocks["zenoh"].params)
    assert plan.settings.config()["scouting/multicast/enabled"] is True


def test_no_publication_goes_to_zenoh_as_block_and_block_waits_up_to_the_lease(
    tmp_path: Path,
) -> None:
    """Zenoh's own "block" closes the link when a message waits too long, and may close
    the connection that replaced a cut one: every publication is Zenoh's "drop", and our
    "block" (the default) is a wait bounded by the lease, set on the session."""
    queue = "transport/link/tx/queue/congestion_control/drop/"
    three = '[zenoh]\nlease = 3\nconnect = ["tcp/10.0.0.2:7447"]\n'
    graph = load(tmp_path, three + CAMERA + 'publish = "a/b"\n')
    config = LinkPlan.from_params(graph.blocks["zenoh"].params).config()
    assert config[queue + "wait_before_drop"] == 3_000_000  # microseconds
    assert config[queue + "max_wait_before_drop_fragments"] == 3_000_000
    drop = load(tmp_path, LISTEN + CAMERA + 'publish = { key = "a/b", congestion = "drop" }\n')
    config = LinkPlan.from_params(drop.blocks["zenoh"].params).config()
    assert not any(path.startswith(queue) for path in config)  # Zenoh's own short waits
    session = zenoh.Config()
    for path, value in config.items():
        session.insert_json5(path, json.dumps(value))  # Zenoh takes what we build


# -- what is refused --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["site1/*/cam", "site1/**", "site1/cam$*", "a/$*"])
def test_a_published_key_with_wildcards_is_refused(tmp_path: Path, key: str) -> None:
    refused(tmp_path, LISTEN + CAMERA + f'publish = "{key}"\n', "cam", "wildcard", "one stream")


@pytest.mark.parametrize("source", ["zenoh:site1/*", "zenoh:**", "site1/door/cam", "zenoh:"])
def test_a_remote_source_that_is_not_one_key_is_refused(tmp_path: Path, source: str) -> None:
    text = LISTEN + REMOTE.replace('"zenoh:site1/door/cam"', f'"{source}"')
    refused(tmp_path, text, "door", "source")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("/site1/cam", ("empty chunk",)),
        ("site1//cam", ("empty chunk",)),
        ("site1/cam?x", ("'#' or '?'",)),
        ("site 1/cam", ("whitespace",)),
        ("@/admin", ("admin",)),
        ("", ("is empty",)),
    ],
)
def test_keys_zenoh_cannot_take_are_refused(key: str, words: tuple[str, ...]) -> None:
    problem = key_problem(key)
    assert problem is not None and all(w in problem for w in words), problem


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('connect = ["10.0.0.2:7447"]', ("'10.0.0.2:7447' is not an endpoint", "PROTOCOL/ADDRESS")),
        ('connect = ["carrier-pigeon/10.0.0.2"]', ("unknown protocol 'carrier-pigeon'",)),
        ('listen = "tcp/0.0.0.0:7447"', ("listen must be an array of endpoints",)),
        ('mode = "router"', ("mode must be one of peer, client",)),
        ("scouting = 1", ("scouting must be true or false",)),
        ("lease = 0", ("lease must be a number of seconds",)),
        ('lisen = ["tcp/0.0.0.0:7447"]', ("unknown key 'lisen'",)),
        ('mode = "client"\nlisten = ["tcp/0.0.0.0:7447"]', ("a client does not listen",)),
        ('mode = "client"', ("a client needs a router or peer to connect to",)),
        ('connect = ["tls/10.0.0.2:7447"]', ("needs [zenoh.tls]",)),
        ("access_control = 3", ("access_control must be a table",)),
    ],
)
def test_a_bad_zenoh_table_is_refused(tmp_path: Path, setting: str, words: tuple) -> None:
    problems = refused(
        tmp_path, f"[zenoh]\n{setting}\n" + CAMERA + 'publish = "a/b"\n', None, *words
    )
    assert all("[zenoh]" in p for p in problems if any(w in p for w in words))


def test_an_access_control_zenoh_does_not_take_is_refused_by_zenoh(tmp_path: Path) -> None:
    text = LISTEN + '[zenoh.access_control]\nenabled = "very"\n' + CAMERA + 'publish = "a/b"\n'
    refused(tmp_path, text, None, "Zenoh does not take access_control")


def test_remote_wires_without_a_zenoh_table_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, CAMERA + 'publish = "a/b"\n', None, "no [zenoh] table", "listen")
    refused(tmp_path, "[zenoh]\n" + REMOTE, None, "reaches no other box")


def test_h264_from_a_block_without_packets_is_refused(tmp_path: Path) -> None:
    text = LISTEN + CAMERA + 'publish = { key = "a/b", encoding = "h264" }\n'
    refused(tmp_path, text, "cam", 'encoding "h264"', 'encode = "h264"')


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('{ key = "a/b", encoding = "png" }', ("encoding must be one of h264, jpeg, raw",)),
        ('{ key = "a/b", congestion = "wait" }', ("congestion must be one of block, drop",)),
        ('{ key = "a/b", quality = 101 }', ("quality must be an integer from 1 to 100",)),
        ('{ key = "a/b", colour = "red" }', ("unknown key 'colour'",)),
        ("3", ("publish must be a key",)),
    ],
)
def test_a_bad_publish_table_is_refused(tmp_path: Path, setting: str, words: tuple) -> None:
    refused(tmp_path, LISTEN + CAMERA + f"publish = {setting}\n", "cam", *words)


def test_two_blocks_on_one_key_and_a_block_named_zenoh_are_refused(tmp_path: Path) -> None:
    twice = CAMERA + 'publish = "a/b"\n' + CAMERA.replace("cam]", "cam2]") + 'publish = "a/b"\n'
    refused(tmp_path, LISTEN + twice, "cam2", "publishes 'a/b', as block 'cam' does")
    named = REMOTE.replace("[blocks.door]", "[blocks.zenoh]")
    refused(tmp_path, LISTEN + named, "zenoh", "the daemon's Zenoh link", "rename")


def test_publications_of_one_box_with_different_congestion_are_refused(tmp_path: Path) -> None:
    both = (
        CAMERA
        + 'publish = "a/b"\n'
        + CAMERA.replace("cam]", "cam2]")
        + 'publish = { key = "a/c", congestion = "drop" }\n'
    )
    refused(tmp_path, LISTEN + both, "cam2", "congestion 'drop'", "block 'cam' with 'block'")


def test_a_sink_has_nothing_to_publish(tmp_path: Path) -> None:
    sink = '\n[blocks.rec]\ntype = "recorder"\ninput = "cam"\npublish = "a/b"\n'
    refused(tmp_path, LISTEN + CAMERA + sink, "rec", "no output to publish")


def test_tls_files_and_plain_endpoints_beside_tls_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    text = (
        '[zenoh]\nlisten = ["tls/0.0.0.0:7447", "tcp/0.0.0.0:7448"]\n'
        f'[zenoh.tls]\nroot_ca = "{missing}"\n'
    )
    problems = refused(tmp_path, text + REMOTE, None, "root_ca", "no such file")
    assert any("'tcp/0.0.0.0:7448' is not a tls/ endpoint" in p for p in problems)
    assert any("a box that listens needs its certificate and private_key" in p for p in problems)
    if os.geteuid() != 0:  # root reads any file
        secret = tmp_path / "ca.pem"
        secret.write_text("x")
        secret.chmod(0)
        text = f'[zenoh]\nconnect = ["tls/10.0.0.2:7447"]\n[zenoh.tls]\nroot_ca = "{secret}"\n'
        refused(tmp_path, text + REMOTE, None, "permission denied")
    text = '[zenoh]\nconnect = ["tls/10.0.0.2:7447"]\n[zenoh.tls]\ncertificate = "x.pem"\n'
    refused(tmp_path, text + REMOTE, None, "root_ca is required")


# -- the header every sample carries ----------------------------------------------------


def test_a_header_goes_and_comes_back_whole() -> None:
    header = Header(
        kind="raw",
        stream=7,
        seq=3,
        time_ns=123,
        shape=(240, 320, 3),
        dtype=np.dtype(np.uint16).str,
        keyframe=False,
        sender=bytes(range(16)),
        params=b'{"codec": "h264"}',
    )
    assert parse(header.pack()) == header
    assert header.nbytes == 240 * 320 * 3 * 2


def _objects() -> bytes:
    raw = bytearray(Header(kind="raw", stream=1, seq=1, time_ns=0, shape=(4,)).pack())
    raw[_FIXED.size - 4 - 16 - 8 : _FIXED.size - 4 - 16] = b"|O".ljust(8, b"\0")
    return bytes(raw)


def _patched(offset: int, value: int) -> bytes:
    raw = bytearray(Header(kind="raw", stream=1, seq=1, time_ns=0, shape=(4,)).pack())
    raw[offset] = value
    return bytes(raw)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (None, "carries no pipelined header"),
        (b"PLZ1", "not a pipelined header"),
        (json.dumps({"not": "ours"}).encode().ljust(200), "not a pipelined header"),
        (_patched(4, 2), "this pipelined reads version 1"),
        (_patched(5, 9), "none of h264, jpeg, raw"),
        (_patched(7, 5), "at most 4"),
        (_objects(), "cannot travel on a wire"),
        (Header(kind="raw", stream=1, seq=1, time_ns=0).pack() + b"x", "does not add up"),
    ],
)
def test_a_header_that_is_not_ours_is_refused_with_a_reason(raw: bytes | None, words: str) -> None:
    with pytest.raises(HeaderError, match=words):
        parse(raw)


def test_zenoh_is_installed_with_its_wheel() -> None:
    """The link's one dependency, importable as the graph loader needs it."""
    assert zenoh.Config() is not None
