"""Wires across machines with real parts: two daemons in two network namespaces joined by
a veth pair (tests/netns.py), Zenoh between them, as two boxes on a network would be.

Box ``a`` makes numbered pictures (userblocks.remote_blocks:Bars) and publishes them as
H.264, raw and JPEG; box ``b`` reads each with a ``remote`` block, finds edges in one and
records it. The tests read b's frames through a spare reader slot and check that each is
the picture a made with that number: exactly for raw frames, closely for JPEG and H.264.
Then the link is cut and restored (nothing restarts), a rogue peer sends what must be
refused (nothing is disturbed), and with TLS a peer without the right certificate gets
nothing. Root only (network namespaces); skipped with the reason otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from harness.daemon import TOKEN, RunningDaemon, wait_for, worker_pids
from prometheus_client.parser import text_string_to_metric_families
from userblocks.remote_blocks import expected, number_of, psnr

from pipelined.daemon.supervisor import SPARE_READERS
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import WireReader

pytestmark = pytest.mark.skipif(
    (why := netns.unavailable()) is not None, reason=why or "network namespaces available"
)
TESTS = Path(__file__).parent
B_PAGE = "127.0.0.1:8180"
"""Box b's page, in its own namespace (where nothing else listens)."""
LEASE = 2.0
"""Zenoh's lease in these graphs: a cut link is noticed within it."""
WAIT_BEFORE_CLOSE = 5.0
"""Zenoh's ``wait_before_close`` (its default): how long a message of congestion control
``block`` waits for a full queue before Zenoh closes the link (workers/net/settings.py,
``queue_waits``)."""


def box_a(link: netns.Link, zenoh: str | None = None) -> str:
    return f"""
[zenoh]
lease = {LEASE}
{zenoh or f'connect = ["{link.endpoint("b")}"]'}

[blocks.bars]
type = "userblocks.remote_blocks:Bars"
size = [320, 240]
fps = 15
encode = {{ keyframe_interval = 1.0 }}
publish = "t/bars"

[blocks.raw]
type = "userblocks.remote_blocks:Copy"
input = "bars"
publish = {{ key = "t/raw", encoding = "raw" }}

[blocks.jpeg]
type = "userblocks.remote_blocks:Copy"
input = "bars"
publish = {{ key = "t/jpeg", encoding = "jpeg", quality = 90 }}
"""


def box_b(link: netns.Link, zenoh: str | None = None) -> str:
    return f"""
[zenoh]
lease = {LEASE}
{zenoh or f'listen = ["{link.endpoint("b")}"]'}

[blocks.door]
type = "remote"
source = "zenoh:t/bars"
size = [320, 240]

[blocks.rawdoor]
type = "remote"
source = "zenoh:t/raw"
encoding = "raw"
size = [320, 240]

[blocks.jpgdoor]
type = "remote"
source = "zenoh:t/jpeg"
encoding = "jpeg"
size = [320, 240]

[blocks.edges]
type = "edge_detector"
input = "door"

[blocks.rec]
type = "recorder"
input = "door"
directory = "rec"
segment_seconds = 2
"""


def start(
    link: netns.Link, side: str, graph: str, prefix: str, http: str | None = None
) -> RunningDaemon:
    daemon = RunningDaemon(graph, prefix=prefix, http=http)
    return daemon.start(wrapper=link.wrap(side))


def scrape(link: netns.Link, side: str, url: str) -> dict[tuple[str, tuple], float]:
    """A box's /metrics, fetched inside its namespace (where its page listens), parsed by
    Prometheus' own parser: every sample by (name, sorted labels)."""
    fetch = (
        "import sys, urllib.request as u;"
        f"r = u.Request({url!r}, headers={{'Authorization': 'Bearer {TOKEN}'}});"
        "sys.stdout.write(u.urlopen(r, timeout=10).read().decode())"
    )
    text = subprocess.run(
        [*link.wrap(side), sys.executable, "-c", fetch],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def remote(daemon: RunningDaemon, block: str) -> dict[str, Any]:
    """The remote wire of ``block`` as the daemon's status says it."""
    wires = daemon.status()["remote_wires"]
    return next(w for w in wires if w["block"] == block)


def until(b: RunningDaemon, a: RunningDaemon, check: Any, timeout: float, what: str) -> Any:
    """``b.until``, with the end of box a's log too when it times out: a failure on one box
    is as often the other's doing."""
    try:
        return b.until(check, timeout, what)
    except AssertionError as exc:
        wires = {"a": a.status()["remote_wires"], "b": b.status()["remote_wires"]}
        raise AssertionError(
            f"{exc}\n--- remote wires: {wires}\n--- the end of box a's log ---\n"
            f"{a.log_text()[-4000:]}"
        ) from None


def restarts(daemon: RunningDaemon) -> dict[str, int]:
    return {b["name"]: b["restarts"] for b in daemon.status()["blocks"]}


def frames_of(daemon: RunningDaemon, block: str, readers: int, count: int) -> list[Any]:
    """``count`` frames of ``block``'s wire, read through its last spare reader slot."""
    names = RunNames(daemon.instance, daemon.status()["run"])
    reader = WireReader(names, block, readers + SPARE_READERS - 1)
    try:
        got = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            frame = reader.read_copy(timeout=1.0)
            if frame is not None:
                got.append(frame)
        assert len(got) == count, f"{len(got)} frames of {block} in 60 s"
        return got
    finally:
        reader.close()


@pytest.fixture(scope="module")
def boxes() -> Iterator[tuple[netns.Link, RunningDaemon, RunningDaemon]]:
    with netns.Link() as link:
        b = start(link, "b", box_b(link), "rb", http=B_PAGE)
        a = start(link, "a", box_a(link), "ra")
        try:
            a.wait_all_running()
            b.wait_all_running()
            for block in ("door", "rawdoor", "jpgdoor"):
                b.until(lambda blk=block: remote(b, blk)["state"] == "receiving", 60, block)
            yield link, a, b
        finally:
            a.close()
            b.close()


def test_frames_cross_with_their_content_and_the_recorder_copies_them(boxes) -> None:
    link, a, b = boxes
    for frame in frames_of(b, "rawdoor", 0, 5):  # raw: exactly what box a made
        assert frame.array.shape == (240, 320, 3)
        assert (frame.array == expected(number_of(frame.array), (240, 320, 3))).all()
    for block, readers, floor in (("jpgdoor", 0, 30.0), ("door", 1, 28.0)):
        numbers = []
        for frame in frames_of(b, block, readers, 8):
            n = number_of(frame.array)
            numbers.append(n)
            assert frame.array.shape == (240, 320, 3), block
            assert psnr(frame.array, expected(n, (240, 320, 3))) > floor, (block, n)
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    # each frame carries the time box a took it: here, a moment ago on the same clock
    frame = frames_of(b, "rawdoor", 0, 1)[0]
    assert 0 <= time.monotonic_ns() - frame.timestamp_ns < 5e9
    edges = b.until(lambda: b.block("edges")["frames_out"] > 10 and b.block("edges"), 30, "edges")
    assert edges["state"] == "RUNNING"
    b.until(lambda: list((b.dir / "state" / "rec").glob("rec-*.mp4")), 30, "a recording of door")
    assert "h264" in (b.block("rec")["detail"] or "")
    out = {w["block"]: w for w in a.status()["remote_wires"]}
    assert set(out) == {"bars", "raw", "jpeg"}
    assert all(w["direction"] == "out" and w["state"] == "sending" for w in out.values())
    # each connection is logged once, by the box that accepts it
    assert "New transport link accepted" in b.log_text()
    assert "New transport link opened" not in a.log_text()
    assert link.b_ip in out["bars"]["peer"]
    wire = remote(b, "door")
    # receiving (how fast is bench/remote.py's: under emulation it was 1.9 fps)
    assert wire["encoding"] == "h264" and wire["fps"] > 0 and wire["bytes_per_s"] > 0
    assert link.a_ip in wire["peer"]
    text = b.pipectl("status", timeout=30).stdout
    assert "zenoh:t/bars -> door" in text and "receiving" in text
    samples = scrape(link, "b", f"http://{B_PAGE}/metrics")
    labels = {"block": "door", "direction": "in", "key": "t/bars"}
    up = [
        (dict(k), v)
        for (name, k), v in samples.items()
        if name == "pipelined_remote_wire_up" and dict(k)["block"] == "door"
    ]
    assert len(up) == 1 and up[0][1] == 1.0 and up[0][0]["state"] == "receiving", up
    assert link.a_ip in up[0][0]["peer"]
    frames = samples[("pipelined_remote_wire_frames_total", tuple(sorted(labels.items())))]
    assert frames > 10


def test_a_slow_link_skips_whole_frames_and_stalls_neither_box(boxes) -> None:
    """A link slower than what box a publishes (raw frames of 230 KB, 15 a second, over 2
    Mbit/s): a's blocks carry on as before, its link skips whole frames (and whole groups
    of pictures), and what reaches b is whole: exactly the frames a made."""
    link, a, b = boxes
    before_a, before_b = restarts(a), restarts(b)

    def sent() -> dict[str, Any]:
        return {w["block"]: w for w in a.status()["remote_wires"]}

    missed = sent()["raw"]["missed"]
    made, taken = a.block("raw")["frames_out"], sent()["raw"]["frames"]
    link.throttle("2mbit")
    try:
        until(a, b, lambda: sent()["raw"]["missed"] > missed + 30, 60, "a to skip raw frames")
        for frame in frames_of(b, "rawdoor", 0, 3):
            assert (frame.array == expected(number_of(frame.array), (240, 320, 3))).all()
        for frame in frames_of(b, "door", 1, 3):
            n = number_of(frame.array)
            assert psnr(frame.array, expected(n, (240, 320, 3))) > 28.0, n
        # box a's blocks never waited for the link: they went on making frames faster
        # than it took them
        assert a.block("raw")["frames_out"] - made > sent()["raw"]["frames"] - taken
        assert all(blk["state"] == "RUNNING" for blk in a.status()["blocks"])
    finally:
        link.unthrottle()
    for block in ("door", "rawdoor", "jpgdoor"):
        until(b, a, lambda blk=block: remote(b, blk)["state"] == "receiving", 60, f"{block} again")
    assert restarts(a) == before_a and restarts(b) == before_b


def test_a_cut_link_resumes_by_itself_and_nothing_restarts(boxes) -> None:
    """The link is cut with raw frames in flight and stays down past Zenoh's
    ``wait_before_close``. Frames resume, nothing restarts, and no publication made Zenoh
    close the connection: with Zenoh's congestion control ``block`` a frame waiting that
    long did, every time, and that close (by peer, not by connection) tore down the new
    connection whenever it came up first, again and again on a loaded machine."""
    link, a, b = boxes
    before_a, before_b = restarts(a), restarts(b)
    log_from = len(a.log_text())
    cut = time.monotonic()
    link.cut()
    try:
        b.until(lambda: remote(b, "door")["state"] != "receiving", 30, "door to notice the cut")
        # past the lease (the transport is gone on both sides), and past the longest a
        # "block" message of Zenoh's waits before Zenoh closes the link for it
        time.sleep(max(LEASE, WAIT_BEFORE_CLOSE + 1.0 - (time.monotonic() - cut)))
    finally:
        link.restore()
    frames = remote(b, "rawdoor")["frames"]
    for block in ("door", "rawdoor", "jpgdoor"):
        until(b, a, lambda blk=block: remote(b, blk)["state"] == "receiving", 60, f"{block} again")
    until(b, a, lambda: remote(b, "rawdoor")["frames"] > frames + 10, 30, "frames after the cut")
    frame = frames_of(b, "door", 1, 1)[0]
    assert psnr(frame.array, expected(number_of(frame.array), (240, 320, 3))) > 28.0
    assert restarts(a) == before_a and restarts(b) == before_b
    assert "Unable to push non droppable" not in a.log_text()[log_from:]


def test_what_a_rogue_peer_sends_is_refused_and_disturbs_nothing(boxes) -> None:
    link, a, b = boxes
    before_a, before_b = restarts(a), restarts(b)
    frames = remote(b, "rawdoor")["frames"]
    rogue = subprocess.run(
        [
            *link.wrap("a"),
            sys.executable,
            str(TESTS / "zenoh_rogue.py"),
            link.endpoint("b"),
            "3",
            "t/bars",
            "t/raw",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rogue.returncode == 0, rogue.stderr
    assert "sent" in rogue.stdout
    b.until(lambda: remote(b, "rawdoor")["refused"] > 10, 30, "refusals on t/raw")
    assert remote(b, "door")["refused"] > 3
    log = b.log_text()
    for reason in (
        "carries no pipelined header",
        "not a pipelined header",
        "it is jpeg, and this block takes h264",
        "holds 1,000 bytes",
        "is larger than block 'rawdoor'",
        "cannot travel on a wire",
        "a second publisher",
        "this pipelined reads version 1",
        "published on 't/*'",
        "Read error on TCP link",  # Zenoh's own words on the junk sent to the port:
        "Decode error on link",  # cut short, and no Zenoh message
    ):
        assert reason in log, reason
    # nothing refused reached a wire, and the boxes carried on
    b.until(lambda: remote(b, "rawdoor")["frames"] > frames + 20, 30, "frames meanwhile")
    frame = frames_of(b, "rawdoor", 0, 1)[0]
    assert (frame.array == expected(number_of(frame.array), (240, 320, 3))).all()
    assert restarts(a) == before_a and restarts(b) == before_b
    assert all(blk["state"] == "RUNNING" for blk in [*a.status()["blocks"], *b.status()["blocks"]])


# -- TLS, and a SIGKILL of either daemon --------------------------------------------------


def make_certificates(folder: Path, server_ip: str) -> dict[str, Path]:
    """A CA, a certificate for each box signed by it, and a stranger's CA and certificate
    (made the same way, signed by nobody box a trusts)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
        )  # fmt: skip
    for name, ca, san in (
        ("a", "ca", f"IP:{server_ip}"),
        ("b", "ca", "DNS:b"),
        ("c", "other-ca", "DNS:c"),
    ):
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        )  # fmt: skip
    return {p.stem: p for p in folder.glob("*.pem")} | {p.name: p for p in folder.glob("*.key")}


def tls_table(endpoints: str, files: dict[str, Path], me: str, ca: str) -> str:
    return f"""{endpoints}
[zenoh.tls]
root_ca = "{files[ca]}"
certificate = "{files[me]}"
private_key = "{files[me + ".key"]}"
mutual = true
"""


def test_tls_keeps_a_peer_without_the_right_certificate_out_and_a_sigkill_leaks_nothing(
    tmp_path: Path,
) -> None:
    with netns.Link() as link:
        files = make_certificates(tmp_path, link.a_ip)
        a_zenoh = tls_table(f'listen = ["{link.endpoint("a", proto="tls")}"]', files, "a", "ca")
        connect = f'connect = ["{link.endpoint("a", proto="tls")}"]'
        a = start(link, "a", box_a(link, a_zenoh), "ta")
        b = start(link, "b", box_b(link, tls_table(connect, files, "b", "ca")), "tb")
        c = start(link, "b", box_b(link, tls_table(connect, files, "c", "other-ca")), "tc")
        try:
            b.until(lambda: remote(b, "rawdoor")["frames"] > 30, 90, "b's frames over TLS")
            frame = frames_of(b, "rawdoor", 0, 1)[0]
            assert (frame.array == expected(number_of(frame.array), (240, 320, 3))).all()
            c.wait_all_running()
            time.sleep(2.0)
            for block in ("door", "rawdoor", "jpgdoor"):
                wire = remote(c, block)
                assert wire["frames"] == 0 and wire["state"] == "no peer", wire
            assert c.block("zenoh")["reason"].startswith("no peer connected yet")
            assert "tls" in a.log_text().lower()  # a says why it turned c away

            # SIGKILL box a: its workers (the link too) remove its run; b carries on
            a_pids = worker_pids(a.instance)
            a.kill()
            wait_for(lambda: not a.runs(), 15, "a's run to go from /dev/shm")
            wait_for(lambda: not worker_pids(a.instance), 15, "a's workers to exit")
            assert not any(_alive(p) for p in a_pids)
            b.until(lambda: remote(b, "rawdoor")["state"] != "receiving", 30, "b to notice")
            assert all(blk["restarts"] == 0 for blk in b.status()["blocks"])
            # and SIGKILL box b, its link mid-session: the same
            b.kill()
            wait_for(lambda: not b.runs(), 15, "b's run to go from /dev/shm")
            wait_for(lambda: not worker_pids(b.instance), 15, "b's workers to exit")
        finally:
            for daemon in (a, b, c):
                daemon.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
