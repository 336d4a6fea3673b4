"""Events in a running daemon: the store, pipectl events (and -f), the page's list and
snapshots, /metrics, the rate limit a flooding block meets, an event its crashed block
left open, and the graph file's [events], [mqtt] and [webhooks] tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from harness.daemon import TOKEN, RunningDaemon, free_port

from pipelined.daemon.graph import GraphError, parse_graph

GRAPH = """
[events]
rate = 5.0
burst = 5

[blocks.source]
type = "userblocks.runtime_blocks:Counter"
fps = 30
side = 32

[blocks.ticks]
type = "userblocks.event_blocks:Every"
input = "source"
every = 15
snapshot = true

[blocks.flood]
type = "userblocks.event_blocks:Every"
input = "source"
every = 1
per_frame = 50
kind = "flood"

[blocks.holds]
type = "userblocks.event_blocks:Holds"
input = "source"

[blocks.garbage]
type = "userblocks.event_blocks:Garbage"
input = "source"
"""


@pytest.fixture(scope="module")
def daemon():
    port = free_port()
    d = RunningDaemon(GRAPH, http=f"127.0.0.1:{port}")
    d.port = port
    d.start()
    try:
        d.wait_all_running()
        yield d
    finally:
        d.close()


def get(d: RunningDaemon, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{d.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_events_are_stored_with_their_snapshots_and_listed(daemon):
    d = daemon
    events = d.until(
        lambda: len(e := d.call("events", blocks=["ticks"])["events"]) >= 3 and e, 30, "ticks"
    )
    tick = events[0]
    assert tick["kind"] == "tick" and tick["end"] == tick["start"] and not tick["active"]
    assert tick["data"]["frame"] % 15 == 0
    assert tick["snapshot"] == str(d.dir / "state" / "events" / f"{tick['id']}.jpg")
    assert os.path.getsize(tick["snapshot"]) > 0
    assert (d.dir / "state" / "events.db").is_file()
    done = d.pipectl("events", "ticks", "-n", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["START", "(local", "time)"]
    assert len(lines) == 3 and all(" ticks " in line and " tick " in line for line in lines[1:])
    as_json = json.loads(d.pipectl("events", "--json", "--since", "-1h").stdout)
    assert {e["block"] for e in as_json["events"]} >= {"ticks", "flood"}


def test_pipectl_events_follows_changes_as_they_come(daemon):
    d = daemon
    follow = subprocess.Popen(
        [sys.executable, "-m", "pipelined.ctl.main", "--socket", str(d.socket), "events",
         "ticks", "-n", "1", "-f"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=d.env,
        # Ctrl-C as a terminal sends it, even when this suite was started in the
        # background by a shell that ignores SIGINT for its children
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        seen = [follow.stdout.readline() for _ in range(4)]  # a header, the last, then new ones
        new = [line for line in seen[2:] if " tick " in line]
        assert len(new) == 2, seen
        assert all(" start " in line or " end " in line for line in new), seen
    finally:
        follow.send_signal(signal.SIGINT)
        try:
            assert follow.wait(60) == 0, "pipectl events -f did not end at Ctrl-C"
        finally:
            follow.kill()  # never left behind, whatever happened above
            follow.wait()


def test_the_page_lists_events_live_and_serves_their_snapshots(daemon):
    d = daemon
    status, body = get(d, "/api/events?block=ticks&limit=5")
    assert status == 200
    result = json.loads(body)["result"]
    assert result["events"] and result["seq"] >= max(e["seq"] for e in result["events"])
    tick = result["events"][0]
    assert tick["snapshot_url"] == f"http://127.0.0.1:{d.port}/events/{tick['id']}/snapshot.jpg"
    status, jpeg = get(d, f"/events/{tick['id']}/snapshot.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    later = d.until(
        lambda: json.loads(get(d, f"/api/events?after={result['seq']}")[1])["result"]["events"],
        30,
        "a change after the page's last seq",
    )
    assert all(e["seq"] > result["seq"] for e in later)
    assert get(d, "/events/..%2F..%2Fetc%2Fpasswd/snapshot.jpg")[0] == 404
    assert get(d, "/events/1.000-zzzzzz/snapshot.jpg")[0] == 404
    assert get(d, "/api/events?after=x")[0] == 400


def test_a_flooding_block_is_held_to_its_rate_and_counted_and_the_rest_carries_on(daemon):
    d = daemon
    before = d.block("flood")
    time.sleep(2.0)
    after = d.block("flood")
    assert after["events_dropped"]["rate"] > before["events_dropped"]["rate"] + 500
    raised = after["events"] - before["events"]
    # 5 a second, and a burst of 5: never more, however long the 2 s took
    assert raised <= 5 + 5 * (2.0 + 2.0), raised
    assert d.block("source")["state"] == "RUNNING" and d.block("ticks")["fps"] > 0
    _, metrics = get(d, "/metrics")
    text = metrics.decode()
    assert 'pipelined_events_total{block="flood",kind="flood"}' in text
    assert 'pipelined_events_dropped_total{block="flood",reason="rate"}' in text
    assert "pipelined_events_open 1.0" in text  # holds' event


def test_lines_that_are_no_events_are_counted_and_bounded_by_the_rate(daemon):
    d = daemon
    garbage = d.until(
        lambda: (b := d.block("garbage"))["events_dropped"]["malformed"] > 0 and b, 30, "garbage"
    )
    first = garbage["events_dropped"]["malformed"]
    time.sleep(2.0)
    later = d.block("garbage")["events_dropped"]["malformed"]
    # 4 lines a line-token per event, 2 more a second, the burst: the daemon reads no more
    assert later - first <= 4 * 5 + (4 * 5 + 2) * 4, (first, later)
    assert d.block("garbage")["events_paused"] > 0
    assert garbage["state"] == "RUNNING"


def test_an_event_a_crashed_block_left_open_is_ended_for_it(daemon):
    d = daemon
    (held,) = d.call("events", blocks=["holds"])["events"]
    assert held["active"]
    os.kill(d.block("holds")["pid"], signal.SIGKILL)

    def ended():
        events = d.call("events", blocks=["holds"], order="oldest")["events"]
        return events[0] if not events[0]["active"] else None

    event = d.until(ended, 30, "the held event to end")
    assert event["id"] == held["id"] and event["interrupted"]
    d.wait_state("holds", "RUNNING")
    d.until(lambda: len(d.call("events", blocks=["holds"])["events"]) == 2, 30, "a new hold")


# -- the tables of a graph file --------------------------------------------------------------

BLOCKS = """
[blocks.camera]
type = "camera"
encode = "h264"
[blocks.motion]
type = "motion"
input = "camera"
"""


def problems(text: str) -> str:
    with pytest.raises(GraphError) as caught:
        parse_graph(BLOCKS + text, "g.toml")
    return str(caught.value)


def test_the_outlets_tables_refuse_what_cannot_work(tmp_path):
    assert "g.toml: [mqtt]: password does not belong in a graph file" in problems(
        '[mqtt]\nhost = "b"\npassword = "hunter2"\n'
    )
    assert "hunter2" not in problems('[mqtt]\nhost = "b"\npassword = "hunter2"\n')
    for prefix in ("home/+/cams", "cams/#", "/cams", "$SYS/x"):
        said = problems(f'[mqtt]\nhost = "b"\nprefix = "{prefix}"\n')
        assert f"[mqtt]: prefix {prefix!r}" in said
    assert "wildcard" in problems('[mqtt]\nhost = "b"\nprefix = "a/+/b"\n')
    assert "host is required" in problems("[mqtt]\nport = 1883\n")
    missing = tmp_path / "nope"
    assert f"password_file: cannot read {missing}" in problems(
        f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{missing}"\n'
    )
    assert "tls_cert and tls_key go together" in problems(
        f'[mqtt]\nhost = "b"\ntls_cert = "{__file__}"\n'
    )
    assert "unknown key 'hots'" in problems('[mqtt]\nhots = "b"\n')
    assert "[webhooks]: 'ftp://x/…' must start with http" in problems(
        '[webhooks]\nurls = ["ftp://x/secret"]\n'
    )
    assert "[events]: rate must be between" in problems("[events]\nrate = 0\n")
    assert "unknown top-level key 'mqt'" in problems('[mqt]\nhost = "b"\n')


def test_a_clip_recorder_must_name_blocks_and_a_preroll_its_camera_keeps():
    said = problems(
        '[blocks.clips]\ntype = "recorder"\ninput = "camera"\nmode = "clips"\n'
        'triggers = ["motoin"]\npreroll = 9.0\n'
    )
    assert "block 'clips': trigger 'motoin' names no block (did you mean 'motion'?)" in said
    assert "preroll = 9 s, but 'camera' keeps 5 s of packets" in said
    said = problems(
        '[blocks.clips]\ntype = "recorder"\ninputs = ["motion"]\nmode = "clips"\ncodec = "h264"\n'
    )
    assert "codec must be copy or auto" in said


def test_a_graph_with_outlets_is_described_without_its_secrets(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    graph = parse_graph(
        BLOCKS + f'[mqtt]\nhost = "broker"\nusername = "cam"\npassword_file = "{secret}"\n'
        '[webhooks]\nurls = ["https://ha.local:8123/api/webhook/abcdef-secret-id"]\n',
        "g.toml",
    )
    from pipelined.daemon.graph import describe

    text = describe(graph)
    assert "mqtt: broker:1883, prefix pipelined/<instance>" in text
    assert "webhooks: https://ha.local:8123/… (start, update, end)" in text
    assert "abcdef" not in text and "s3cret" not in text
    assert graph.mqtt is not None and graph.mqtt.read_password() == "s3cret"
