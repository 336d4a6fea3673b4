"""A block's output cannot starve the supervisor, and no reply outgrows the protocol.

A worker's stderr is read on the daemon's one event loop: lines are cut at LINE_BYTES
(and say so), a carriage return ends a line as a newline does (progress bars), and the
tail kept for ``last_exit`` is bounded in lines and bytes. Whatever the blocks print, a
status reply stays under the protocol's line limit.
"""

from __future__ import annotations

import json

from harness.daemon import RunningDaemon
from harness.graphs import BLOCKS, counter, graph

from pipelined.ctl.protocol import MAX_LINE, encode_result
from pipelined.daemon.commands.status import fit
from pipelined.daemon.lines import LINE_BYTES, TAIL_BYTES, TAIL_LINES, Lines, Tail


def test_a_flood_without_newlines_is_cut_and_status_still_answers():
    chatty = f'[blocks.chatty]\ntype = "{BLOCKS}:Chatty"\nrestart = "never"\n'
    d = RunningDaemon(graph(counter(), chatty)).start()
    try:
        exited = d.wait_state("chatty", "EXITED", timeout=120)
        tail = exited["last_exit"]["stderr_tail"].split("\n")
        assert len(tail) <= TAIL_LINES and tail[-2] == "RuntimeError: flooded"
        assert tail[-1].startswith("crashed in setup(): RuntimeError: flooded")
        bar = tail.index("progress 1/3")
        assert tail[bar : bar + 4] == ["progress 1/3", "progress 2/3", "progress 3/3", "last words"]
        assert len(exited["last_exit"]["stderr_tail"].encode()) <= TAIL_BYTES + TAIL_LINES
        assert d.block("count")["state"] == "RUNNING"
        flood = next(line for line in d.log_text().splitlines() if "xxxx" in line)
        assert flood.endswith(f"x [cut: the line is longer than {LINE_BYTES} bytes]")
        assert flood.count("x") == LINE_BYTES
    finally:
        d.close()


def test_lines_end_at_newline_or_carriage_return_and_are_cut_at_the_limit():
    lines = Lines(limit=10)
    assert lines.feed(b"abc") == []
    assert lines.feed(b"def\r\nghi\rjkl\n\n") == ["abcdef", "ghi", "jkl"]
    got = lines.feed(b"0123456789" * 1000) + lines.feed(b"more\nnext")
    assert got == ["0123456789 [cut: the line is longer than 10 bytes]"]
    assert lines.feed(b"") == [] and lines.end() == ["next"]
    # However long a line, what is kept of it stays bounded.
    big = Lines(limit=100)
    for _ in range(1000):
        big.feed(b"y" * 65536)
    assert big.pending() <= 100


def test_the_tail_is_bounded_in_lines_and_bytes():
    tail = Tail(lines=3, size=25)
    for line in ["one", "two", "three", "four"]:
        tail.append(line)
    assert list(tail) == ["two", "three", "four"]
    tail.append("a line of twenty bytes")
    assert list(tail) == ["a line of twenty bytes"]


def test_status_of_many_blocks_with_long_tails_fits_the_line_limit():
    tail = "\n".join(f"line {i} " + "é" * 700 for i in range(TAIL_LINES))  # non-ASCII: \\u escapes
    blocks = [
        {"name": f"b{i}", "state": "BACKOFF", "reason": None,
         "last_exit": {"code": 1, "signal": None, "at": "now", "stderr_tail": tail}}
        for i in range(300)
    ]  # fmt: skip
    status = {"instance": "main", "run": "x", "blocks": blocks, "wires": []}
    assert len(encode_result(1, status)) > MAX_LINE
    fitted = fit(status)
    assert len(encode_result(1, fitted)) <= MAX_LINE
    kept = fitted["blocks"][0]["last_exit"]["stderr_tail"]
    assert kept.startswith("[earlier lines cut to fit the reply]")
    assert kept.endswith(tail[-50:])  # the end of a tail says most: it is what is kept
    assert json.loads(encode_result(1, fitted))["ok"] is True
