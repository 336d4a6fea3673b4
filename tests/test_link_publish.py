"""The link's publisher of frames, stepped by hand against a real wire and a real Zenoh
session (local: the subscriber is in the same session, nothing leaves the process)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import zenoh

from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter
from pipelined.workers.net.publish import Publisher, declare
from pipelined.workers.net.settings import Publication

KEY = "test/publish/cam"
SHAPE = (48, 64, 3)
DEADLINE = 30.0


@pytest.fixture
def session() -> Iterator[zenoh.Session]:
    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("listen/endpoints", "[]")
    config.insert_json5("connect/endpoints", "[]")
    config.insert_json5("scouting/multicast/enabled", "false")
    with zenoh.open(config) as opened:
        yield opened


class Received:
    """The flat grey levels of the JPEGs a local subscriber got, in order."""

    def __init__(self, session: zenoh.Session) -> None:
        self.levels: list[int] = []
        self._lock = threading.Lock()
        self._subscriber = session.declare_subscriber(KEY, self._sample)

    def _sample(self, sample: zenoh.Sample) -> None:
        jpeg = np.frombuffer(sample.payload.to_bytes(), np.uint8)
        picture = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        assert picture.shape == SHAPE
        with self._lock:
            self.levels.append(round(float(picture.mean())))

    def wait(self, count: int) -> list[int]:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            with self._lock:
                if len(self.levels) >= count:
                    return list(self.levels)
            time.sleep(0.01)
        raise AssertionError(f"{count} JPEGs expected, {len(self.levels)} came: {self.levels}")


def test_an_encoder_slower_than_its_wire_sends_whole_frames_from_copies(names, session, caplog):
    """The writer laps every frame while the link encodes it (a hook makes it certain): the
    first view is dropped, then copies are sent whole, each one its own frame; once the
    writer stops lapping, views again after ``views_again`` frames. Before copies, nothing
    at all was sent while the block outran the encoder."""
    Wire.create(names, "cam", int(np.prod(SHAPE)), readers=1).close()
    writer = WireWriter(names, "cam")
    reader = WireReader(names, "cam", 0)
    publication = Publication(KEY, "jpeg")
    received = Received(session)
    publisher = Publisher("cam", publication, declare(session, publication), reader, bytes(16))
    publisher.taking.views_again = 2
    caplog.set_level(logging.INFO, "pipelined.link")
    lapping = True

    def lap() -> None:
        for _ in range(4 if lapping else 0):  # four frames: the slot taken is reused
            writer.write(np.full(SHAPE, 250, np.uint8))

    publisher.after_payload = lap
    try:
        deadline = time.monotonic() + DEADLINE
        while not publisher.matched:  # the subscriber is seen at the first step
            assert time.monotonic() < deadline, "the local subscriber never matched"
            publisher.step()
        taken_as = []
        for n in range(1, 11):
            if n == 6:
                lapping = False
            writer.write(np.full(SHAPE, 10 * n, np.uint8))
            taken_as.append("copy" if publisher.taking.copy else "view")
            publisher.step()
        assert taken_as == ["view"] + ["copy"] * 6 + ["view"] * 3
        levels = received.wait(9)
        assert levels == [10 * n for n in range(2, 11)]  # frame 1 dropped, none torn
        assert publisher.stats.missed >= 1 and publisher.taking.copied == 6
        said = [r for r in caplog.records if "takes copies" in r.getMessage()]
        assert len(said) == 1 and "cam on test/publish/cam" in said[0].getMessage()
    finally:
        writer.close()
        reader.close()
