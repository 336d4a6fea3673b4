"""Helpers for the web, preview and metrics tests (no tests here).

Named ``test_web_*`` only because those are the test files this part of the project owns.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
from harness.daemon import TOKEN, RunningDaemon, free_port

from pipelined.daemon.supervisor import SPARE_READERS
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import WireReader

DEMO_BLOCKS = ["camera", "red", "edges", "recorder", "preview"]


@contextmanager
def web_daemon(graph_text: str | None, *extra: str) -> Iterator[tuple[RunningDaemon, str]]:
    """A daemon with its page on a free loopback port and every block RUNNING: it and
    the page's URL, until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with RunningDaemon(graph_text, http=f"127.0.0.1:{port}", args=extra) as d:
        d.start().until(lambda: get(url + "/api/status")[0] == 200, 30, "the page to answer")
        d.wait_all_running()
        yield d, url


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def get(
    url: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    timeout: float = 10,
    token: str | None = TOKEN,
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: status, headers, body. Refused: status 0.

    It carries the test daemons' token (``token=None``: none) unless ``headers`` has an
    Authorization or a Cookie of its own.
    """
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    headers = dict(headers or {})
    if token and not {"Authorization", "Cookie"} & set(headers):
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, "/" + path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    except ConnectionError:
        return 0, {}, b""
    finally:
        conn.close()


def with_token(url: str) -> str:
    """``url`` carrying the test token in its query, for clients that take only a URL."""
    return url + ("&" if "?" in url else "?") + f"token={TOKEN}"


def read_mjpeg(url: str, frames: int, timeout: float = 20) -> list[bytes]:
    """The first ``frames`` JPEGs of a multipart/x-mixed-replace stream."""
    out: list[bytes] = []
    status, _, _ = 0, None, None
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path, headers=BEARER)
        resp = conn.getresponse()
        status = resp.status
        assert status == 200, f"{url}: HTTP {status}: {resp.read()[:200]!r}"
        assert resp.getheader("Content-Type", "").startswith("multipart/x-mixed-replace")
        while len(out) < frames:
            length = None
            line = resp.readline()
            while line not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                line = resp.readline()
            if line == b"":
                break
            assert length is not None
            out.append(resp.read(length))
            resp.readline()
    finally:
        conn.close()
    return out


class WireTap:
    """Copies of a wire's frames, read in a thread through its last spare reader slot.

    The daemon hands out spare slots from the first, so a test that opens at most one
    live view at a time can read the wire beside it.
    """

    def __init__(self, d: RunningDaemon, wire: str):
        status = d.status()
        names = RunNames(d.instance, status["run"])
        readers = next(w for w in status["wires"] if w["name"] == wire)["readers"]
        self.reader = WireReader(names, wire, len(readers) + SPARE_READERS - 1)
        self.frames: list[tuple[int, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.reader.read_copy(timeout=0.2)
            if frame is not None:
                self.frames.append((frame.seq, frame.array))

    @contextmanager
    def running(self) -> Iterator[WireTap]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self.reader.close()


def best_match(picture: np.ndarray, frames: list[tuple[int, np.ndarray]]) -> tuple[int, float]:
    """The wire frame closest to ``picture`` (mean absolute difference), and that difference."""
    diffs = [
        (float(np.abs(picture.astype(np.int16) - f.astype(np.int16)).mean()), seq)
        for seq, f in frames
        if f.shape == picture.shape
    ]
    assert diffs, "no wire frame of the picture's shape"
    diff, seq = min(diffs)
    return seq, diff


def assert_matches_the_wire(pictures: list[np.ndarray], tap: WireTap) -> None:
    """Most pictures equal a frame the wire carried (up to JPEG's error), none by chance.

    A picture the tap missed (a busy box can delay its thread past the ring's 4 slots)
    finds only a neighbour, so half of them must match exactly, not all.
    """
    exact = 0
    for picture in pictures:
        seq, diff = best_match(picture, tap.frames)
        if diff < 1.0:
            exact += 1
            # The scene moves: frames a few steps away from the match differ far more.
            others = [(s, f) for s, f in tap.frames if abs(s - seq) >= 3]
            assert best_match(picture, others)[1] > diff + 1.0
    assert exact * 2 >= len(pictures), (
        f"only {exact} of {len(pictures)} pictures equal a wire frame"
        f" (the tap saw {len(tap.frames)} frames, dropped {tap.reader.dropped})"
    )


def assert_opencv_reads_the_wire(d: RunningDaemon, url: str, count: int) -> None:
    """OpenCV reads ``count`` full-size pictures from the MJPEG stream at ``url``, and
    most are frames the camera wire carried (the demo's camera: 640x480)."""
    with WireTap(d, "camera").running() as tap:
        time.sleep(0.5)
        cap = cv2.VideoCapture(with_token(url))
        try:
            assert cap.isOpened(), f"OpenCV could not open {url}"
            pictures = [cap.read()[1] for _ in range(count)]
        finally:
            cap.release()
        time.sleep(0.3)
    assert all(p is not None and p.shape == (480, 640, 3) for p in pictures)
    assert_matches_the_wire(pictures[2:], tap)


def camera_keeps_sending(d: RunningDaemon, frames: int = 10, timeout: float = 30) -> None:
    """The camera publishes ``frames`` more frames within a generous deadline: it was not
    held up. How fast it runs meanwhile is the preview benchmark's (bench/preview.py)."""
    first = d.block("camera")["frames_out"]
    d.until(
        lambda: d.block("camera")["frames_out"] >= first + frames,
        timeout,
        f"the camera to send {frames} more frames",
    )
