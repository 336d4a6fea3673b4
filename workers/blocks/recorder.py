"""The recorder block: its inputs side by side, to MJPEG .avi files and a latest.jpg.

The box records onto an SD card or a small disk, so the recorder is built to live with
little space:

- a new file every ``max_file_bytes`` or ``max_file_seconds`` (and when the picture
  changes size), named ``<block>-<date>-<time>-<n>.avi``; a file ends within the
  writer's 32 KiB buffer of ``max_file_bytes``;
- its own old files (that prefix, in ``directory``) deleted past ``max_total_bytes`` in
  all, or ``max_age_seconds`` of age; nothing else in the directory is touched;
- ``latest.jpg`` rewritten at most every ``snapshot_interval`` seconds (wear), and
  replaced atomically (temp file, fsync, rename), so a reader never sees half a picture;
- a full disk stops the recording, not the graph: the block keeps running, says why
  (``context.waiting``) and tries again every ``retry_interval`` seconds.

``directory`` defaults to ``recordings``, relative to the worker's working directory;
the daemon may give another default (the unit's state directory). Frames are thinned to
``fps``, the rate written into the files, so they play back in real time. OpenCV's own
MJPEG writer is used: it needs no FFmpeg, but it drops data silently on a full disk, so
the recorder checks the free space and that its file keeps growing.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..block import Block, Param, in_range
from ..picture import side_by_side

SNAPSHOT = "latest.jpg"
CLEANUP_EVERY = 60.0  # seconds between age checks while one file is being written
STALLED_WRITES = 64  # writes without the file growing that mean the writer is failing
MIN_FREE = 256 * 1024  # bytes kept free beyond two frames, for the file's index


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be 0 (no limit) or more, not {value}"


def _snapshot_interval(value: Any) -> str | None:
    if value == 0 or value >= 1:
        return None
    return f"must be 0 (off) or at least 1 second (the card wears out), not {value}"


class RecordingStopped(Exception):
    """Recording cannot go on for now (disk full, not writable); ``str()`` says why."""


class Recorder(Block):
    """A sink: records any number of inputs, side by side at the first input's height."""

    min_inputs = 1
    max_inputs = None
    has_output = False
    params = {
        "directory": Param(
            str,
            default="recordings",
            doc="where files go; relative to the worker's working directory unless absolute",
        ),
        "fps": Param(
            float,
            default=15.0,
            check=in_range(0.1, 120),
            doc="frames per second written; faster input is thinned",
        ),
        "quality": Param(int, default=80, check=in_range(1, 100), doc="JPEG quality"),
        "max_file_bytes": Param(
            int,
            default=256 * 1024**2,
            check=_not_negative,
            doc="start a new file past this size; 0 = no limit",
        ),
        "max_file_seconds": Param(
            float,
            default=600.0,
            check=_not_negative,
            doc="start a new file after this long; 0 = no limit",
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
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        problems = []
        if not str(params.get("directory", "recordings")).strip():
            problems.append("directory is empty")
        file_max, total_max = params.get("max_file_bytes", 0), params.get("max_total_bytes", 0)
        if file_max and total_max and file_max > total_max:
            problems.append(
                f"max_file_bytes ({file_max}) is above max_total_bytes ({total_max}):"
                " one file would not fit"
            )
        return problems

    def setup(self) -> None:
        self.directory = Path(self.p["directory"]).absolute()
        self.period = 1.0 / self.p["fps"]
        self.path: Path | None = None  # the file being written
        self._writer: cv2.VideoWriter | None = None
        self._frame_size: tuple[int, int] | None = None
        self._opened_at = 0.0
        self._file_bytes = 0
        self._stalled = 0
        self._largest_write = 0
        self._sequence = 0
        self._next_frame = 0.0
        self._next_snapshot = 0.0
        self._next_cleanup = 0.0
        self._paused_until: float | None = None
        self.reason: str | None = None

    def process(self, frames: list[np.ndarray]) -> None:
        now = time.monotonic()
        if self._paused_until is not None and now < self._paused_until:
            return
        snapshot_due, frame_due = self._snapshot_due(now), self._frame_due(now)
        if not (snapshot_due or frame_due):
            return  # input faster than fps: not even composed
        picture = side_by_side(frames)
        try:
            if snapshot_due:
                self._snapshot(picture)
            if frame_due:
                self._record(picture, now)
        except RecordingStopped as exc:
            self._stop(str(exc), now)
            return
        except OSError as exc:
            self._stop(_describe(exc, self.directory), now)
            return
        if self.reason is not None and self._writer is not None:
            self._resume()

    def close(self) -> None:
        self._close_file()

    def _snapshot_due(self, now: float) -> bool:
        interval = self.p["snapshot_interval"]
        if not interval or now < self._next_snapshot:
            return False
        self._next_snapshot = now + interval
        return True

    def _frame_due(self, now: float) -> bool:
        """Thins the input to ``fps``, allowing some jitter, without catch-up bursts."""
        if now < self._next_frame - 0.25 * self.period:
            return False
        self._next_frame = max(self._next_frame + self.period, now - self.period)
        return True

    # -- latest.jpg -----------------------------------------------------------------------

    def _snapshot(self, picture: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.p["quality"]])
        if ok:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.directory / SNAPSHOT, jpeg.tobytes())

    # -- video files ----------------------------------------------------------------------

    def _record(self, picture: np.ndarray, now: float) -> None:
        if self._writer is None or self._file_is_full(picture, now):
            self._start_file(picture, now)
        elif now >= self._next_cleanup:
            self._clean_up(now)
        self._check_free_space()
        assert self._writer is not None
        self._writer.write(picture)
        self._check_growth()

    def _file_is_full(self, picture: np.ndarray, now: float) -> bool:
        size = (picture.shape[1], picture.shape[0])
        max_bytes, max_seconds = self.p["max_file_bytes"], self.p["max_file_seconds"]
        return (
            size != self._frame_size
            or bool(max_bytes and self._file_bytes + self._largest_write > max_bytes)
            or bool(max_seconds and now - self._opened_at >= max_seconds)
        )

    def _start_file(self, picture: np.ndarray, now: float) -> None:
        self._close_file()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clean_up(now)
        height, width = picture.shape[:2]
        self._largest_write = max(self._largest_write, width * height * 3 // 8)  # a guess
        self._check_free_space()
        path = self._new_path()
        fourcc = cv2.VideoWriter.fourcc(*"MJPG")
        writer = cv2.VideoWriter(
            str(path), cv2.CAP_OPENCV_MJPEG, fourcc, self.p["fps"], (width, height)
        )
        if not writer.isOpened():
            writer.release()
            path.unlink(missing_ok=True)
            raise RecordingStopped(f"cannot create a video file in {self.directory}")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, self.p["quality"])
        self._writer, self.path, self._frame_size = writer, path, (width, height)
        self._opened_at, self._file_bytes, self._stalled = now, path.stat().st_size, 0
        self.context.log.info("recording to %s (%dx%d)", path, width, height)

    def _new_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:
            self._sequence += 1
            path = self.directory / f"{self.name}-{stamp}-{self._sequence:04d}.avi"
            if not path.exists():
                return path

    def _check_free_space(self) -> None:
        stat = os.statvfs(self.directory)
        free = stat.f_bavail * stat.f_frsize
        if free < 2 * self._largest_write + MIN_FREE:
            raise RecordingStopped(f"disk full in {self.directory} ({free // 1024} KiB free)")

    def _check_growth(self) -> None:
        """OpenCV's writer ignores write errors: a file that stops growing is failing."""
        assert self.path is not None
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:  # deleted under us: its space only returns once closed
            self.context.log.warning("%s was deleted while recording; starting another", self.path)
            self._close_file()
            return
        if size > self._file_bytes:
            self._largest_write = max(self._largest_write, size - self._file_bytes)
            self._file_bytes, self._stalled = size, 0
            return
        self._stalled += 1
        if self._stalled >= STALLED_WRITES:
            raise RecordingStopped(
                f"disk full? {self.path.name} stopped growing: the video writer is failing"
            )

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer, self._frame_size = None, None
        if self.path is not None and self.path.exists() and self.path.stat().st_size < 1024:
            self.path.unlink()  # a header at most: nothing worth keeping

    # -- keeping the directory within bounds ----------------------------------------------

    def _clean_up(self, now: float) -> None:
        """Delete this recorder's files past the age limit, then the oldest past the total."""
        self._next_cleanup = now + CLEANUP_EVERY
        max_age, max_total = self.p["max_age_seconds"], self.p["max_total_bytes"]
        files = self._own_files()
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if path == self.path and self._writer is not None:
                continue  # the file being written
            too_old = bool(max_age) and time.time() - mtime > max_age
            if not (too_old or (max_total and total > max_total)):
                continue
            path.unlink(missing_ok=True)
            total -= size
            self.context.log.info("deleted %s (%s)", path.name, "age" if too_old else "space")

    def _own_files(self) -> list[tuple[float, int, Path]]:
        """This recorder's files, oldest first, as (mtime, size, path).

        Only names this block writes: another recorder's files in the same directory,
        even one named "<this name>-something", are never touched.
        """
        own = re.compile(rf"{re.escape(self.name)}-\d{{8}}-\d{{6}}-\d+\.avi")
        files = []
        for path in self.directory.iterdir():
            if not own.fullmatch(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # deleted meanwhile
            files.append((stat.st_mtime, stat.st_size, path))
        return sorted(files, key=lambda file: (file[0], file[2].name))

    # -- stopping and resuming ------------------------------------------------------------

    def _stop(self, why: str, now: float) -> None:
        retry = self.p["retry_interval"]
        self._paused_until = now + retry
        try:
            self._close_file()
        except OSError:
            self._writer = None
        reason = f"recording stopped: {why}; trying again every {retry:g} s"
        if reason != self.reason:
            self.context.log.warning("%s", reason)
            self.context.waiting(reason)
            self.reason = reason

    def _resume(self) -> None:
        self.context.log.info("recording again in %s", self.directory)
        self.context.waiting(None)
        self.reason = None
        self._paused_until = None


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
