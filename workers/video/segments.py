"""A recorder's files: how they are named, found, and kept in order in memory.

A segment is named by the wall-clock time (UTC) of its first picture, to the
millisecond: ``<block>-YYYYMMDDTHHMMSS.mmmZ.mp4`` (``.avi`` for MJPEG), with ``-2``,
``-3``… before the extension in the rare case that name is taken. Names sort in time
order, say their time zone, and name their block: a recorder only ever lists or
deletes files that match its own pattern, never another block's (``cam`` does not
match ``cam-2``'s files: after ``cam-`` comes a date) nor anything else in the folder.
A segment's end is its file's modification time: the recorder sets it to the end of
the last picture when it closes the file, and while a file is written (or after a
crash) it is the time its last fragment landed. Files of the recorder before segments
(``<block>-YYYYMMDD-HHMMSS-NNNN.avi``, local time) are recognised too, so that they
age out like the rest.

Nothing here imports PyAV or OpenCV: the daemon lists recordings with it.
"""

from __future__ import annotations

import bisect
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = ("mp4", "avi")
_STAMP = "%Y%m%dT%H%M%S"
_SEGMENT = r"(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z(?:-(?P<n>\d{1,6}))?\.(?P<ext>mp4|avi)"
_LEGACY = r"(?P<date>\d{8})-(?P<time>\d{6})-(?P<seq>\d+)\.avi"


@dataclass(frozen=True, order=True)
class Segment:
    """One file of a recorder: its times (ns since the epoch, UTC), size and path."""

    start_ns: int
    name: str
    end_ns: int
    size: int
    path: Path

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


class Namer:
    """The file names of one block: makes new ones, recognises its own."""

    def __init__(self, block: str):
        self.block = block
        prefix = re.escape(block) + "-"
        self._own = re.compile(prefix + _SEGMENT)
        self._legacy = re.compile(prefix + _LEGACY)

    def name(self, start_ns: int, extension: str, n: int = 1) -> str:
        """The name of a segment that starts at ``start_ns``; ``n`` > 1 when it is taken."""
        when = datetime.datetime.fromtimestamp(start_ns // 1_000_000_000, datetime.UTC)
        ms = start_ns // 1_000_000 % 1000
        suffix = f"-{n}" if n > 1 else ""
        return f"{self.block}-{when.strftime(_STAMP)}.{ms:03d}Z{suffix}.{extension}"

    def start_ns(self, name: str) -> int | None:
        """When the file ``name`` starts, if it is one of this block's; else None."""
        match = self._own.fullmatch(name)
        if match is not None:
            when = datetime.datetime.strptime(match["stamp"], _STAMP)
            seconds = int(when.replace(tzinfo=datetime.UTC).timestamp())
            return seconds * 1_000_000_000 + int(match["ms"]) * 1_000_000
        match = self._legacy.fullmatch(name)
        if match is not None:  # local time, as the old recorder wrote it
            try:
                when = datetime.datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S")
            except ValueError:
                return None
            return int(when.timestamp()) * 1_000_000_000
        return None

    def scan(self, directory: Path) -> list[Segment]:
        """This block's segments in ``directory``, oldest first; [] if there is none."""
        return sorted(self._entries(directory))

    def _entries(self, directory: Path) -> Iterator[Segment]:
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                start = self.start_ns(entry.name)
                if start is None:
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                if not entry.is_file(follow_symlinks=False):
                    continue
                end = max(start, stat.st_mtime_ns)
                yield Segment(start, entry.name, end, stat.st_size, Path(entry.path))


class SegmentIndex:
    """A recorder's finished segments in memory, oldest first, with their total size.

    Built once from the folder when the recorder starts, then kept as segments are added
    and deleted: pruning never walks the folder again.
    """

    def __init__(self, segments: list[Segment] | None = None):
        self._segments = sorted(segments or [])
        self.total_bytes = sum(s.size for s in self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    def add(self, segment: Segment) -> None:
        bisect.insort(self._segments, segment)  # at the end, unless the clock went back
        self.total_bytes += segment.size

    def oldest(self) -> Segment | None:
        return self._segments[0] if self._segments else None

    def pop_oldest(self) -> Segment:
        segment = self._segments.pop(0)
        self.total_bytes -= segment.size
        return segment
