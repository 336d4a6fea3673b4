"""Taking one key's samples onto a remote block's packet wire: the link's receiving side.

Every sample is checked before anything of it reaches shared memory, and refused with a
reason otherwise (counted, the reason shown in status and logged once):

- it was published on exactly our key, not on a wildcard key that happens to match;
- it carries a pipelined header (header.py) of the kind the block expects;
- it comes from the stream we follow: a second publisher on the key is refused while
  the first still sends, and followed once the first has been silent ``SWITCH_AFTER``;
- its bytes fit: a packet at most half the block's ring, a raw frame exactly its shape
  and dtype and no larger than the block's frame wire, codec parameters that parse.

Then it goes onto the packet wire as a packet (the remote block decodes it, a recorder
copies it). Sequence numbers show what was lost on the way; an H.264 stream that lost a
packet waits for its next keyframe, so nothing undecodable is passed on. The callback
runs on Zenoh's thread and never waits: it copies one sample into the ring and returns.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import numpy as np
import zenoh

from ..ipc.packets import CodecParams, PacketTooLarge, PacketWriter
from .header import Header, HeaderError, parse
from .settings import Subscription
from .stats import WireStats

log = logging.getLogger("pipelined.link")
SWITCH_AFTER = 2.0
"""Seconds the followed publisher must be silent before another one on the key is taken."""
TIME_BASE = (1, 90000)
MAX_SIDE = 16384
VIDEO_CODECS = ("h264", "hevc")


class Refused(Exception):
    """A sample that does not go onto the wire; the message says why."""


class Receiver:
    """One remote block's key, taken onto its packet wire."""

    def __init__(self, subscription: Subscription, writer: PacketWriter):
        self.subscription = subscription
        self.stats = WireStats()
        self.sender: bytes = b""  # the Zenoh id of the publisher we follow
        self._writer = writer
        self._lock = threading.Lock()
        self._stream = 0
        self._last_seq = 0
        self._need_key = True
        self._params: CodecParams | None = None
        self._subscriber: zenoh.Subscriber[None] | None = None

    def declare(self, session: zenoh.Session) -> None:
        self._subscriber = session.declare_subscriber(self.subscription.key, self.on_sample)

    def undeclare(self) -> None:
        if self._subscriber is not None:
            self._subscriber.undeclare()
            self._subscriber = None

    def on_sample(self, sample: zenoh.Sample) -> None:
        """Zenoh's callback: one sample, checked and written, or refused."""
        try:
            with self._lock:  # one sample at a time onto the wire, whoever calls
                self._take(sample)
        except Refused as exc:
            self._refuse(str(exc))
        except Exception as exc:  # never let a sample end Zenoh's thread
            log.exception("%s: a sample could not be taken", self.subscription.block)
            self._refuse(f"a sample could not be taken: {type(exc).__name__}: {exc}")

    def _refuse(self, reason: str) -> None:
        if self.stats.refuse(reason):
            log.warning(
                "%s (zenoh:%s): refused a sample: %s",
                self.subscription.block,
                self.subscription.key,
                reason,
            )

    def _take(self, sample: zenoh.Sample) -> None:
        sub = self.subscription
        key = str(sample.key_expr)
        if key != sub.key:
            raise Refused(
                f"it was published on {key!r}, not on {sub.key!r}: a remote wire takes samples"
                " published on its exact key, never through a wildcard"
            )
        if sample.kind != zenoh.SampleKind.PUT:
            raise Refused("a delete, not a frame")
        attachment = sample.attachment
        try:
            header = parse(attachment.to_bytes() if attachment is not None else None)
        except HeaderError as exc:
            raise Refused(str(exc)) from None
        if header.kind != sub.encoding:
            raise Refused(
                f"it is {header.kind}, and this block takes {sub.encoding}: set encoding ="
                f' "{header.kind}" on block {sub.block!r}, or publish {sub.encoding}'
            )
        data = sample.payload.to_bytes()
        if len(data) > sub.ring_bytes // 2:
            raise Refused(
                f"a sample of {len(data):,} bytes; block {sub.block!r} takes at most"
                f" {sub.ring_bytes // 2:,} (raise its size or max_bit_rate)"
            )
        params = self._codec(header, data)  # what the sample is, checked: before who sent it
        if not self._follows(header):
            return
        if params is None:  # h264 between keyframes: the parameters we have
            params = self._params
        if params is None:
            self.stats.miss()
            self._need_key = True
            return  # the parameters come with the next keyframe
        if params != self._params:
            self._writer.set_params(params)
            self._params = params
        try:
            self._writer.write(
                data,
                pts=header.pts,
                dts=header.dts,
                duration=header.duration,
                keyframe=header.keyframe,
                time_ns=header.time_ns,
            )
        except PacketTooLarge as exc:
            raise Refused(str(exc)) from None
        self._last_seq = header.seq
        self.sender = header.sender
        self.stats.moved(len(data))

    def _follows(self, header: Header) -> bool:
        """Whether the sample is the next of the stream we follow (counting what was lost);
        a sample of another stream is refused while ours still sends."""
        if header.stream != self._stream:
            idle = self.stats.idle_for()
            if self._stream and idle is not None and idle < SWITCH_AFTER:
                raise Refused(
                    f"a second publisher (stream {header.stream:x}) sends on"
                    f" {self.subscription.key!r} while the one followed still does"
                )
            self._stream, self._last_seq, self._need_key = header.stream, 0, True
            self._params = None
        if header.seq <= self._last_seq:
            return False  # sent again for a newcomer: we have it
        lost = header.seq - self._last_seq - 1 if self._last_seq else 0
        if lost:
            self.stats.miss(lost)
            self._need_key = True
        if self._need_key and not header.keyframe:
            self.stats.miss()
            self._last_seq = header.seq
            return False  # undecodable without what was lost: wait for a keyframe
        self._need_key = False
        return True

    def _codec(self, header: Header, data: bytes) -> CodecParams | None:
        """The codec parameters the sample says it belongs to, checked; None for an H.264
        packet that carries none (they come with keyframes)."""
        sub = self.subscription
        if header.kind == "h264":
            if header.params:
                try:
                    params = CodecParams.from_bytes(header.params)
                except (ValueError, TypeError, KeyError) as exc:
                    raise Refused(f"its codec parameters do not parse: {exc}") from None
                if params.codec not in VIDEO_CODECS:
                    raise Refused(f"its codec parameters say {params.codec!r}, not h264")
                _check_side("width", params.width)
                _check_side("height", params.height)
                return params
            return None
        shape = header.shape
        if header.kind == "raw":
            if len(data) != header.nbytes:
                raise Refused(
                    f"its header says a {_shape(shape)} {np.dtype(header.dtype)} frame"
                    f" ({header.nbytes:,} bytes) and it holds {len(data):,} bytes"
                )
            if header.nbytes > sub.frame_bytes:
                raise Refused(
                    f"a {_shape(shape)} {np.dtype(header.dtype)} frame of {header.nbytes:,}"
                    f" bytes is larger than block {sub.block!r}'s frames ({sub.frame_bytes:,}"
                    " bytes): set its size or max_frame_bytes"
                )
        elif len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise Refused(f"a JPEG whose header says shape {_shape(shape)}: not a picture")
        height = shape[0] if shape else 0
        width = shape[1] if len(shape) > 1 else 1
        _check_side("width", width)
        _check_side("height", height)
        extradata = json.dumps({"shape": list(shape), "dtype": header.dtype}).encode()
        return CodecParams(
            codec="rawvideo" if header.kind == "raw" else "mjpeg",
            width=width,
            height=height,
            time_base=TIME_BASE,
            extradata=extradata if header.kind == "raw" else b"",
            pix_fmt="" if header.kind == "raw" else "yuvj420p",
        )

    def report(self, peer: str | None) -> dict[str, Any]:
        fps, rate = self.stats.rates()
        sub = self.subscription
        return {
            "block": sub.block,
            "direction": "in",
            "key": sub.key,
            "encoding": sub.encoding,
            "frames": self.stats.frames,
            "bytes": self.stats.bytes,
            "missed": self.stats.missed,
            "refused": self.stats.refused,
            "fps": round(fps, 2),
            "bytes_per_s": round(rate),
            "reason": self.stats.reason,
            "peer": peer,
        }


def _check_side(name: str, value: int) -> None:
    if not 0 < value <= MAX_SIDE:
        raise Refused(f"its {name} of {value} is not a picture's")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "()"
