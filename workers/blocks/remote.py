"""The remote block: a source whose frames were published by another box under a Zenoh key.

    [blocks.door]
    type = "remote"
    source = "zenoh:site1/door/cam"
    encoding = "h264"

It feeds its wires as a camera does. The daemon's Zenoh link (``net/link.py``) takes
every sample of the key onto this block's packet wire, checked, as it arrives; this
block reads that wire like any reader (``context.incoming``) and turns what it holds into
frames on its own frame wire: H.264 decoded (a recorder copies the packets themselves),
JPEG decoded, raw frames copied. Decoding costs what is asked, as for a camera: nothing
while no one reads the frames.

Newest-frame semantics: a block that falls behind skips to the newest frame (JPEG, raw)
or to the newest keyframe (H.264, whole groups of pictures), never stalling the link.
Each frame carries the time it was taken on the other box (wall clocks: keep the boxes'
clocks in sync for the times to compare).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..block import Block, ConfigurationError, Param, in_range, int_list, one_of
from ..ipc.packets import CodecParams, Packet, PacketReader, ring_bytes, stream_ring_bytes
from ..net.settings import ENCODINGS, parse_source
from ..video import capabilities

if TYPE_CHECKING:
    from ..video.decode import Decoder

POLL = 0.1
KEYFRAME_ALLOWANCE = 4.0  # as the camera's: a pre-roll starts at a keyframe


class Remote(Block):
    """A source fed from another box: what a block there publishes under a Zenoh key
    (`publish`), as frames here, and as packets too for H.264 and JPEG (a recorder copies
    them)."""

    min_inputs = 0
    max_inputs = 0
    packets_when = 'when its encoding is "h264" or "jpeg": the packets as they arrived'
    params = {
        "source": Param(str, doc='"zenoh:KEY": the key the other box publishes under'),
        "encoding": Param(
            str,
            default="h264",
            check=one_of(*ENCODINGS),
            doc="what the other box sends under the key: h264, jpeg or raw",
        ),
        "size": Param(
            list,
            default=[1920, 1080],
            check=int_list(2, 16, 8192),
            doc="[width, height] of the largest picture taken: sizes the wire; larger"
            " pictures are scaled down to fit, larger raw frames refused",
        ),
        "max_bit_rate": Param(
            int,
            default=8_000_000,
            check=in_range(100_000, 200_000_000),
            doc="h264: the most bits a second the stream has; with preroll, sizes the packet wire",
        ),
        "preroll": Param(
            float,
            default=5.0,
            check=in_range(0, 60),
            doc="h264: seconds of packets kept for a recorder to start a clip before its trigger",
        ),
        "stall_timeout": Param(
            float,
            default=5.0,
            check=in_range(0.5, 300),
            doc="seconds without a sample before the block says its source went quiet",
        ),
        "hwaccel": Param(
            str,
            default="auto",
            check=capabilities.hwaccel_problem,
            doc="h264: auto, off, or a hardware decoder's name, as for a camera",
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        try:
            parse_source(params["source"])
        except ValueError as exc:
            return [str(exc)]
        return []

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        width, height = params["size"]
        return width * height * 3

    @classmethod
    def offers_packets(cls, params: dict[str, Any]) -> bool:
        return params["encoding"] != "raw"

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int:
        """The ring the link fills: ``preroll`` seconds of H.264 and the group of pictures
        it starts in; a few pictures of JPEG or raw (at least two of the largest)."""
        width, height = params["size"]
        frame = width * height * 3
        if params["encoding"] == "h264":
            seconds = params["preroll"] + KEYFRAME_ALLOWANCE
            return stream_ring_bytes(params["max_bit_rate"], seconds)
        return ring_bytes(2 * frame if params["encoding"] == "jpeg" else 3 * frame)

    # -- run time ---------------------------------------------------------------------

    def setup(self) -> None:
        self.key = parse_source(self.p["source"])
        incoming = self.context.incoming
        if incoming is None:
            raise ConfigurationError(
                "a remote block runs in a graph, fed by the daemon's Zenoh link (it has no"
                " packet wire of its own here)"
            )
        self.incoming: PacketReader = incoming
        self.encoding = self.p["encoding"]
        self.limit = tuple(self.p["size"])  # (width, height)
        self.decoder: Decoder | None = None
        self.received = 0
        self._last_at: float | None = None
        self._reason: str | None = None
        self._detail: str | None = None
        self._waiting(f"waiting for zenoh:{self.key}: nothing has arrived yet")

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        packet = self._next()
        if packet is None:
            self._check_stall()
            return None
        codec = self.incoming.params(packet.generation)
        if codec is None:
            return None  # lapped three changes of stream ago: the next keyframe brings them
        self._arrived(codec)
        if not self.context.frames_wanted():
            self.decoder = None  # decoding starts again at a keyframe when someone reads
            return None
        if self.encoding == "raw":
            frame = self._raw(packet, codec)
        elif self.encoding == "jpeg":
            frame = self._jpeg(packet)
        else:
            frame = self._h264(packet, codec)
        if frame is not None:
            self.frame_time_ns = _local_monotonic(packet.time_ns)
        return frame

    def _next(self) -> Packet | None:
        """The next packet to use: the newest one (JPEG, raw), or the next in order (H.264)
        unless a whole group of pictures can be skipped."""
        packet = self.incoming.read(timeout=POLL)
        if packet is None:
            return None
        if packet.keyframe and self.incoming.newer_keyframe():
            self.incoming.catch_up()  # behind by a whole picture (or group): the newest
            return self.incoming.read(timeout=0) or packet
        return packet

    # -- turning packets into frames -------------------------------------------------------

    def _raw(self, packet: Packet, codec: CodecParams) -> np.ndarray | None:
        described = json.loads(codec.extradata)
        shape, dtype = tuple(described["shape"]), np.dtype(described["dtype"])
        if math.prod(shape) * dtype.itemsize != len(packet.data):
            return None  # the link checked it: a corrupt packet cannot happen, but be sure
        return np.frombuffer(packet.data, dtype).reshape(shape)

    def _jpeg(self, packet: Packet) -> np.ndarray | None:
        picture = cv2.imdecode(np.frombuffer(packet.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if picture is None:
            self.context.log.warning("zenoh:%s: a sample that is not a JPEG", self.key)
            return None
        return self._fit(picture)

    def _h264(self, packet: Packet, codec: CodecParams) -> np.ndarray | None:
        import av

        decoder = self.decoder
        if decoder is None or decoder.params != codec:
            if not packet.keyframe:
                return None  # a decoder starts at a keyframe
            decoder = self.decoder = self._open(codec)
            if decoder is None:
                return None
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.dts = packet.pts, packet.dts
        decoded = decoder.decode(av_packet)
        if not decoded:
            return None
        picture = decoded[-1].to_ndarray(format="bgr24")
        return self._fit(picture)

    def _open(self, codec: CodecParams) -> Decoder | None:
        from ..video.decode import Decoder

        try:
            return Decoder(codec, self.p["hwaccel"], keyframes_only=False)
        except Exception as exc:  # an FFmpeg without this decoder
            self._waiting(f"cannot decode {codec.codec} from zenoh:{self.key}: {exc}")
            return None

    def _fit(self, picture: np.ndarray) -> np.ndarray:
        """The picture, scaled down to fit ``size`` if it is larger (keeping its shape)."""
        height, width = picture.shape[:2]
        max_width, max_height = self.limit
        if width <= max_width and height <= max_height:
            return picture
        scale = min(max_width / width, max_height / height)
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)

    # -- status ---------------------------------------------------------------------------

    def _arrived(self, codec: CodecParams) -> None:
        self.received += 1
        self._last_at = time.monotonic()
        if self._reason is not None:
            self._waiting(None)
        detail = f"zenoh:{self.key}: {codec.width}x{codec.height} {self.encoding}"
        if self.decoder is not None:
            detail += f", decoding {self.decoder.how}"
        if detail != self._detail:
            self._detail = detail
            self.context.detail(detail)

    def _check_stall(self) -> None:
        if self._last_at is None:
            return
        quiet = time.monotonic() - self._last_at
        if quiet > self.p["stall_timeout"]:
            self._waiting(
                f"waiting for zenoh:{self.key}: nothing for over {self.p['stall_timeout']:g} s"
                " (pipectl status shows the remote wire's peer and state)"
            )

    def _waiting(self, reason: str | None) -> None:
        if reason != self._reason:
            if reason is not None and self._reason is None and self.received:
                self.context.log.warning("%s", reason)
            self._reason = reason
            self.context.waiting(reason)


def _local_monotonic(wall_ns: int) -> int:
    """A time on the other box's wall clock as this box's monotonic time (never later
    than now: clocks a little apart must not make a frame from the future)."""
    age = max(0, time.time_ns() - wall_ns)
    return time.monotonic_ns() - age
