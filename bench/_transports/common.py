"""What every transport of the wire benchmark shares: the frame stamp, the schedule, the loops.

A transport only says how to hand one frame over (``send(count)`` in the writer,
``recv(timeout)`` in a reader). The loops here decide when to send, what to count and
what to time, so that every transport is measured the same way:

- The writer stamps each frame: the frame counter in its first and last 8 bytes, and the
  moment the frame is complete (CLOCK_MONOTONIC ns, shared by all processes) in bytes
  8..16. For a loaned write that stamp *is* the fill (the part a camera decode would do);
  for a copy-write it is written into the source frame before the copy or send begins.
- A reader takes its timestamp as soon as it holds the frame (a validated view, or a
  finished copy), then touches it: it reads both ends of the frame and checks that they
  carry the same counter, so a torn or half-delivered frame is caught, not timed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

HEAD = struct.Struct("<QQ")  # frame counter, capture timestamp (ns)
TAIL = struct.Struct("<Q")  # frame counter again, at the very end of the frame
READERS = 2
RECV_TIMEOUT = 0.05  # s; how long a reader waits before it looks at the clock again

# recv(timeout) -> (capture ns, reader-holds-it ns, frame is whole) or None on timeout
Got = tuple[int, int, bool]
Send = Callable[[int], None]
Recv = Callable[[float], Got | None]


@dataclass(frozen=True)
class Ctx:
    """Everything a writer or reader process needs to find its transport."""

    transport: str
    width: int
    height: int
    run: str  # RunNames token: every kernel object is /pipelined.bench.<run>.…
    tmpdir: str  # sockets and iceoryx2's files; removed after the run

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)  # BGR, as OpenCV hands it over

    @property
    def nbytes(self) -> int:
        return self.height * self.width * 3

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def label(self) -> str:
        """A block/service name for this transport and size ([A-Za-z0-9_-])."""
        return f"{self.transport}-{self.size}"


def source_frame(shape: tuple[int, ...]) -> np.ndarray:
    """A frame with real bytes in every page (np.zeros would read the kernel's zero page)."""
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def fill(frame: np.ndarray, count: int) -> None:
    """The writer's work on a frame: its counter at both ends (bytes 8..16 left for the time)."""
    HEAD.pack_into(frame, 0, count, 0)
    TAIL.pack_into(frame, frame.nbytes - 8, count)


def complete(frame: np.ndarray) -> int:
    """Mark the frame complete now: take the capture time and write it into the frame."""
    ts = time.monotonic_ns()
    TAIL.pack_into(frame, 8, ts)
    return ts


def touch(frame: np.ndarray) -> tuple[int, bool]:
    """Read both ends of a held frame: (capture time, whether both ends agree)."""
    count, ts = HEAD.unpack_from(frame, 0)
    (tail,) = TAIL.unpack_from(frame, frame.nbytes - 8)
    return ts, count == tail and count > 0


@dataclass(frozen=True)
class Phase:
    """One measurement: the writer runs from ``start``; only [t0, t1] is measured."""

    name: str  # "30fps" or "flat"
    fps: float | None  # None: flat out
    start: int
    t0: int
    t1: int


@dataclass(frozen=True)
class Schedule:
    """Absolute CLOCK_MONOTONIC times, the same in every process of the machine."""

    phases: tuple[Phase, ...]
    end: int  # readers stop here

    @classmethod
    def plan(cls, now_ns: int, seconds: float, warmup: float = 0.3) -> Schedule:
        """30 fps first (a quiet system), then flat out, each after a warm-up."""
        ns = lambda s: int(s * 1e9)  # noqa: E731
        phases = []
        t = now_ns + ns(0.2)  # time for the schedule to reach every process
        for name, fps in (("30fps", 30.0), ("flat", None)):
            phases.append(Phase(name, fps, t, t + ns(warmup), t + ns(warmup + seconds)))
            t = phases[-1].t1
        return cls(tuple(phases), t + ns(0.3))

    def to_json(self) -> dict:
        return {"phases": [asdict(p) for p in self.phases], "end": self.end}

    @classmethod
    def from_json(cls, data: dict) -> Schedule:
        return cls(tuple(Phase(**p) for p in data["phases"]), data["end"])


def sleep_until(t_ns: int) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        time.sleep(left / 1e9)


def writer_loop(send: Send, schedule: Schedule) -> dict:
    """Send frames per phase: paced on an absolute grid (no drift), or flat out."""
    count = 0
    sent: dict[str, int] = {}
    for ph in schedule.phases:
        sleep_until(ph.start)
        in_window = 0
        if ph.fps is None:
            while (now := time.monotonic_ns()) < ph.t1:
                count += 1
                send(count)
                in_window += now >= ph.t0
        else:
            period = 1e9 / ph.fps
            k = 0
            while (due := ph.start + int(k * period)) < ph.t1:
                sleep_until(due)
                count += 1
                send(count)
                in_window += due >= ph.t0
                k += 1
        sent[ph.name] = in_window
    return {"sent": sent}


def reader_loop(recv: Recv, schedule: Schedule) -> dict:
    """Take frames until the schedule ends; count them and time them per phase window."""
    frames = {ph.name: 0 for ph in schedule.phases}
    latency_ns: list[int] = []
    torn = 0
    windows = [(ph.t0, ph.t1, ph.name, ph.fps is not None) for ph in schedule.phases]
    while True:
        got = recv(RECV_TIMEOUT)
        if got is None:
            if time.monotonic_ns() > schedule.end:
                break
            continue
        ts, t_recv, ok = got
        if not ok:
            torn += 1
        else:
            for t0, t1, name, timed in windows:
                if t0 <= t_recv < t1:
                    frames[name] += 1
                    if timed:
                        latency_ns.append(t_recv - ts)
        if t_recv > schedule.end:
            break
    return {"frames": frames, "latency_ns": latency_ns, "torn": torn}
