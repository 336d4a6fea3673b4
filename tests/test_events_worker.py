"""A block's events in its worker: the rate limit, the queue that never waits, snapshots,
and the line format the daemon reads (workers/events.py)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from harness.daemon import wait_for

from pipelined.workers.events import (
    QUEUE_EVENTS,
    BadLine,
    EventError,
    EventSender,
    RateLimit,
    parse_line,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def read_lines(fd: int, want: int, timeout: float = 10.0) -> list[dict]:
    """Read ``want`` JSON lines (skipping counts) from a pipe."""
    os.set_blocking(fd, False)
    got: list[dict] = []
    buffer = b""

    def more() -> bool:
        nonlocal buffer
        try:
            buffer += os.read(fd, 65536)
        except BlockingIOError:
            pass
        *lines, buffer = buffer.split(b"\n")
        got.extend(m for m in map(json.loads, lines) if m["t"] != "counts")
        return len(got) >= want

    wait_for(more, timeout, f"{want} lines on the pipe")
    return got


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r,):
        try:
            os.close(fd)
        except OSError:
            pass


def test_the_bucket_allows_a_burst_then_the_rate():
    clock = Clock()
    bucket = RateLimit(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() and not bucket.take()
    clock.now += 100  # saved up: never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_over_the_rate_a_start_is_dropped_with_its_update_and_end(pipe):
    r, w = pipe
    clock = Clock()
    sender = EventSender(w, None, rate=1.0, burst=1, clock=clock)
    try:
        first = sender.event("motion", "start", score=0.5, at=1.0)
        assert first is not None
        assert sender.event("person", "start") is None  # no token left
        assert sender.event("person", "update", score=0.9) is None  # goes with its start
        assert sender.event("person", "end") is None
        assert sender.event("motion", "end", score=0.7, at=2.0) == first  # an end always goes
        assert sender.counts.limited == 1
        clock.now += 1
        assert sender.event("person", "start") is not None  # a new one, now that there is room
        lines = read_lines(r, 3)
    finally:
        sender.close()
    assert [(m["kind"], m["phase"]) for m in lines] == [
        ("motion", "start"),
        ("motion", "end"),
        ("person", "start"),
    ]
    assert lines[0]["id"] == lines[1]["id"] == first
    assert lines[1]["score"] == 0.7 and lines[0]["at"] == 1.0


def test_an_update_or_end_needs_an_open_event_and_a_start_an_ended_one(pipe):
    sender = EventSender(pipe[1], None, rate=10, burst=10)
    try:
        with pytest.raises(EventError, match="no 'motion' event is open"):
            sender.event("motion", "end")
        sender.event("motion", "start")
        with pytest.raises(EventError, match="open already"):
            sender.event("motion", "start")
        assert sender.event("motion", "start", key="door")  # another one, by its key
        with pytest.raises(EventError, match="kind 'a b' is not valid"):
            sender.event("a b")
        with pytest.raises(EventError, match="phase 'begin'"):
            sender.event("motion", "begin")
        with pytest.raises(EventError, match="plain JSON"):
            sender.event("x", data={"when": object()})
        with pytest.raises(EventError, match="at most 8192 bytes"):
            sender.event("x", data={"big": "y" * 10000})
        with pytest.raises(EventError, match="finite"):
            sender.event("x", score=float("nan"))
    finally:
        sender.close()


def test_a_daemon_that_does_not_read_never_makes_the_block_wait(pipe):
    """Nobody reads the pipe: it fills, the thread waits, the queue fills, and each call
    still returns at once, dropped and counted."""
    r, w = pipe
    sender = EventSender(w, None, rate=1e6, burst=10**6)
    try:
        started = time.monotonic()
        for i in range(QUEUE_EVENTS * 50):
            sender.event("tick", data={"pad": "x" * 4000, "i": i})
        took = time.monotonic() - started
        assert sender.counts.full > 0  # the queue was full: dropped, counted
        assert took < 30  # (a call never waits on the pipe: this is no speed bound)
        assert sender.counts.limited == 0
    finally:
        os.close(r)  # the daemon is gone: the thread stops waiting
        sender.close()


def test_a_frame_becomes_a_snapshot_jpeg_before_its_event_is_sent(pipe, tmp_path):
    r, w = pipe
    sender = EventSender(w, tmp_path, rate=10, burst=10, quality=90)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[10:20, 10:20] = (0, 0, 255)
    try:
        event_id = sender.event("motion", frame=frame)
        frame[:] = 255  # the block goes on with its buffer: the event has its own copy
        (message,) = read_lines(r, 1)
    finally:
        sender.close()
    assert message["snapshot"] == f"{event_id}.jpg"
    import cv2

    picture = cv2.imread(str(tmp_path / message["snapshot"]))
    assert picture.shape == (48, 64, 3)
    assert picture[15, 15, 2] > 200 and picture[40, 60].max() < 40  # red square, black rest
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_torn_frame_is_left_out_and_the_event_goes_without_it(pipe, tmp_path):
    r, w = pipe
    sender = EventSender(w, tmp_path, rate=10, burst=10)
    try:
        sender.event("motion", frame=np.zeros((8, 8), np.uint8), intact=lambda: False)
        (message,) = read_lines(r, 1)
    finally:
        sender.close()
    assert "snapshot" not in message
    assert sender.counts.snapshots_skipped == 1
    assert not list(tmp_path.iterdir())


def test_lines_are_checked_before_the_daemon_takes_them():
    good = {"t": "event", "id": "1.000-abcdef", "kind": "motion", "phase": "start", "at": 1.5}
    assert parse_line(json.dumps(good))["kind"] == "motion"
    for bad, why in [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({**good, "phase": "begin"}), "phase"),
        (json.dumps({**good, "kind": "a/b"}), "not valid"),
        (json.dumps({**good, "snapshot": "../../etc/passwd"}), "snapshot"),
        (json.dumps({**good, "at": "now"}), "at"),
        (json.dumps({"t": "clip", "events": [1], "path": "x", "start": 1}), "clip events"),
        (json.dumps({"t": "what"}), "unknown message"),
    ]:
        with pytest.raises((BadLine, EventError), match=why):
            parse_line(bad)
