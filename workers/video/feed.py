"""One connection to a camera's source, read on its own thread.

The thread opens the source, then takes every packet as it arrives and

- publishes it on the camera's packet wire, as received, so that recording never waits
  for decoding (a codec's parameters are published first, as a new generation: at the
  first keyframe of each connection, and whenever the parameter sets in a keyframe
  change, as when a camera's resolution is changed);
- hands it to the camera's own thread for decoding, only as much as that thread says it
  wants (``want``): nothing, keyframes, or everything from a keyframe on. It keeps the
  packets since the last keyframe, so that decoding can start at once when a reader
  comes, rather than at the next keyframe. A decoder that falls behind a live source
  loses whole groups of pictures, never one packet in the middle of one: when a
  keyframe arrives while a quarter of the last group still waits, what waits goes and
  it goes on from the keyframe.

Everything the thread learns (opened, failed, how many packets) it leaves in attributes
for the camera's thread to read; it never calls into the block or the runtime. After
``stop()`` returns it writes nothing more to the wire, so the next connection's feed may
take over the writer at once. Timestamps of a looping file carry on across each loop.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import cast

import av
import av.error

from ..blocks.sources import Source
from ..ipc.packets import CodecParams, PacketTooLarge, PacketWriter
from .bitstream import annex_b, jpeg_size, parameter_sets, sequence_sets
from .pace import Pacer
from .policy import Want
from .source import OpenSettings, open_source, stream_params, video_stream, why_not

log = logging.getLogger("pipelined.video")

GOP_LIMIT = 600
"""Packets kept since the last keyframe for a quick start: 20 s at 30 fps."""
BACKLOG_LIMIT = 300
"""Packets waiting for the decoder beyond which it has fallen behind a live source."""


@dataclass(frozen=True)
class Item:
    """A packet for the decoder, with the parameters of the stream it belongs to."""

    packet: av.Packet
    params: CodecParams
    generation: int
    keyframe: bool


BEHIND = 0.25
"""The part of a group of pictures still waiting for the decoder when the next keyframe
arrives past which it is dropped: a decoder that only lost a moment (a busy box, a burst
from the network) catches up; one too slow for the stream is never more than about a
group and a quarter late."""


def behind(waiting: int, group: int) -> bool:
    """Whether a decoder with ``waiting`` packets when a group of ``group`` ends is behind."""
    return waiting > 0 and waiting >= BEHIND * group


class _Handoff:
    """Packets from the feed's thread to the decoder's, in order."""

    def __init__(self) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, items: list[Item], stopping: threading.Event, wait: bool) -> bool:
        """Queue ``items``; False if there is no room (a live source then drops them)."""
        with self._ready:
            while len(self._items) + len(items) > BACKLOG_LIMIT:
                if not wait:
                    self.dropped += len(self._items) + len(items)
                    self._items.clear()
                    return False
                if stopping.is_set():
                    return False
                self._ready.wait(0.1)
            self._items.extend(items)
            self._ready.notify_all()
            return True

    def restart(self, item: Item) -> None:
        """Drop what waits and queue ``item``, a keyframe: the decoder goes on from there."""
        with self._ready:
            self.dropped += len(self._items)
            self._items.clear()
            self._items.append(item)
            self._ready.notify_all()

    def clear(self) -> None:
        with self._ready:
            self._items.clear()
            self._ready.notify_all()

    def get(self, timeout: float) -> Item | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._ready.notify_all()
            return item

    def __len__(self) -> int:
        return len(self._items)


class Feed:
    """One connection: opened, read and (once stopped or failed) closed by its thread."""

    def __init__(
        self,
        source: Source,
        settings: OpenSettings,
        packets: PacketWriter | None,
        *,
        pace_fps: float | None = None,
        loop: bool = True,
    ):
        self.source = source
        self.settings = settings
        self.live = source.live
        self.loop = loop
        self._want = Want.NOTHING  # set by the camera's thread at any time
        # What the thread reports (read by the camera's thread).
        self.params: CodecParams | None = None  # of the newest generation
        self.generation = 0
        self.stream_fps: float | None = None  # what the stream's header says
        self.opened = False
        self.failure: str | None = None
        self.finished = False  # a file played to its end (loop = false)
        self.started = time.monotonic()
        self.last_packet: float | None = None
        self.packets = 0
        self.bytes = 0
        self.handed = 0  # packets handed over for decoding
        self.keyframe_interval: float | None = None  # seconds between the last two keyframes
        self.intra_only = False  # every packet a keyframe so far (MJPEG)

        self._writer = packets
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._pacer = Pacer(pace_fps) if pace_fps else None
        self._handoff = _Handoff()
        self._gop: list[Item] = []
        self._synced = False  # the decoder has every packet since the last keyframe
        self._given: Item | None = None  # the last keyframe handed over in keyframe mode
        self._base: CodecParams | None = None  # the stream's header, for this connection
        self._sets: frozenset[bytes] = frozenset()  # the SPS of the current generation
        self._last_key: tuple[int, float] | None = None  # (pts, arrival) of the last keyframe
        self._next_pts = 0  # where a packet without a timestamp goes
        self._shift = 0  # added to a file's timestamps after each loop
        self._warned_large = False
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)

    # -- the camera's side ---------------------------------------------------------------

    @property
    def want(self) -> Want:
        return self._want

    @want.setter
    def want(self, want: Want) -> None:
        """What to hand over from now on; packets waiting that are no longer wanted go."""
        if want is not self._want and want is not Want.EVERYTHING:
            self._handoff.clear()
        self._want = want

    def start(self) -> Feed:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; once this returns, the thread publishes nothing more."""
        with self._write_lock:
            self._stop.set()

    @property
    def settled(self) -> bool:
        """Opened, or failed to."""
        return self.opened or self.failure is not None or not self._thread.is_alive()

    @property
    def ended(self) -> bool:
        return not self._thread.is_alive()

    @property
    def dropped(self) -> int:
        """Packets the decoder lost for being too slow for the source."""
        return self._handoff.dropped

    def take(self, timeout: float) -> Item | None:
        """The next packet to decode, waiting up to ``timeout`` s."""
        item = self._handoff.get(timeout)
        self.handed += item is not None
        return item

    def backlog(self) -> int:
        """Packets waiting for the decoder."""
        return len(self._handoff)

    def silent_for(self) -> float:
        """Seconds since the last packet (or since the connection began)."""
        return time.monotonic() - (self.last_packet or self.started)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        began = time.monotonic()
        try:
            container = open_source(self.source, self.settings)
        except Exception as exc:
            self.failure = why_not(exc, self.source, self.settings, time.monotonic() - began)
            return
        try:
            stream = video_stream(container)
            self._base = stream_params(stream)
            rate = stream.average_rate or stream.guessed_rate
            self.stream_fps = float(rate) if rate else None
            self.opened = True
            self._read(container, stream)
        except av.error.ExitError:
            self.failure = f"no packet for {self.settings.read_timeout:g} s"
        except Exception as exc:
            self.failure = self._explain(exc)
        finally:
            container.close()

    def _explain(self, exc: Exception) -> str:
        if not self.opened:
            return why_not(exc, self.source, self.settings, 0.0)
        if isinstance(exc, av.error.FFmpegError):
            return f"the source stopped sending frames ({exc.strerror or type(exc).__name__})"
        log.exception("reading %s failed", self.source.show())
        return f"reading failed: {type(exc).__name__}"

    def _read(self, container: av.container.InputContainer, stream: av.video.VideoStream) -> None:
        while not self._stop.is_set():
            before = self.packets
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                if packet.size:  # the empty one at the end only flushes a decoder
                    self._take(packet)
            if self._stop.is_set():
                return
            if self.live:
                self.failure = "the source stopped sending frames"
                return
            if self.packets == before:
                self.failure = "the file has no video frames"
                return
            if not self.loop:
                self.finished = True
                return
            self._shift = self._next_pts  # timestamps go on where the last loop ended
            container.seek(0, stream=stream)

    def _take(self, packet: av.Packet) -> None:
        """One packet from the source: its timestamps, its generation, the wire, the decoder."""
        keyframe = packet.is_keyframe
        data = memoryview(packet)
        if self.params is None and not keyframe:
            self.last_packet = time.monotonic()
            return  # nothing before the first keyframe can be decoded or recorded
        pts, dts, duration = self._timestamps(packet)
        if keyframe:
            self._note_keyframe(pts, packet.time_base)
            self._check_params(data)
        if self._pacer is not None and not self._pacer.wait(self._sleep):
            return
        if not self._publish(data, pts, dts, duration, keyframe):
            return
        self.intra_only = keyframe and (self.intra_only or self.packets == 0)
        self.packets += 1
        self.bytes += len(data)
        self.last_packet = time.monotonic()
        assert self.params is not None, "set at the first keyframe, before any packet goes on"
        self._offer(Item(packet, self.params, self.generation, keyframe))

    def _timestamps(self, packet: av.Packet) -> tuple[int, int, int]:
        """pts, dts and duration, with gaps filled: an RTSP camera's first packet often has
        none, and a recorder needs every one."""
        duration = packet.duration or 0
        if not duration and self.stream_fps and packet.time_base:
            duration = max(1, round(1 / (self.stream_fps * packet.time_base)))
        pts = packet.pts if packet.pts is not None else packet.dts
        dts = packet.dts if packet.dts is not None else pts
        if pts is None or dts is None:
            pts = dts = self._next_pts - self._shift
        pts += self._shift
        dts += self._shift
        self._next_pts = max(self._next_pts, pts + duration)
        return pts, dts, duration

    def _note_keyframe(self, pts: int, time_base: Fraction | None) -> None:
        now = time.monotonic()
        if self._last_key is not None:
            last_pts, last_at = self._last_key
            seconds = float((pts - last_pts) * time_base) if time_base else 0.0
            self.keyframe_interval = seconds if seconds > 0 else now - last_at
        self._last_key = (pts, now)

    # -- codec parameters ----------------------------------------------------------------

    def _check_params(self, packet: memoryview) -> None:
        """Publish a new generation at the first keyframe, and when the stream changes."""
        base = self._base
        assert base is not None
        if base.codec == "mjpeg":  # every packet a picture with its own header
            size = jpeg_size(packet)
            if self.params is None or (size and size != (self.params.width, self.params.height)):
                width, height = size or (base.width, base.height)
                self._new_generation(replace(base, width=width, height=height))
            return
        data = bytes(packet)
        sets = parameter_sets(base.codec, data)
        sps = sequence_sets(base.codec, sets)
        if self.params is None:
            header = parameter_sets(base.codec, base.extradata)
            if not header and sets:  # a V4L2 camera: the headers come with the picture
                base = replace(base, extradata=annex_b(sets))
            self._sets = sps or sequence_sets(base.codec, header)
            self._new_generation(self._sized(base, data))
        elif sps and sps != self._sets:  # a new SPS: new resolution or profile
            self._sets = sps
            changed = replace(self.params, extradata=annex_b(sets))
            self._new_generation(self._sized(changed, data, parse=True))

    def _sized(self, params: CodecParams, data: bytes, parse: bool = False) -> CodecParams:
        """``params`` with the picture size that ``data``'s headers give, when needed."""
        if not parse and params.width and params.height:
            return params
        parser = cast(av.VideoCodecContext, av.CodecContext.create(params.codec, "r"))
        try:
            parser.parse(data)
            parser.parse(None)
        except av.error.FFmpegError:
            return params
        if parser.width and parser.height:
            return replace(params, width=parser.width, height=parser.height)
        return params

    def _new_generation(self, params: CodecParams) -> None:
        with self._write_lock:
            if self._stop.is_set():
                return
            if self._writer is not None and params.codec != "rawvideo":
                self.generation = self._writer.set_params(params)
            else:
                self.generation += 1
            self.params = params
        self._synced = False
        log.info(
            "%s: %s %dx%d (generation %d)",
            self.source.show(), params.codec, params.width, params.height, self.generation,
        )  # fmt: skip

    # -- out -----------------------------------------------------------------------------

    def _publish(self, data: memoryview, pts: int, dts: int, duration: int, key: bool) -> bool:
        """The packet onto the wire, unless the feed was stopped; False if it was."""
        with self._write_lock:
            if self._stop.is_set():
                return False
            if self._writer is None or self.params is None or self.params.codec == "rawvideo":
                return True
            try:
                self._writer.write(data, pts=pts, dts=dts, duration=duration, keyframe=key)
            except PacketTooLarge as exc:
                if not self._warned_large:
                    log.warning("%s: %s", self.source.show(), exc)
                    self._warned_large = True
        return True

    def _offer(self, item: Item) -> None:
        """The packet to the decoder, if it wants it; whole groups of pictures only."""
        last_gop = len(self._gop)
        if item.keyframe:
            self._gop = [item]
        elif len(self._gop) < GOP_LIMIT:
            self._gop.append(item)
        want = self.want
        if want is Want.NOTHING:
            self._synced = False
            return
        if want is Want.KEYFRAMES:  # the newest keyframe, once: at once when asked
            self._synced = False
            head = self._gop[0] if self._gop and self._gop[0].keyframe else None
            if head is not None and head is not self._given:
                self._given = head
                self._handoff.put([head], self._stop, wait=not self.live)
            return
        if self._synced and item.keyframe and self.live and behind(len(self._handoff), last_gop):
            # A new group of pictures begins while much of the last still waits: the
            # decoder is too slow for the source. Rather than fall further behind, it
            # goes on from this keyframe.
            self._handoff.restart(item)
            return
        if self._synced:
            batch = [item]
        elif self._gop and self._gop[0].keyframe and len(self._gop) < GOP_LIMIT:
            batch = list(self._gop)  # start at the last keyframe: a picture at once
        else:
            return
        self._synced = self._handoff.put(batch, self._stop, wait=not self.live)

    def _sleep(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)
