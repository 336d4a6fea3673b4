"""The camera block in the test process: a context that also has a packet wire and says
whether anyone reads the frames, and helpers to run the block as the runtime would:
``camera``/``next_frame`` for frames, ``Rig`` (the ``rig`` fixture) for a camera with a
real packet wire in /dev/shm and a reader of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from blockhost import RecordingContext, params

from pipelined.workers.blocks.camera import Camera
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.packets import Packet, PacketReader, PacketWire, PacketWriter

DEADLINE = 60.0  # seconds for an outcome on a busy two-core box; never a speed


class CameraContext(RecordingContext):
    """``packets``: the camera's packet wire (None: it has none); ``readers``: whether
    anyone takes its frames (a test flips it to see decoding start and stop)."""

    def __init__(
        self,
        sleep_cap: float | None = None,
        packets: PacketWriter | None = None,
        readers: bool = True,
    ):
        super().__init__(sleep_cap)
        self.packets = packets
        self.readers = readers

    def frames_wanted(self) -> bool:
        return self.readers


def camera(context: CameraContext | None = None, **overrides: Any) -> Camera:
    block = Camera("cam", params(Camera, **overrides), context or CameraContext())
    block.setup()
    return block


def next_frame(cam: Camera, attempts: int = 50) -> np.ndarray:
    """The next frame the camera publishes, written in place as the runtime would."""
    shape, dtype = cam.output_like([])
    out = np.full(shape, 7, dtype)
    for _ in range(attempts):
        if cam.process_into([], out):
            return out
    raise AssertionError(f"no frame after {attempts} calls; reasons: {cam.context.reasons}")


@dataclass
class Rig:
    """A camera on ``url`` with a packet wire and one reader of it; ``run`` drives it."""

    names: RunNames
    url: str
    settings: dict = field(default_factory=dict)
    context: CameraContext = field(init=False)
    cam: Camera = field(init=False)
    reader: PacketReader = field(init=False)
    packets: list[Packet] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        values = params(Camera, source=self.url, size=[320, 240], **self.settings)
        self.wire = PacketWire.create(self.names, "cam", Camera.packet_bytes(values), 1)
        self.writer = PacketWriter(self.names, "cam")
        self.context = CameraContext(sleep_cap=0.05, packets=self.writer, readers=False)
        self.cam = camera(self.context, source=self.url, size=[320, 240], **self.settings)
        self.reader = PacketReader(self.names, "cam", 0)
        self.out = np.empty((240, 320, 3), np.uint8)

    def step(self) -> None:
        if self.cam.process_into([], self.out):
            self.frames.append(self.out.copy())
        while (packet := self.reader.read(timeout=0)) is not None:
            self.packets.append(packet)

    def run_until(self, done: Callable[[], object], what: str, timeout: float = DEADLINE):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if result := done():
                return result
        raise AssertionError(
            f"timed out waiting for {what}; reasons {self.context.reasons},"
            f" details {self.context.details[-2:]}"
        )

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()

    def close(self) -> None:
        self.cam.close()
        self.reader.close()
        self.writer.close()
        self.wire.close()


@pytest.fixture(name="rig")
def rig_fixture(names: RunNames) -> Iterator[Callable[..., Rig]]:
    """``rig(url, **settings)``: a Rig, closed after the test."""
    made: list[Rig] = []

    def make(url: str, **settings: object) -> Rig:
        made.append(Rig(names, url, settings))
        return made[-1]

    yield make
    for r in made:
        r.close()
