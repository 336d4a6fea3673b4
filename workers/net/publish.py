"""Publishing one block's output under its key: a thread per publication in the link.

The link reads the block's wire as any reader does, through a reader slot of its own, so
the block knows nothing of it and is never held up by it: a slow link is a slow reader.

- Frames (``jpeg``, ``raw``): the reader takes the newest frame each time it is ready;
  frames that came meanwhile are skipped (counted as missed), whole. A JPEG is encoded
  from the zero-copy view and sent only if the view was still whole afterwards; raw
  pixels are copied out first, then checked. An encoder slower than four of the block's
  frames would find every view lapped and send nothing, so after a lapped view it takes
  copies until views would survive again, as a block's runtime does (``first_input.py``).
- Packets (``h264``): sent in order, since a P-frame needs the ones before it. When the
  link falls behind, the publisher drops whole groups of pictures: at a keyframe, or
  once it is more than ``MAX_LAG`` behind, it jumps to the newest keyframe on the wire.
  A subscriber that appears starts with the group of pictures under way (the packet
  wire still holds it), so its first picture comes at once.

With congestion ``block`` (the default) ``put`` waits while Zenoh's queue is full, up to
the lease, which is what makes the reader fall behind and skip whole frames; a frame the
link has not taken by then is dropped whole, and the link is never closed for it
(``settings.queue_waits`` says why Zenoh's own ``block`` is never used). With ``drop``
Zenoh throws messages away after its own short waits, and a large frame's fragments with
them (bench/README).
Nothing is encoded or copied while no subscriber matches the key.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import zenoh

from ..ipc.packets import Packet, PacketReader
from ..ipc.wire import Frame, WireReader
from ..picture import as_bgr
from ..runtime.first_input import FirstInput
from .header import Header
from .settings import Publication
from .stats import WireStats

log = logging.getLogger("pipelined.link")
POLL = 0.1
"""Longest wait for a frame or packet, so a stop is noticed."""
MAX_LAG = 1.0
"""Seconds an H.264 publication may run behind its camera before it drops the rest of
the group of pictures under way (at a keyframe it drops as soon as a newer one exists)."""
ENCODINGS = {
    "h264": zenoh.Encoding.VIDEO_H264,
    "jpeg": zenoh.Encoding.IMAGE_JPEG,
    "raw": zenoh.Encoding.VIDEO_RAW,
}


def declare(session: zenoh.Session, publication: Publication) -> zenoh.Publisher:
    """The Zenoh publisher of a publication, with its reliability.

    Congestion control is always Zenoh's ``drop``: with ``block`` Zenoh closes the link
    when a message waits too long, and that close can hit the connection that replaced a
    cut one (``settings.queue_waits``). How long a message may wait is the session's.
    """
    return session.declare_publisher(
        publication.key,
        encoding=ENCODINGS[publication.encoding],
        congestion_control=zenoh.CongestionControl.DROP,
        reliability=(
            zenoh.Reliability.RELIABLE
            if publication.reliability == "reliable"
            else zenoh.Reliability.BEST_EFFORT
        ),
    )


class Publisher:
    """One block's output, sent under one key until ``stop()``."""

    def __init__(
        self,
        block: str,
        publication: Publication,
        publisher: zenoh.Publisher,
        reader: WireReader | PacketReader,
        sender: bytes,
    ):
        self.block = block
        self.publication = publication
        self.stats = WireStats()
        self._publisher = publisher
        self._reader = reader
        self._sender = sender  # our Zenoh id, in every header
        self._stream = secrets.randbits(63) or 1
        self._seq = 0
        self._stopping = threading.Event()
        self._matched = False
        self._listened = False  # a subscriber matched when we last looked (packets)
        self._sent_generation = 0
        self._first_ns: int | None = None  # the first frame's time: pts count from it
        self.taking = FirstInput(on_first_copy=self._say_copies)  # views, or copies
        self.after_payload: Callable[[], None] | None = None
        """A hook for tests: called between taking a frame's payload and checking it."""
        self._thread = threading.Thread(target=self._run, name=f"publish {block}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5.0)

    @property
    def matched(self) -> bool:
        """Whether a subscriber somewhere takes this key (as of the last look)."""
        return self._matched

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.step()
        except zenoh.ZError as exc:
            if not self._stopping.is_set():  # the session closing under us at the end
                log.error("publishing %s on %s failed: %s", self.block, self.publication.key, exc)
                raise

    def step(self) -> None:
        """One frame or packet sent, skipped or waited for (at most ``POLL``)."""
        if isinstance(self._reader, PacketReader):
            self._packet(self._reader)
        else:
            self._frame(self._reader)

    def _matching(self) -> bool:
        matched = self._publisher.matching_status
        self._matched = matched
        return matched

    # -- frames ---------------------------------------------------------------------------

    def _frame(self, reader: WireReader) -> None:
        before = reader.dropped
        copy = self.taking.copy and self._matched  # no one listening: a view, never a copy
        frame = reader.read_copy(timeout=POLL) if copy else reader.read(timeout=POLL)
        if frame is None:
            self._matching()
            return
        if not self._matching():
            return  # no one takes it: neither encoded nor copied
        self.taking.taken()
        if reader.dropped > before:
            self.stats.miss(reader.dropped - before)
        taken = self._payload(frame)
        if self.after_payload is not None:
            self.after_payload()
        if not self.taking.done_with(frame) or taken is None:
            self.stats.miss()  # the block overwrote it while we took it: never sent torn
            return
        payload, shape = taken
        taken_ns = _wall_clock(frame.timestamp_ns)
        if self._first_ns is None:
            self._first_ns = taken_ns
        pts = max(0, (taken_ns - self._first_ns) * 90_000 // 1_000_000_000)  # 1/90000 s
        header = Header(
            kind=self.publication.encoding,
            stream=self._stream,
            seq=self._next_seq(),
            time_ns=taken_ns,
            pts=pts,
            dts=pts,
            shape=shape,
            dtype=frame.array.dtype.str if self.publication.encoding == "raw" else "|u1",
            sender=self._sender,
        )
        self._put(payload, header)

    def _say_copies(self) -> None:
        log.info(
            "%s on %s: the block reused a frame's slot while the link encoded it;"
            " the link takes copies of its frames until it keeps up again",
            self.block,
            self.publication.key,
        )

    def _payload(self, frame: Frame) -> tuple[bytes, tuple[int, ...]] | None:
        array = frame.array
        if self.publication.encoding == "raw":
            return array.tobytes(), tuple(array.shape)
        picture = array if _plain_picture(array) else as_bgr(array)
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.publication.quality]
        ok, jpeg = cv2.imencode(".jpg", picture, quality)
        if not ok:
            return None
        return jpeg.tobytes(), tuple(picture.shape)

    # -- packets --------------------------------------------------------------------------

    def _packet(self, reader: PacketReader) -> None:
        if not self._matching():
            self._listened = False
            self._stopping.wait(POLL)  # no one listens: the reader's place does not matter
            return
        if not self._listened:
            self._listened = True
            reader.seek_newest_keyframe()  # a newcomer starts with the picture under way
            self._sent_generation = 0
        packet = reader.read(timeout=POLL)
        if packet is None:
            return
        if self._stale(packet):
            skipped = reader.catch_up()
            self.stats.miss(skipped + 1)
            self._sent_generation = 0  # the next keyframe carries the parameters again
            return
        params = b""
        if packet.keyframe or packet.generation != self._sent_generation:
            codec = reader.params(packet.generation)
            if codec is None:
                self.stats.miss()  # its parameters are gone: the wire lapped us
                return
            params = codec.to_bytes()
            self._sent_generation = packet.generation
        header = Header(
            kind="h264",
            stream=self._stream,
            seq=self._next_seq(),
            time_ns=packet.time_ns,
            keyframe=packet.keyframe,
            pts=packet.pts,
            dts=packet.dts,
            duration=packet.duration,
            generation=packet.generation,
            sender=self._sender,
            params=params,
        )
        self._put(packet.data, header)

    def _stale(self, packet: Packet) -> bool:
        """Whether to drop the rest of this group of pictures: a newer keyframe is on the
        wire, and this packet is a keyframe (a whole group can go) or is late."""
        reader = self._reader
        assert isinstance(reader, PacketReader)
        if reader.behind() == 0:
            return False
        late = time.time_ns() - packet.time_ns > MAX_LAG * 1e9
        return (packet.keyframe or late) and reader.newer_keyframe()

    # -- sending --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _put(self, payload: bytes, header: Header) -> None:
        self._publisher.put(payload, attachment=header.pack())
        self.stats.moved(len(payload))

    def report(self) -> dict[str, Any]:
        fps, rate = self.stats.rates()
        return {
            "block": self.block,
            "direction": "out",
            "key": self.publication.key,
            "encoding": self.publication.encoding,
            "congestion": self.publication.congestion,
            "frames": self.stats.frames,
            "bytes": self.stats.bytes,
            "missed": self.stats.missed,
            "fps": round(fps, 2),
            "bytes_per_s": round(rate),
        }


def _plain_picture(array: np.ndarray) -> bool:
    """A frame JPEG takes as it is: 8-bit grey or BGR."""
    return array.dtype == np.uint8 and (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    )


def _wall_clock(monotonic_ns: int) -> int:
    """A frame's capture time (monotonic, this box) as wall-clock time, which crosses boxes."""
    return time.time_ns() - (time.monotonic_ns() - monotonic_ns)
