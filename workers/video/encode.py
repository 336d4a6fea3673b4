"""Encoding frames to H.264: frames (BGR numpy arrays) in, packets and codec parameters out.

Two users: the worker's runtime, which encodes a block's frames once for every reader
when the graph says ``encode = "h264"`` (``EncoderThread``, on its own thread, onto the
block's packet wire), and the recorder's ``codec = "h264"`` (``Encoder`` directly)::

    encoder = Encoder(EncodeOptions(bit_rate=4_000_000), width=1280, height=720)
    for packet in encoder.encode(frame, time_ns):   # frame: h x w x 3 uint8, BGR
        ...packet.data, packet.pts, packet.dts, packet.keyframe...
    encoder.params                                   # CodecParams: codec, size, extradata
    encoder.flush()                                  # the packets still inside, at the end

The stream is what a camera sends, so that everything downstream treats both alike:
Annex B packets with the SPS and PPS in front of every keyframe and in ``extradata``, no
B-frames (a packet comes out for each frame that goes in), a keyframe every
``keyframe_interval`` seconds of the frames' own timestamps (a block's frame rate varies),
time base 1/90000. ``encoder = "auto"`` uses the box's hardware encoder where there is
one (the Raspberry Pi's ``h264_v4l2m2m``) and libx264 otherwise; ``how`` says which.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import av.error
import cv2
import numpy as np
from av.video.frame import PictureType

from ..ipc.packets import CodecParams, PacketTooLarge, PacketWriter
from . import capabilities
from .options import EncodeOptions

log = logging.getLogger("pipelined.video")

TIME_BASE = Fraction(1, 90000)
SOFTWARE = {"h264": "libx264"}


@dataclass(frozen=True)
class EncodedPacket:
    """One packet out of the encoder, its timestamps in ``TIME_BASE``."""

    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool


class EncoderError(Exception):
    """Frames this encoder cannot take (a shape, a dtype), or no encoder opened."""


class Encoder:
    """One stream of one picture size; a new size needs a new Encoder (and generation)."""

    def __init__(self, options: EncodeOptions, width: int, height: int, fps: float = 30.0):
        # 4:2:0 needs even sizes: an odd last row or column is left out.
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 16 or self.height < 16:
            raise EncoderError(f"frames of {width}x{height} are too small to encode")
        self.options = options
        self.fps = fps
        self.hardware: str | None = None
        self.context, self.how = self._open()
        self.params = CodecParams(
            codec=options.codec,
            width=self.width,
            height=self.height,
            time_base=(TIME_BASE.numerator, TIME_BASE.denominator),
            extradata=bytes(self.context.extradata or b""),
            pix_fmt="yuv420p",
            bit_rate=options.bit_rate,
        )
        self._first_ns: int | None = None
        self._last_pts = -1
        self._last_key_pts: int | None = None
        self._interval = round(options.keyframe_interval / TIME_BASE)
        self._duration = round(1 / (fps * TIME_BASE))  # nominal: frames come when they come

    def encode(self, frame: np.ndarray, time_ns: int) -> list[EncodedPacket]:
        """Encode one frame taken at ``time_ns`` (any clock, in nanoseconds)."""
        picture = self._picture(frame)
        if self._first_ns is None:
            self._first_ns = time_ns
        pts = max(round((time_ns - self._first_ns) * 90000 / 1e9), self._last_pts + 1)
        self._last_pts = pts
        picture.pts = pts
        if self._last_key_pts is None or pts - self._last_key_pts >= self._interval:
            picture.pict_type = PictureType.I  # forced-idr: an IDR, where a clip may start
            self._last_key_pts = pts
        return self._packets(self.context.encode(picture))

    def flush(self) -> list[EncodedPacket]:
        """The packets still in the encoder; it takes no frames after this."""
        try:
            return self._packets(self.context.encode(None))
        except av.error.EOFError:
            return []

    def _picture(self, frame: np.ndarray) -> av.VideoFrame:
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise EncoderError(f"cannot encode {frame.dtype} frames of shape {frame.shape}")
        if frame.ndim == 3 and frame.shape[2] != 3:
            raise EncoderError(f"cannot encode frames of {frame.shape[2]} channels (BGR: 3)")
        height, width = frame.shape[:2]
        if (width - width % 2, height - height % 2) != (self.width, self.height):
            raise EncoderError(
                f"a {width}x{height} frame into an encoder of {self.width}x{self.height}"
            )
        frame = frame[: self.height, : self.width]
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        # OpenCV's stubs say any number type; from uint8 BGR it gives uint8 I420.
        yuv = cast(
            "np.ndarray[Any, np.dtype[np.uint8]]", cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
        )
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def _packets(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for packet in packets:
            pts = packet.pts if packet.pts is not None else self._last_pts
            dts = packet.dts if packet.dts is not None else pts
            duration = packet.duration or self._duration
            out.append(EncodedPacket(bytes(packet), pts, dts, duration, packet.is_keyframe))
        return out

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> tuple[av.VideoCodecContext, str]:
        codec, asked = self.options.codec, self.options.encoder
        software = SOFTWARE[codec]
        if asked == "auto":
            tries = capabilities.hardware_encoders(codec)
        elif asked == software:
            tries = []
        else:
            tries = [asked]
        context, self.hardware, how = capabilities.open_first(
            tries,
            self._create,
            software,
            (av.error.FFmpegError, OSError, ValueError),
            "encoder",
            auto=asked == "auto",
        )
        return context, how

    def _create(self, name: str) -> av.VideoCodecContext:
        options = self.options
        context = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
        context.width, context.height = self.width, self.height
        context.pix_fmt = "yuv420p"
        context.time_base = TIME_BASE
        context.framerate = Fraction(self.fps).limit_denominator(1001)
        context.flags |= av.codec.context.Flags.global_header  # extradata: SPS and PPS
        context.max_b_frames = 0
        if name == "libx264":
            context.gop_size = 1 << 30  # keyframes come when the clock says (forced-idr)
            context.options = {
                "preset": options.preset,
                "tune": "zerolatency",
                "crf": "23",
                "maxrate": str(options.bit_rate),
                "bufsize": str(options.bit_rate * 2),
                "forced-idr": "1",
                "x264-params": "scenecut=0:repeat-headers=1",
            }
        else:
            context.gop_size = max(1, round(options.keyframe_interval * self.fps))
            context.bit_rate = options.bit_rate
        context.open()
        return context


class EncoderThread:
    """A block's frames, encoded on their own thread onto its packet wire.

    The worker's main thread hands over a copy of each frame it published (``offer``) and
    never waits: if the encoder falls behind, the oldest waiting frame is dropped (the
    stream's timestamps say how long each picture lasts). A frame of a new size starts a
    new encoder and a new generation of codec parameters on the wire.
    """

    QUEUE = 2

    def __init__(self, options: EncodeOptions, writer: PacketWriter, fps: float = 30.0):
        self.options = options
        self.writer = writer
        self.fps = fps
        self.status: str | None = None  # for the block's status line
        self.encoded = 0
        self.dropped = 0
        self._frames: collections.deque[tuple[np.ndarray, int]] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._encoder: Encoder | None = None
        self._failed_shape: tuple[int, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    def offer(self, frame: np.ndarray, time_ns: int) -> None:
        """A frame the caller will not touch again, taken at ``time_ns`` (monotonic)."""
        with self._ready:
            if len(self._frames) >= self.QUEUE:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append((frame, time_ns))
            self._ready.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Encode what waits, flush the encoder onto the wire, and end the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._frames and not self._closing:
                    self._ready.wait()
                if not self._frames:
                    break
                frame, time_ns = self._frames.popleft()
            self._encode(frame, time_ns)
        if self._encoder is not None:
            self._publish(self._encoder.flush(), time.time_ns())

    def _encode(self, frame: np.ndarray, time_ns: int) -> None:
        wall_ns = time.time_ns() - (time.monotonic_ns() - time_ns)
        try:
            encoder = self._encoder_for(frame)
            if encoder is None:
                return
            packets = encoder.encode(frame, time_ns)
        except (EncoderError, av.error.FFmpegError) as exc:
            self._fail(frame, f"encode: {exc}")
            return
        self._publish(packets, wall_ns)
        self.encoded += 1

    def _encoder_for(self, frame: np.ndarray) -> Encoder | None:
        height, width = frame.shape[:2]
        encoder = self._encoder
        if encoder is not None and (encoder.width, encoder.height) == (
            width - width % 2,
            height - height % 2,
        ):
            return encoder
        if self._failed_shape == frame.shape:
            return None  # said so already
        if encoder is not None:
            self._publish(encoder.flush(), time.time_ns())
        self._encoder = Encoder(self.options, width, height, self.fps)
        self.writer.set_params(self._encoder.params)
        self._failed_shape = None
        options = self.options
        self.status = (
            f"encoding {options.codec} {self._encoder.how}, {options.bit_rate / 1e6:.2g} Mbit/s"
            f" at most, a keyframe every {options.keyframe_interval:g} s"
        )
        return self._encoder

    def _fail(self, frame: np.ndarray, why: str) -> None:
        if self._failed_shape != frame.shape:
            log.warning("%s", why)
        self._failed_shape = frame.shape
        self._encoder = None
        self.status = why

    def _publish(self, packets: list[EncodedPacket], wall_ns: int) -> None:
        for p in packets:
            try:
                self.writer.write(
                    p.data,
                    pts=p.pts,
                    dts=p.dts,
                    duration=p.duration,
                    keyframe=p.keyframe,
                    time_ns=wall_ns,
                )
            except PacketTooLarge as exc:
                log.warning("%s", exc)
