"""The camera block: frames and packets from testsrc, a V4L2 device, a file or a stream.

A camera box must survive its camera: one still booting after a power cut, a USB camera
unplugged, an RTSP server down or hung. None of those is a crash. The block keeps
running, says what it waits for (``context.waiting``), and reconnects with a backoff
that doubles from 0.5 s up to ``retry_max``, forever, sleeping through
``context.sleep`` so a stop request is answered at once. A live source that sends no
packet for ``stall_timeout`` seconds (a hung server, one that never started sending) is
reconnected the same way. Only a source that can never work (a malformed URL, an unknown
scheme, a V4L2 format FFmpeg does not know) is refused, when the graph is loaded.

Everything but testsrc is read with PyAV (FFmpeg), one connection at a time, on its own
thread (``video.feed``): the packets go onto the camera's packet wire as they were
received (a stream, a file, a device asked for MJPEG or H.264), for a recorder to copy
without decoding. Frames cost what is asked of them (``video.decode``): nothing while
no one reads them, every frame by default, fewer with ``decode_fps``. The decoded frame
is converted (and scaled to ``size``) straight into the output wire's slot.

testsrc draws its scene into the slot, paced to ``fps``; files are paced to ``fps``
too; live sources pace themselves, and frames that come faster than ``fps`` are decoded
(the next ones need them) but not converted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..block import Block, Param, in_range, int_list
from ..ipc.packets import CodecParams, stream_ring_bytes
from ..video import capabilities
from ..video.pace import Pacer
from ..video.policy import DecodePolicy, Want
from .sources import FOURCC_FORMATS, Source, parse_source
from .testsrc import TestScene

if TYPE_CHECKING:  # FFmpeg is loaded by the worker, not by the daemon checking a graph
    from ..video.decode import Decoder
    from ..video.feed import Feed, Item

RETRY_FIRST = 0.5  # seconds before the first reconnect; doubles up to retry_max
MEASURE_SECONDS = 2.0  # how long a live source is watched before its rate is reported
REMEASURE_SECONDS = 10.0  # then how often the rate and bit rate are looked at again
POLL = 0.1  # longest wait for a packet before the runtime gets its turn (heartbeat)
KEYFRAME_ALLOWANCE = 4.0
"""Seconds a packet wire holds beyond ``preroll``: a pre-roll starts at a keyframe, and
cameras send one every 1 to 4 seconds."""


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"

    return check


def _fourcc(value: Any) -> str | None:
    if value == "" or value in FOURCC_FORMATS:
        return None
    return f"must be empty (the device's own) or one of {', '.join(FOURCC_FORMATS)}, not {value!r}"


class Camera(Block):
    """A source: testsrc, a V4L2 device, a video file, or an rtsp:// or http:// stream.

    An encoded source's packets go onto its packet wire as they come (a recorder copies
    them); frames are decoded only while a block or a viewer reads them, as many a second
    as `decode_fps` asks."""

    min_inputs = 0
    max_inputs = 0
    packets_when = "when its source is encoded (a stream, a file, a V4L2 MJPG/H264 device)"
    params = {
        "source": Param(
            (str, int),
            default="testsrc",
            doc="testsrc | device index | /dev/videoN or /dev/v4l/by-id/… | video file"
            " | rtsp://… | http://…",
        ),
        "size": Param(
            list,
            default=[640, 480],
            doc="[width, height] of the output frames",
            check=int_list(2, 16, 8192),
        ),
        "fps": Param(
            float, default=30.0, doc="frames per second, at most", check=in_range(0.1, 240)
        ),
        "decode_fps": Param(
            float,
            default=0.0,
            check=in_range(0, 240),
            doc="0: decode every frame; N: at most N frames a second, from keyframes alone"
            " when the source sends that many",
        ),
        "hwaccel": Param(
            str,
            default="auto",
            check=capabilities.hwaccel_problem,
            doc="auto: the box's hardware decoder where there is one, else software; off;"
            " or a name (h264_v4l2m2m, cuda, …)",
        ),
        "loop": Param(bool, default=True, doc="replay a video file when it ends"),
        "timeout": Param(
            float,
            default=5.0,
            check=in_range(0.5, 60),
            doc="seconds a source may take to open (connect, handshake, a first look at"
            " the stream)",
        ),
        "stall_timeout": Param(
            float,
            default=5.0,
            check=in_range(0.5, 300),
            doc="seconds without a packet after which a live source is reconnected",
        ),
        "retry_max": Param(
            float,
            default=10.0,
            check=in_range(RETRY_FIRST, 600),
            doc="longest wait between reconnects (from 0.5 s, doubling)",
        ),
        "rtsp_transport": Param(
            str,
            default="tcp",
            check=_one_of("tcp", "udp", "auto"),
            doc="tcp survives lossy Wi-Fi; auto lets FFmpeg try UDP first",
        ),
        "fourcc": Param(
            str,
            default="",
            check=_fourcc,
            doc="format asked of a V4L2 device (MJPG for HD at 30 fps; MJPG and H264 are"
            " published as packets); empty: the device's own",
        ),
        "preroll": Param(
            float,
            default=5.0,
            check=in_range(0, 60),
            doc="seconds of packets kept for a recorder to start a clip before its trigger",
        ),
        "max_bit_rate": Param(
            int,
            default=8_000_000,
            check=in_range(100_000, 200_000_000),
            doc="the most bits a second the source sends; with preroll, sizes the packet wire",
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        try:
            source = parse_source(params.get("source", "testsrc"))
        except ValueError as exc:
            return [str(exc)]
        if params.get("fourcc") and source.kind != "device":
            return [f"fourcc applies to V4L2 devices, not to source {source.show()!r}"]
        return []

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        width, height = params["size"]
        return width * height * 3

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int | None:
        """A ring for ``preroll`` seconds and the group of pictures it starts in, at
        ``max_bit_rate``; None for sources that send no encoded video."""
        if not parse_source(params["source"]).sends_packets(params["fourcc"]):
            return None
        return stream_ring_bytes(params["max_bit_rate"], params["preroll"] + KEYFRAME_ALLOWANCE)

    # -- run time ---------------------------------------------------------------------

    def setup(self) -> None:
        self.source: Source = parse_source(self.config["source"])
        width, height = self.config["size"]
        self.size = (width, height)
        self.fps = float(self.config["fps"])
        self.delivered_size: tuple[int, int] | None = None
        self.delivered_fps: float | None = None
        self._backoff = RETRY_FIRST
        self._reason: str | None = None
        self._detail: str | None = None
        self._finished = False
        self._frames = 0  # testsrc's frame number
        self.decoded = 0  # packets decoded since setup
        self._scene: TestScene | None = None
        if self.source.kind == "testsrc":
            self._pacer = Pacer(self.fps)
            self._scene = TestScene(*self.size, fps=self.fps)
            self.delivered_size, self.delivered_fps = self.size, self.fps
            self._report_testsrc()
            return
        from ..video.source import OpenSettings

        self._settings = OpenSettings(
            open_timeout=self.config["timeout"],
            read_timeout=self.config["stall_timeout"],
            rtsp_transport=self.config["rtsp_transport"],
            size=self.size,
            fps=self.fps,
            fourcc=self.config["fourcc"],
        )
        self._policy = DecodePolicy(self.fps, self.config["decode_fps"], self.source.live)
        self._feed: Feed | None = None
        self._decoder: Decoder | None = None
        self._decoder_how: str | None = None  # as last reported
        self._decode_problem: tuple[CodecParams, str] | None = None  # when no decoder opens
        self._want = Want.NOTHING
        self._measured: tuple[float, int, int, int] | None = None  # when, packets, bytes,
        # and packets the decoder dropped: at the start of the window
        self._settled = False  # the first window after connecting is over
        self._bit_rate: float | None = None
        self._behind = False  # the decoder dropped packets in the last window: too slow

    def output_like(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], np.dtype]:
        width, height = self.size
        return (height, width, 3), np.dtype(np.uint8)

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        shape, dtype = self.output_like(frames)
        out = np.empty(shape, dtype)
        return out if self.process_into(frames, out) else None

    def process_into(self, frames: list[np.ndarray], out: np.ndarray) -> bool:
        if self._scene is not None:
            if not self._pacer.wait(self.context.sleep):
                return False
            self._scene.render_into(out, self._frames)
            self._frames += 1
            return True
        if self._finished:
            self.context.sleep(1.0)
            return False
        feed = self._feed or self._connect()
        if feed is None or not self._healthy(feed):
            return False
        self._steer(feed)
        item = feed.take(POLL)
        if item is None:
            return False
        self._back()  # the first packet may come after _healthy looked: never a frame with a reason
        return self._decode_into(item, feed, out)

    def close(self) -> None:
        feed = getattr(self, "_feed", None)  # None, or never made: setup() may have failed
        if feed is not None:
            feed.stop()
            self._feed = None

    # -- connecting -----------------------------------------------------------------------

    def _connect(self) -> Feed | None:
        """Open the source (on the feed's thread, while the heartbeat goes on); None if it
        did not open, after waiting out the backoff."""
        from ..video.feed import Feed

        feed = Feed(
            self.source,
            self._settings,
            self.context.packets,
            pace_fps=None if self.source.live else self.fps,
            loop=self.config["loop"],
        )
        feed.want = self._policy.want(self.context.frames_wanted(), None, False)
        feed.start()
        give_up = self.config["timeout"] + self.config["stall_timeout"]
        while not feed.settled:
            if not self.context.sleep(0.02):
                feed.stop()
                return None
            if feed.silent_for() > give_up:
                self._lost(feed, f"no answer within {self.config['timeout']:g} s")
                return None
        if not feed.opened:
            self._lost(feed, feed.failure or "the source did not open")
            return None
        self._feed = feed
        self._decoder = None
        self._measured = None
        self._behind = False
        self.delivered_fps = None if self.source.live else feed.stream_fps
        self._report_delivery(feed)
        return feed

    def _healthy(self, feed: Feed) -> bool:
        """Whether the connection still delivers; if not, why, and wait to reconnect."""
        if feed.finished and not feed.backlog():  # its last frames first: then it is over
            self._finish(feed)
            return False
        if feed.finished:
            return True
        if feed.failure is not None or feed.ended:
            self._lost(feed, feed.failure or "the source stopped sending frames")
            return False
        stall = self.config["stall_timeout"]
        if self.source.live and feed.silent_for() > stall:
            self._lost(feed, f"no packet for {stall:g} s")
            return False
        if feed.packets:
            self._back()
        self._measure(feed)
        return True

    def _back(self) -> None:
        """The source delivers: its waiting reason goes, and the backoff starts over."""
        if self._reason is not None:
            self.context.log.info("source %s is back", self.source.show())
            self._set_reason(None)
            self._backoff = RETRY_FIRST

    def _lost(self, feed: Feed, why: str) -> None:
        """Drop the connection, say why, and wait out the backoff."""
        feed.stop()
        self._feed = None
        self._decoder = None
        self._set_reason(f"waiting for source {self.source.show()}: {why}")
        self.context.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self.config["retry_max"])

    def _finish(self, feed: Feed) -> None:
        feed.stop()
        self._feed = None
        self._finished = True
        self._set_reason(f"finished: {self.source.show()} played to its end (loop = false)")

    def _set_reason(self, reason: str | None) -> None:
        if reason != self._reason:
            if reason is not None:
                self.context.log.warning("%s", reason)
            self.context.waiting(reason)
            self._reason = reason

    # -- decoding -----------------------------------------------------------------------

    def _steer(self, feed: Feed) -> None:
        """Tell the feed what to hand over for decoding: nothing, keyframes or everything."""
        readers = self.context.frames_wanted()
        want = self._policy.want(readers, feed.keyframe_interval, feed.intra_only)
        feed.want = want
        if want is not self._want:
            self._want = want
            self._report_delivery(feed)

    def _decode_into(self, item: Item, feed: Feed, out: np.ndarray) -> bool:
        """Decode the packet if the policy says so, and convert the frame if it is due."""
        from ..video.decode import to_bgr

        backlog = feed.backlog()
        if self._want is Want.KEYFRAMES and not item.keyframe:
            return False  # handed over before the mode changed
        if not self._policy.decode_now(self._want, backlog):
            return False
        decoder = self._decoder_for(item, feed)
        if decoder is None:
            return False
        frames = decoder.decode(item.packet)
        self.decoded += 1
        if decoder.how != self._decoder_how:  # a hardware decoder gave up mid-stream
            self._report_delivery(feed)
        if not frames or not self._policy.convert_now(self._want, backlog):
            return False
        frame = frames[-1]
        to_bgr(frame, out)
        if (frame.width, frame.height) != self.delivered_size:
            self.delivered_size = (frame.width, frame.height)
            self._report_delivery(feed)
        return True

    def _decoder_for(self, item: Item, feed: Feed) -> Decoder | None:
        """The decoder of the item's generation, in the current mode; None if none opens."""
        from ..video.decode import Decoder

        keyframes_only = self._want is Want.KEYFRAMES
        decoder = self._decoder
        if decoder is not None and (decoder.params, decoder.keyframes_only) == (
            item.params,
            keyframes_only,
        ):
            return decoder
        if self._decode_problem is not None and self._decode_problem[0] == item.params:
            return None  # said so already: the packets still go out
        self._decoder, self._decode_problem = None, None
        try:
            self._decoder = Decoder(item.params, self.config["hwaccel"], keyframes_only)
        except Exception as exc:  # an FFmpeg without a decoder for this codec, say
            why = f"cannot decode {item.params.codec}: {exc}"
            self._decode_problem = (item.params, why)
            self.context.log.warning("%s", why)
        self._report_delivery(feed)
        return self._decoder

    # -- reporting ----------------------------------------------------------------------

    def _measure(self, feed: Feed) -> None:
        """A source's frame rate and bit rate, measured from its packets.

        The first window after connecting is thrown away: FFmpeg hands over at once what
        it read while it looked at the stream, and a server may send a burst at first.
        """
        now = time.monotonic()
        if self._measured is None:
            if feed.packets:
                self._measured = (now, feed.packets, feed.bytes, feed.dropped)
                self._settled = False
            return
        since, packets, size, dropped = self._measured
        window = MEASURE_SECONDS if self.delivered_fps is None else REMEASURE_SECONDS
        if now - since < window:
            return
        self._measured = (now, feed.packets, feed.bytes, feed.dropped)
        if not self._settled:
            self._settled = True
            return
        self._bit_rate = (feed.bytes - size) * 8 / (now - since)
        self._behind = (feed.dropped - dropped) * 100 > feed.packets - packets  # over 1 %
        if self.source.live:
            self.delivered_fps = (feed.packets - packets) / (now - since)
        self._report_delivery(feed)

    def _report_delivery(self, feed: Feed) -> None:
        """The status detail: what the source delivers, and what is decoded how."""
        params = feed.params
        size = (params.width, params.height) if params else self.delivered_size or (0, 0)
        codec = f" {params.codec}" if params else ""
        fps = f" at {self.delivered_fps:.3g} fps" if self.delivered_fps else ""
        bits = self._bit_rate or (params.bit_rate if params else 0)
        rate = f", {bits / 1e6:.2g} Mbit/s" if bits else ""
        resize = "" if size in (self.size, (0, 0)) else ", resizing"
        asked = f"asked {self.size[0]}x{self.size[1]} at {self.fps:g}{resize}"
        decoding = self._policy.describe(self._want, feed.keyframe_interval)
        self._decoder_how = self._decoder.how if self._decoder is not None else None
        if self._decode_problem is not None:
            decoding = self._decode_problem[1]
        elif self._decoder_how is not None and self._want is not Want.NOTHING:
            decoding += f" {self._decoder_how}"
            if self._behind:
                decoding += ", too slow for the stream: dropping groups of pictures"
        text = f"{size[0]}x{size[1]}{codec}{fps}{rate} ({asked}); {decoding}"
        if text != self._detail:
            self._detail = text
            self.context.detail(text)
            self.context.log.info("%s delivers %s", self.source.show(), text)

    def _report_testsrc(self) -> None:
        w, h = self.size
        self.context.detail(f"{w}x{h} at {self.fps:g} fps (asked {w}x{h} at {self.fps:g})")
