"""The recorder block: video in segments that a small disk can keep for days, and a latest.jpg.

What it writes (``codec``):

- ``copy`` (the default when its one input publishes packets: a camera with an encoded
  source): the camera's own H.264/H.265/MJPEG packets into fragmented MP4, without
  decoding or encoding anything;
- ``h264`` (the default otherwise): its inputs' frames, side by side, thinned to ``fps``
  and encoded with H.264 into fragmented MP4;
- ``mjpeg``: its inputs' frames as JPEGs into ``.avi`` files (OpenCV's writer), as the
  recorder did before segments.

Segments (``workers/video/segmenter.py``) are cut at keyframes every
``segment_seconds``, and wherever the stream breaks (a new resolution or codec, a
gap), named by their start time in UTC (``<block>-YYYYMMDDTHHMMSS.mmmZ.mp4``; see
``workers/video/segments.py``). Storage never fills (``workers/video/storage.py``): the
oldest of this recorder's own segments go first, to keep ``min_free_bytes`` free, at
most ``max_total_bytes``, none older than ``max_age_seconds``. A full disk stops the
recording, not the graph: the block keeps running, says why (``context.waiting``) and
tries again every ``retry_interval`` seconds. ``latest.jpg`` is replaced at most every
``snapshot_interval`` seconds (the card wears), atomically; in copy mode it is one
keyframe decoded now and then; with several inputs, each picture in it carries the name
of its input in its corner.

``directory`` defaults to ``recordings``; the daemon takes a relative one under its state
directory (``--state-dir``: ``/var/lib/pipelined/<instance>`` under systemd, else
``~/.local/state/pipelined/<instance>``), never where it was started: a graph run from a
clone does not record into the clone.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..block import Block, ConfigurationError, Kind, Param, in_range
from ..ipc.packets import CodecParams, Packet
from ..picture import labelled, side_by_side_whole
from ..video.segments import Namer, Segment
from ..video.storage import DiskFull, Limits, Storage

SNAPSHOT = "latest.jpg"
CODECS = ("auto", "copy", "h264", "mjpeg")
MODES = ("segments", "clips")
CLIP_SEGMENT_SECONDS = 3600.0
"""A clip is one file unless its stream breaks, or it goes on for more than an hour."""
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
STALLED_WRITES = 64  # .avi writes without the file growing that mean the writer is failing


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be 0 (no limit) or more, not {value}"


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"

    return check


def _triggers(value: Any) -> str | None:
    from ..events import KIND_RE
    from ..ipc.names import BLOCK_RE

    for trigger in value:
        block, _, kind = trigger.partition(":") if isinstance(trigger, str) else ("", "", "")
        if not BLOCK_RE.match(block) or (":" in str(trigger) and not KIND_RE.match(kind)):
            return f'must list "BLOCK" or "BLOCK:KIND" (motion, "detector:person"), not {trigger!r}'
    return None


def _snapshot_interval(value: Any) -> str | None:
    if value == 0 or value >= 1:
        return None
    return f"must be 0 (off) or at least 1 second (the card wears out), not {value}"


class RecordingStopped(Exception):
    """Recording cannot go on for now (disk full, not writable); ``str()`` says why."""


class Recorder(Block):
    """A sink: one camera's packets as they are, or any number of inputs side by side."""

    min_inputs = 1
    max_inputs = None
    has_output = False
    params = {
        "directory": Param(
            str,
            default="recordings",
            doc="where files go",
            state_path=True,
        ),
        "codec": Param(
            str,
            default="auto",
            check=_one_of(CODECS),
            doc="copy: the input's packets as they are (MP4); h264: encode frames (MP4);"
            " mjpeg: frames as JPEGs (.avi); auto: copy when the one input publishes"
            " packets, else h264",
        ),
        "segment_seconds": Param(
            float,
            default=10.0,
            check=in_range(1, 3600),
            doc="a new file at the first keyframe after this many seconds",
        ),
        "gap_seconds": Param(
            float,
            default=2.0,
            check=in_range(0.1, 3600),
            doc="packets this much later than the one before (a reconnect) start a new file",
        ),
        "fps": Param(
            float,
            default=15.0,
            check=in_range(0.1, 120),
            doc="h264 and mjpeg: frames per second written; faster input is thinned",
        ),
        "quality": Param(
            int, default=80, check=in_range(1, 100), doc="JPEG quality (mjpeg, latest.jpg)"
        ),
        "preset": Param(
            str, default="veryfast", check=_one_of(PRESETS), doc="h264: the x264 preset"
        ),
        "bit_rate": Param(
            int,
            default=2_000_000,
            check=in_range(50_000, 100_000_000),
            doc="h264: bits per second",
        ),
        "min_free_bytes": Param(
            int,
            default=256 * 1024**2,
            check=_not_negative,
            doc="keep at least this much free on the filesystem; 0 = no limit",
        ),
        "max_total_bytes": Param(
            int,
            default=2 * 1024**3,
            check=_not_negative,
            doc="delete the oldest files past this total; 0 = no limit",
        ),
        "max_age_seconds": Param(
            float,
            default=7 * 86400.0,
            check=_not_negative,
            doc="delete files older than this; 0 = no limit",
        ),
        "snapshot_interval": Param(
            float,
            default=1.0,
            check=_snapshot_interval,
            doc="seconds between latest.jpg updates; 0 = none",
        ),
        "retry_interval": Param(
            float,
            default=30.0,
            check=in_range(0.1, 3600),
            doc="seconds between attempts after the disk was full",
        ),
        "mode": Param(
            str,
            default="segments",
            check=_one_of(MODES),
            doc="segments: record all the time; clips: one file per event of the triggers,"
            " from preroll before it to postroll after it (copy only)",
        ),
        "triggers": Param(
            list,
            default=[],
            check=_triggers,
            doc='clips: the events that make one: "BLOCK" or "BLOCK:KIND"; empty: every'
            " event of every block",
        ),
        "preroll": Param(
            float,
            default=5.0,
            check=in_range(0, 60),
            doc="clips: seconds before the event (the input must keep that many)",
        ),
        "postroll": Param(
            float, default=5.0, check=in_range(0, 3600), doc="clips: seconds after its end"
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        problems = []
        if not str(params.get("directory", "recordings")).strip():
            problems.append("directory is empty")
        if params.get("mode") == "clips" and params.get("codec") not in ("auto", "copy"):
            problems.append(
                'mode = "clips" copies the camera\'s packets (the pre-roll is in its packet'
                f" wire): codec must be copy or auto, not {params.get('codec')!r}"
            )
        return problems

    @classmethod
    def input_kinds(cls, params: dict[str, Any], offered: Sequence[bool]) -> list[Kind]:
        """Copy takes the first input's packets (the loader refuses an input without
        any); auto copies when the one input has packets; h264 and mjpeg take frames."""
        codec = params.get("codec", "auto")
        copy = codec == "copy" or (codec == "auto" and len(offered) == 1 and offered[0])
        copy = copy or params.get("mode") == "clips"  # the loader says if it has no packets
        return ["packets" if copy and i == 0 else "frames" for i in range(len(offered))]

    # -- run time ---------------------------------------------------------------------

    def setup(self) -> None:
        self.directory = Path(self.config["directory"]).absolute()
        limits = Limits(
            self.config["min_free_bytes"],
            self.config["max_total_bytes"],
            self.config["max_age_seconds"],
        )
        try:
            self.storage = Storage(self.directory, Namer(self.name), limits, self.context.log)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {self.directory}: {exc.strerror}") from None
        self.context.log.info(
            "%d earlier segments in %s (%.1f MiB)",
            len(self.storage.index), self.directory, self.storage.index.total_bytes / 2**20,
        )  # fmt: skip
        self.period = 1.0 / self.config["fps"]
        self._packets: Any = None  # a PacketSegmenter, once the first packet or frame came
        self._encoder: Any = None  # frames -> packets (h264)
        self._avi: AviSegmenter | None = None  # frames -> .avi (mjpeg)
        self._next_frame = 0.0
        self._next_snapshot = 0.0
        self._paused_until: float | None = None
        self._refused: tuple[int, str] | None = None  # a generation no file can take, and why
        self.reason: str | None = None
        self._clips: Any = None  # a ClipCutter, in clip mode

    # -- packets (copy) ---------------------------------------------------------------

    def process_packet(self, packet: Packet, codec: CodecParams) -> None:
        from ..video.mux import MUXABLE, MuxError

        now = time.monotonic()
        if codec.codec not in MUXABLE:
            self._refuse(
                packet.generation,
                f"input {self._input()!r} sends {codec.codec!r} packets, which is not video"
                f" a recording can hold ({', '.join(MUXABLE)}); nothing is written",
            )
            return
        if self._refused is not None and self._refused[0] == packet.generation:
            return
        if self._snapshot_due(now, packet.keyframe):
            self._guard(lambda: self._snapshot_keyframe(packet, codec), now)
        if self._stopped(now):
            return
        if self.config["mode"] == "clips":
            cutter = self._clip_cutter()
            segments, take = cutter.segments, cutter.take
        else:
            segments = self._packet_segmenter()
            take = segments.take
        try:
            written = self._guard(lambda: take(packet, codec), now)
        except MuxError as exc:
            segments.finish("the stream cannot be written")
            self._refuse(packet.generation, f"input {self._input()!r}: {exc}")
            return
        if written:
            self.context.delivered()
        if written and (self.reason is not None or self._refused is not None):
            self._resume()

    def _refuse(self, generation: int, why: str) -> None:
        if self._refused != (generation, why):
            self._refused = (generation, why)
            self.context.log.warning("%s", why)
            self.context.waiting(why)
            self.reason = why

    def _input(self) -> str:
        return self.context.inputs[0] if self.context.inputs else "?"

    def _packet_segmenter(self, seconds: float | None = None) -> Any:
        if self._packets is None:
            from ..video.segmenter import PacketSegmenter

            self._packets = PacketSegmenter(
                self.storage,
                seconds or self.config["segment_seconds"],
                self.config["gap_seconds"],
                self.context.log,
                on_start=self._say_segment,
            )
        return self._packets

    # -- clips ------------------------------------------------------------------------

    def _clip_cutter(self) -> Any:
        if self._clips is None:
            from ..video.clips import ClipCutter

            segments = self._packet_segmenter(CLIP_SEGMENT_SECONDS)  # cut where the stream breaks
            self._clips = ClipCutter(
                segments, self.config["preroll"], self.config["postroll"], self._report_clip,
                self.context.log,
            )  # fmt: skip
        return self._clips

    def take_event(self, event: dict[str, Any]) -> None:
        """An event of the triggers (the daemon sends only those): maybe a new clip."""
        if self.config["mode"] != "clips":
            return
        rewind = self._clip_cutter().event(event)
        if rewind is not None and not self.context.rewind(rewind):
            self.context.log.info("nothing to rewind to yet: the clip starts at the next keyframe")

    def _report_clip(self, report: Any) -> None:
        self.context.clip(report.events, report.path, report.start, report.end)
        state = "writing" if report.end is None else "closed"
        self.context.detail(
            f"clip {Path(report.path).name} ({state}) for {len(report.events)} events"
        )

    def _say_segment(self, segment: Segment, codec: CodecParams) -> None:
        self.context.detail(f"{codec.codec} {codec.width}x{codec.height} -> {segment.name}")

    def _snapshot_keyframe(self, packet: Packet, codec: CodecParams) -> None:
        from ..video.snapshot import SnapshotError, decode_keyframe

        try:
            picture = decode_keyframe(packet.data, codec)
        except SnapshotError as exc:
            self.context.log.warning("no latest.jpg this time: %s", exc)
            return
        self._write_snapshot(picture)

    # -- frames (h264, mjpeg) ---------------------------------------------------------

    def process(self, frames: list[np.ndarray]) -> None:
        now = time.monotonic()
        schedule = (self._next_snapshot, self._next_frame)
        snapshot_due, frame_due = self._snapshot_due(now), self._frame_due(now)
        if not frame_due:
            self.context.skipped()  # thinned to fps, by design
        if not (snapshot_due or frame_due):
            return  # input faster than fps: not even composed
        several = snapshot_due and len(frames) > 1  # latest.jpg names each input
        shown = labelled(frames, self.context.inputs) if several else None
        picture = side_by_side_whole(frames, self.context.intact)  # checks both pictures
        if picture is None:  # the writer overwrote the frame while it was taken:
            self._next_snapshot, self._next_frame = schedule  # the next whole one is due
            return
        if snapshot_due:
            snapshot = picture if shown is None else shown
            self._guard(lambda: self._write_snapshot(snapshot), now)
        if not frame_due or self._stopped(now):
            return
        time_ns = time.time_ns()
        if self.config["codec"] == "mjpeg":
            written = self._guard(lambda: self._avi_segmenter().take(picture, time_ns), now)
        else:
            written = self._guard(lambda: self._encode(picture, time_ns), now)
        if written:
            self.context.delivered()
        if written and self.reason is not None:
            self._resume()

    def _frame_due(self, now: float) -> bool:
        """Thins the input to ``fps``, allowing some jitter, without catch-up bursts."""
        if now < self._next_frame - 0.25 * self.period:
            return False
        self._next_frame = max(self._next_frame + self.period, now - self.period)
        return True

    def _encode(self, picture: np.ndarray, time_ns: int) -> bool:
        if self._encoder is None:
            self._encoder = FrameEncoding(self._packet_segmenter(), self.config)
        return self._encoder.take(picture, time_ns)

    def _avi_segmenter(self) -> AviSegmenter:
        if self._avi is None:
            self._avi = AviSegmenter(self.storage, self.config, self.context.log)
        return self._avi

    # -- latest.jpg -------------------------------------------------------------------

    def _snapshot_due(self, now: float, keyframe: bool = True) -> bool:
        interval = self.config["snapshot_interval"]
        if not interval or not keyframe or now < self._next_snapshot:
            return False
        self._next_snapshot = now + interval
        return True

    def _write_snapshot(self, picture: np.ndarray) -> None:
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.config["quality"]]
        ok, jpeg = cv2.imencode(".jpg", picture, quality)
        if ok:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.directory / SNAPSHOT, jpeg.tobytes())

    # -- stopping and resuming --------------------------------------------------------

    def _guard(self, action: Any, now: float) -> Any:
        """Run ``action``; a full or unwritable disk stops the recording instead of the block."""
        try:
            return action()
        except (DiskFull, RecordingStopped) as exc:
            self._stop(str(exc), now)
        except OSError as exc:
            self._stop(_describe(exc, self.directory), now)
        return None

    def _stopped(self, now: float) -> bool:
        return self._paused_until is not None and now < self._paused_until

    def _stop(self, why: str, now: float) -> None:
        retry = self.config["retry_interval"]
        self._paused_until = now + retry
        self._close_files()
        reason = f"recording stopped: {why}; trying again every {retry:g} s"
        if reason != self.reason:
            self.context.log.warning("%s", reason)
            self.context.waiting(reason)
            self.reason = reason

    def _resume(self) -> None:
        self.context.log.info("recording again in %s", self.directory)
        self.context.waiting(None)
        self.reason = None
        self._refused = None
        self._paused_until = None

    def _close_files(self) -> None:
        """Close what is being written; a full disk must not keep it from closing."""
        for close in (self._close_encoder, self._close_packets, self._close_avi):
            try:
                close()
            except OSError as exc:
                self.context.log.warning("closing the recording failed: %s", exc)

    def _close_encoder(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.flush()

    def _close_packets(self) -> None:
        if self._clips is not None:
            self._clips.finish()
        elif self._packets is not None:
            self._packets.finish()

    def _close_avi(self) -> None:
        if self._avi is not None:
            self._avi.finish()

    def close(self) -> None:
        self._close_files()


class FrameEncoding:
    """Frames -> H.264 packets -> the packet segmenter: the copy path, fed by an encoder.

    Pictures are cropped to even sizes (4:2:0 needs them); a new size is a new encoder
    and a new generation, so it starts a new segment. Timestamps are the frames' wall
    clock, so the file plays in real time whatever the input's rate.
    """

    def __init__(self, segments: Any, params: dict[str, Any]):
        self.segments = segments
        self.config = params
        self.encoder: Any = None
        self.size: tuple[int, int] | None = None
        self.generation = 0
        self.number = 0
        self.start_ns = 0

    def take(self, picture: np.ndarray, time_ns: int) -> bool:
        height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
        if self.encoder is None or self.size != (width, height):
            self.flush()
            self._open(width, height, time_ns)
        return self._hand_on(self.encoder.encode(picture, time_ns))

    def _open(self, width: int, height: int, time_ns: int) -> None:
        from ..video.encode import Encoder
        from ..video.options import EncodeOptions

        options = EncodeOptions(preset=self.config["preset"], bit_rate=self.config["bit_rate"])
        self.encoder = Encoder(options, width, height, self.config["fps"])
        self.size, self.start_ns = (width, height), time_ns
        self.generation += 1

    def _hand_on(self, packets: list[Any]) -> bool:
        params = self.encoder.params
        tb = params.time_base
        written = False
        for p in packets:
            self.number += 1
            time_ns = self.start_ns + p.pts * tb[0] * 10**9 // tb[1]
            packet = Packet(
                self.number, p.data, p.pts, p.dts, p.duration, p.keyframe, self.generation,
                time_ns,
            )  # fmt: skip
            written = self.segments.take(packet, params) or written
        return written

    def flush(self) -> None:
        """The encoder's last packets into the segment, which is then closed."""
        if self.encoder is not None:
            encoder = self.encoder
            try:
                self._hand_on(encoder.flush())
            finally:
                self.encoder = None
                self.segments.finish()


class AviSegmenter:
    """Frames as JPEGs into ``.avi`` segments (OpenCV's MJPEG writer, which needs no FFmpeg).

    A new file every ``segment_seconds`` and when the picture changes size. OpenCV's
    writer drops data silently on a full disk, so a file that stops growing stops the
    recording.
    """

    def __init__(self, storage: Storage, params: dict[str, Any], log: Any):
        self.storage = storage
        self.config = params
        self.log = log
        self.writer: cv2.VideoWriter | None = None
        self.path: Path | None = None
        self.size: tuple[int, int] | None = None
        self.start_ns = self.last_ns = 0
        self._bytes = 0
        self._stalled = 0
        self._next_check = 0.0

    def take(self, picture: np.ndarray, time_ns: int) -> bool:
        size = (picture.shape[1], picture.shape[0])
        long_enough = time_ns - self.start_ns >= self.config["segment_seconds"] * 1e9
        if self.writer is None or size != self.size or long_enough:
            self.finish()
            self._start(size, time_ns)
        elif time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + 1.0
            self.storage.make_room(time.time_ns(), self._bytes)
        assert self.writer is not None
        self.writer.write(picture)
        self.last_ns = time_ns
        self._check_growth()
        return True

    def _start(self, size: tuple[int, int], time_ns: int) -> None:
        self.storage.make_room(time.time_ns())
        path = self.storage.new_path(time_ns, "avi")
        fourcc = cv2.VideoWriter.fourcc(*"MJPG")
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, fourcc, self.config["fps"], size)
        if not writer.isOpened():
            writer.release()
            path.unlink(missing_ok=True)
            raise RecordingStopped(f"cannot create a video file in {self.storage.directory}")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, self.config["quality"])
        self.writer, self.path, self.size = writer, path, size
        self.start_ns, self._bytes, self._stalled = time_ns, path.stat().st_size, 0
        self._next_check = time.monotonic() + 1.0
        self.log.info("recording to %s (mjpeg %dx%d)", path, *size)

    def _check_growth(self) -> None:
        """OpenCV's writer ignores write errors: a file that stops growing is failing."""
        assert self.path is not None
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:  # deleted under us: its space only returns once closed
            self.log.warning("%s was deleted while recording; starting another", self.path)
            self.finish()
            return
        if size > self._bytes:
            self._bytes, self._stalled = size, 0
            return
        self._stalled += 1
        if self._stalled >= STALLED_WRITES:
            raise RecordingStopped(
                f"disk full? {self.path.name} stopped growing: the video writer is failing"
            )

    def finish(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None or self.path is None:
            return
        writer.release()
        path = self.path
        if not path.exists():
            return
        size = path.stat().st_size
        if size < 1024:
            path.unlink()  # a header at most: nothing worth keeping
            return
        end_ns = self.last_ns + int(1e9 / self.config["fps"])
        os.utime(path, ns=(end_ns, end_ns))
        self.storage.add(Segment(self.start_ns, path.name, end_ns, size, path))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never half.

    Written to a temporary file beside it, flushed to the disk, then renamed over it.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _describe(exc: OSError, directory: Path) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full in {directory} ({exc.strerror})"
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"
