"""Keeping a recorder's folder within its limits: the oldest of its own segments go first.

The limits, each 0 for none: ``min_free_bytes`` free on the filesystem, at most
``max_total_bytes`` of this recorder's files, none older than ``max_age_seconds``. The
recorder calls ``make_room`` before each segment and about once a second while writing;
it deletes the oldest finished segments (never the one being written) until the limits
hold, and raises ``DiskFull`` when even that is not enough: the recording stops and the
recorder tries again later. The segments are known from an index in memory
(``segments.SegmentIndex``), read from the folder once at the start (so the limits hold
across restarts) and kept as segments are added and deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .segments import Namer, Segment, SegmentIndex

if TYPE_CHECKING:
    from ..block import Log

DELETIONS_PER_CALL = 64
"""Files deleted by one ``make_room`` at most: a limit lowered by a lot is met over a few
seconds, not in one long stall (the watchdog would take the block for hung)."""


class DiskFull(OSError):
    """Not enough room even without this recorder's old segments; ``str()`` says why.

    An OSError, as the failed write it prevents would have been."""


@dataclass(frozen=True)
class Limits:
    min_free_bytes: int = 0
    max_total_bytes: int = 0
    max_age_seconds: float = 0.0


class Storage:
    """One recorder's folder: new names, the index of its segments, and the limits."""

    def __init__(self, directory: Path, namer: Namer, limits: Limits, log: Log):
        self.directory = directory
        self.namer = namer
        self.limits = limits
        self.log = log
        self.index = SegmentIndex(namer.scan(directory))
        self.deleted = 0

    def new_path(self, start_ns: int, extension: str) -> Path:
        """A free name for a segment that starts at ``start_ns`` (the folder is made)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            path = self.directory / self.namer.name(start_ns, extension, n)
            if not path.exists():
                return path
            n += 1

    def add(self, segment: Segment) -> None:
        self.index.add(segment)

    def free_bytes(self) -> int:
        stat = os.statvfs(self.directory if self.directory.exists() else self.directory.parent)
        return stat.f_bavail * stat.f_frsize

    def make_room(self, now_ns: int, writing_bytes: int = 0) -> None:
        """Delete the oldest segments until the limits hold; DiskFull if they cannot.

        ``writing_bytes``: the size of the segment being written, which counts towards
        ``max_total_bytes`` but is never deleted.
        """
        limits = self.limits
        oldest_kept = now_ns - int(limits.max_age_seconds * 1e9)
        for _ in range(DELETIONS_PER_CALL):
            oldest = self.index.oldest()
            if oldest is None:
                break
            if limits.max_age_seconds and oldest.end_ns < oldest_kept:
                why = "older than max_age_seconds"
            elif (
                limits.max_total_bytes
                and self.index.total_bytes + writing_bytes > limits.max_total_bytes
            ):
                why = "max_total_bytes reached"
            elif limits.min_free_bytes and self.free_bytes() < limits.min_free_bytes:
                why = "min_free_bytes reached"
            else:
                break
            self._delete(self.index.pop_oldest(), why)
        else:
            return  # more to delete: the next call goes on
        if limits.min_free_bytes:
            free = self.free_bytes()
            if free < limits.min_free_bytes:
                raise DiskFull(
                    f"disk full in {self.directory}: {_mib(free)} free, min_free_bytes is"
                    f" {_mib(limits.min_free_bytes)}, and no older recording of this block is"
                    " left to delete"
                )

    def _delete(self, segment: Segment, why: str) -> None:
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass  # someone deleted it already: it is gone from the index all the same
        self.deleted += 1
        self.log.info("deleted %s (%s)", segment.name, why)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
