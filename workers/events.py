"""Events: a block says "something happened", and the daemon hears it without waiting on it.

A block calls ``self.context.event("motion", "start", score=0.4, frame=picture)``. What
happens then, in the worker:

1. ``RateLimit``: a token bucket per block (``[events] rate`` a second, ``burst`` at
   once). A start, update or moment over it is dropped and counted; the end of an event
   whose start went through always goes, and the update or end of one that was dropped
   is dropped with it, so the daemon never sees half an event.
2. The call copies the frame (if any) and puts the event on a bounded queue: that is
   all the block's thread does. A full queue drops the event, counted; a frame over the
   queue's byte budget is left out (the event goes without a snapshot), counted.
3. The sender thread encodes the frame as a JPEG snapshot beside the event store
   (``<state>/events/<id>.jpg``, written whole and renamed), then writes the event as
   one JSON line to a pipe the daemon reads. When the daemon reads slowly (a block over
   its rate: the daemon stops reading its pipe for a while), the thread waits, the
   queue fills, and the block's calls are dropped and counted: never a wait in the
   block.

One line per message, at most ``MAX_LINE`` bytes; the daemon parses them with
``parse_line``. Messages (``"t"``): ``event`` (a start, update, end or moment),
``clip`` (a recorder says which file holds the clip of which events), ``counts`` (the
worker's drop counters, cumulative). The other way, a recorder in clip mode gets the
events it is triggered by as lines on a pipe of its own (``EventInbox``).

This module is plain Python plus numpy; OpenCV is imported by the sender thread only
when a snapshot is made.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import secrets
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Phase = Literal["start", "update", "end", "moment"]
PHASES: tuple[str, ...] = ("start", "update", "end", "moment")
KIND_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
KIND_RULE = "use 1-64 of A-Z, a-z, 0-9, '_' and '-' (it becomes part of MQTT topics)"
MAX_DATA = 8192
"""Bytes of JSON an event's ``data`` may take: a few boxes and labels, not a picture."""
MAX_LINE = 16384
"""The longest line on the pipe; the daemon cuts (and refuses) anything longer."""
QUEUE_EVENTS = 512
"""Events waiting for the sender thread: half a second at the highest ``[events] rate``
(1000), so a box busy enough to leave the thread unscheduled for a moment loses none
(bench/events.py lost some at 300 a second with 64 under a load of 10); at most
4 MiB of ``data``."""
QUEUE_FRAME_BYTES = 64 * 1024 * 1024
"""Frames waiting for their snapshot, in bytes: a 1080p burst of ten, then none."""
FLUSH_SECONDS = 1.0
"""How long a stopping worker waits for its queued events to reach the pipe."""
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class EventError(ValueError):
    """An event a block cannot raise as asked (a bad kind, phase, or data)."""


def new_event_id(at: float) -> str:
    """``<unix seconds>.<ms>-<6 of a-z0-9>``: sorts by time, unique across restarts."""
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"{at:.3f}-{tail}"


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not KIND_RE.match(kind):
        raise EventError(f"event kind {kind!r} is not valid: {KIND_RULE}")
    return kind


class RateLimit:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up.

    The clock is given, so a test drives it; ``take`` answers and spends one token.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._when = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate)
        self._when = now

    def take(self) -> bool:
        """Spend a token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until a token will be there (0: there is one now)."""
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class Counts:
    """What a worker's events came to; sent to the daemon, which shows them in status."""

    sent: int = 0
    limited: int = 0  # over the block's rate
    full: int = 0  # the queue was full: the daemon reads slower than the block raises
    snapshots_skipped: int = 0  # over the queue's frame budget, or the frame was torn

    def as_message(self) -> dict[str, Any]:
        return {"t": "counts", **self.__dict__}


@dataclass
class _Pending:
    message: dict[str, Any]
    frame: np.ndarray | None


class EventSender:
    """The worker's side: the rate limit, the queue, and the thread that writes the pipe.

    ``fd`` is the pipe's write end (the daemon holds the read end); ``snapshots`` is the
    folder for snapshot JPEGs (None: no snapshots). ``clock`` drives the rate limit.
    """

    def __init__(
        self,
        fd: int,
        snapshots: Path | None,
        rate: float,
        burst: int,
        quality: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fd = fd
        self.snapshots = snapshots
        self.quality = quality
        self.limit = RateLimit(rate, burst, clock)
        self.counts = Counts()
        self._open: dict[tuple[str, str], str] = {}  # (kind, key) -> id of an open event
        self._refused: set[tuple[str, str]] = set()  # open events whose start was dropped
        self._queue: queue.Queue[_Pending | None] = queue.Queue(QUEUE_EVENTS)
        self._frame_bytes = 0
        self._lock = threading.Lock()  # the frame budget, shared with the thread
        self._reported = Counts()
        self._stop = threading.Event()
        os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    # -- the block's thread ---------------------------------------------------------------

    def event(
        self,
        kind: str,
        phase: str = "moment",
        *,
        key: str = "",
        score: float | None = None,
        data: Mapping[str, Any] | None = None,
        frame: np.ndarray | None = None,
        at: float | None = None,
        intact: Callable[[], bool] | None = None,
    ) -> str | None:
        """Raise an event; its id, or None when the rate limit dropped it. Never waits.

        ``start`` opens an event of ``kind`` (and ``key``, for several at once),
        ``update`` and ``end`` refer to the open one, ``moment`` is both at once.
        ``intact`` says whether ``frame`` (which may be a view of the block's input) was
        whole when it was copied.
        """
        check_kind(kind)
        if phase not in PHASES:
            raise EventError(f"event phase {phase!r} is not one of {', '.join(PHASES)}")
        message = _body(kind, phase, score, data, at)
        slot = (kind, key)
        if phase in ("update", "end"):
            if slot in self._refused:  # its start was dropped (and counted): so is the rest
                if phase == "end":
                    self._refused.discard(slot)
                return None
            event_id = self._open.get(slot)
            if event_id is None:
                raise EventError(f"no {kind!r} event{_keyed(key)} is open: start one first")
            if phase == "update" and not self.limit.take():
                self.counts.limited += 1
                return None
            if phase == "end":
                del self._open[slot]
        else:
            if phase == "start" and slot in self._open:
                raise EventError(f"a {kind!r} event{_keyed(key)} is open already: end it first")
            if not self.limit.take():
                self.counts.limited += 1
                if phase == "start":
                    self._refused.add(slot)
                return None
            event_id = new_event_id(message["at"])
            if phase == "start":
                self._open[slot] = event_id
        message["id"] = event_id
        self._put(message, self._copy(frame, intact))
        return event_id

    def clip(self, events: list[str], path: str, start: float, end: float | None) -> None:
        """A recorder's word: ``path`` holds the clip of ``events`` from ``start`` (to
        ``end``, once it is closed). Not rate-limited: it follows events that were not."""
        message = {"t": "clip", "events": list(events), "path": path, "start": start, "end": end}
        self._put(message, None)

    def _copy(
        self, frame: np.ndarray | None, intact: Callable[[], bool] | None
    ) -> np.ndarray | None:
        if frame is None or self.snapshots is None:
            return None
        with self._lock:
            if self._frame_bytes + frame.nbytes > QUEUE_FRAME_BYTES:
                self.counts.snapshots_skipped += 1
                return None
            self._frame_bytes += frame.nbytes
        copy = np.array(frame, copy=True)
        if intact is not None and not intact():  # overwritten while we copied it
            self._release(copy)
            self.counts.snapshots_skipped += 1
            return None
        return copy

    def _put(self, message: dict[str, Any], frame: np.ndarray | None) -> None:
        try:
            self._queue.put_nowait(_Pending(message, frame))
        except queue.Full:
            self.counts.full += 1
            if frame is not None:
                self._release(frame)

    def _release(self, frame: np.ndarray) -> None:
        with self._lock:
            self._frame_bytes -= frame.nbytes

    # -- the sender thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = _NOTHING
            if item is None:
                return
            if item is not _NOTHING:
                self._send(item)
            if self.counts != self._reported and self._write_line(self.counts.as_message()):
                self._reported = Counts(**self.counts.__dict__)

    def _send(self, item: _Pending) -> None:
        message = item.message
        if item.frame is not None:
            frame, item.frame = item.frame, None
            try:
                message["snapshot"] = self._snapshot(message["id"], frame)
            finally:
                self._release(frame)
        if self._write_line(message) and message["t"] == "event":
            self.counts.sent += 1

    def _snapshot(self, event_id: str, frame: np.ndarray) -> str | None:
        """The frame as ``<id>.jpg`` in the snapshot folder; its name, or None."""
        import cv2

        assert self.snapshots is not None  # no frame is queued without a folder
        ok, jpeg = cv2.imencode(".jpg", _picture(frame), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            self.counts.snapshots_skipped += 1
            return None
        name = f"{event_id}.jpg"
        temporary = self.snapshots / f".{name}.tmp"
        try:
            temporary.write_bytes(jpeg.tobytes())
            os.replace(temporary, self.snapshots / name)
        except OSError:
            temporary.unlink(missing_ok=True)
            self.counts.snapshots_skipped += 1
            return None
        return name

    def _write_line(self, message: dict[str, Any]) -> bool:
        """Write one line whole, waiting (here, never in the block) while the pipe is full.

        False if the daemon is gone or we are stopping and it did not go in time.
        """
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        deadline: float | None = None
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while data:
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + FLUSH_SECONDS
                if time.monotonic() >= deadline:
                    return False
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                poller.poll(100)
                continue
            except OSError:  # the daemon closed its end: it is gone, or we were replaced
                return False
            data = data[written:]
        return True

    def close(self) -> None:
        """Send what is queued (for at most FLUSH_SECONDS), then close the pipe."""
        self._stop.set()
        try:
            self._queue.put(None, timeout=FLUSH_SECONDS)
        except queue.Full:
            pass
        self._thread.join(FLUSH_SECONDS + 0.5)
        if not self._thread.is_alive():
            os.close(self.fd)


_NOTHING = _Pending({}, None)


def _body(
    kind: str, phase: str, score: float | None, data: Mapping[str, Any] | None, at: float | None
) -> dict[str, Any]:
    if score is not None and not (isinstance(score, int | float) and math.isfinite(score)):
        raise EventError(f"an event's score must be a finite number, not {score!r}")
    encoded = None
    if data is not None:
        try:
            encoded = json.loads(json.dumps(dict(data), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise EventError(
                f"an event's data must be plain JSON (numbers, text, lists): {exc}"
            ) from None
        if len(json.dumps(encoded)) > MAX_DATA:
            raise EventError(f"an event's data must take at most {MAX_DATA} bytes as JSON")
    return {
        "t": "event",
        "kind": kind,
        "phase": phase,
        "at": round(time.time() if at is None else at, 6),
        "score": None if score is None else float(score),
        "data": encoded,
    }


def _keyed(key: str) -> str:
    return f" with key {key!r}" if key else ""


def _picture(frame: np.ndarray) -> np.ndarray:
    """What cv2.imencode takes: uint8 grey or BGR."""
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)


# -- the daemon's side of the line format ---------------------------------------------------


class BadLine(ValueError):
    """A line on an event pipe that is not a message this version knows."""


def parse_line(line: str) -> dict[str, Any]:
    """One line of a worker's event pipe, checked; BadLine says what is wrong with it."""
    try:
        message = json.loads(line)
    except ValueError:
        raise BadLine("not JSON") from None
    if not isinstance(message, dict):
        raise BadLine("not a JSON object")
    kind = message.get("t")
    if kind == "event":
        _need(message, "id", str)
        check_kind(message.get("kind"))
        if message.get("phase") not in PHASES:
            raise BadLine(f"phase {message.get('phase')!r}")
        _need(message, "at", float, int)
        if message.get("score") is not None:
            _need(message, "score", float, int)
        if message.get("data") is not None:
            _need(message, "data", dict)
        snapshot = message.get("snapshot")
        if snapshot is not None and not (isinstance(snapshot, str) and _plain_name(snapshot)):
            raise BadLine(f"snapshot {snapshot!r}")
    elif kind == "clip":
        events = message.get("events")
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise BadLine("clip events")
        _need(message, "path", str)
        _need(message, "start", float, int)
        if message.get("end") is not None:
            _need(message, "end", float, int)
    elif kind == "counts":
        for name in Counts.__dataclass_fields__:
            _need(message, name, int)
    else:
        raise BadLine(f"unknown message {kind!r}")
    return message


def _need(message: dict[str, Any], key: str, *types: type) -> None:
    value = message.get(key)
    if not isinstance(value, types) or isinstance(value, bool):
        raise BadLine(f"{key} {value!r}")


def _plain_name(name: str) -> bool:
    return "/" not in name and not name.startswith(".") and name.endswith(".jpg")


# -- a recorder's side: the events the daemon routes to it ---------------------------------


class EventInbox:
    """The read end of the pipe on which the daemon sends a block the events it wants.

    ``take()`` never waits: it returns the complete lines read so far, parsed.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        self.bad = 0

    def take(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._partial += chunk
        if b"\n" not in self._partial:
            self._partial = self._partial[-MAX_LINE:]
            return out
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                self.bad += 1
                continue
            if isinstance(message, dict):
                out.append(message)
        return out

    def close(self) -> None:
        os.close(self.fd)
