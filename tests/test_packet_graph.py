"""Packet wires in a running graph: a block publishes packets, another takes them."""

from __future__ import annotations

import pytest
from harness.daemon import RunningDaemon, wait_for
from harness.graphs import BLOCKS, counter, graph

from pipelined.daemon.graph import GraphError, parse_graph


def packet_graph(tally_path: str) -> str:
    return graph(
        f'[blocks.src]\ntype = "{BLOCKS}:PacketCounter"\nfps = 100\n',
        f'[blocks.sink]\ntype = "{BLOCKS}:PacketTally"\ninput = "src"\npath = "{tally_path}"\n',
    )


def test_packets_flow_from_a_source_to_a_packet_reader(tmp_path):
    tally = tmp_path / "tally"
    with RunningDaemon(packet_graph(str(tally))) as d:
        d.start().wait_all_running()
        line = wait_for(lambda: tally.exists() and tally.read_text().split(), 60, "packets")
        count, first, last, gaps, codec = line
        assert int(count) >= 1 and int(last) >= int(first) and codec == "counter"
        assert int(gaps) == 0
        status = d.status()
        [wire] = status["packet_wires"]
        assert wire["name"] == "src" and wire["readers"] == ["sink"]
        assert wire["packets"] >= int(last) and wire["missed"] == {"sink": 0}
        [frames] = [w for w in status["wires"] if w["name"] == "src"]
        assert frames["readers"] == []  # nobody takes its frames; the wire is there for viewers
        d.call("restart", blocks=["sink"])  # a new reader starts at the newest keyframe
        d.wait_state("sink", "RUNNING")


def test_a_packet_input_must_come_from_a_block_that_publishes_packets():
    text = (
        counter("plain")
        + f'[blocks.sink]\ntype = "{BLOCKS}:PacketTally"\ninput = "plain"\npath = "x"\n'
    )
    with pytest.raises(GraphError) as info:
        parse_graph(text, "g.toml")
    assert info.value.problems == [
        "g.toml: block 'sink': takes encoded video from 'plain', but 'plain'"
        f" ('{BLOCKS}:Counter') publishes no packets: give it an encoded source (an rtsp://"
        " camera, a video file), or take its frames"
    ]


def test_the_graph_knows_who_reads_frames_and_who_reads_packets():
    g = parse_graph(packet_graph("t"), "g.toml")
    assert g.blocks["src"].packet_bytes == 64 * 1024
    assert g.readers("src") == [] and g.packet_readers("src") == ["sink"]
    assert g.blocks["sink"].kinds == ("packets",)
