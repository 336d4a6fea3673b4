"""What both kinds of wire share: one segment and a doorbell per reader, as one object.

A frame wire (wire.py) and a packet wire (packets.py) lay out their rings differently, but
both start with the same two words, a magic number and a layout version, and both are
made, attached and removed the same way: the daemon creates the segment and one
semaphore per reader slot, writes the layout and then, last, the magic number; a worker
attaches, checks the magic number (acquire, so the layout under it is whole) and the
version, and reads the layout back. A ``Ring`` is that handle, whatever the layout; the
kind says what to call it in messages and which names its parts have.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

import posix_ipc

from . import _atomics
from .names import SHM_DIR, RunNames
from .segment import (
    NoRoom,
    Segment,
    create_semaphore,
    open_semaphore,
    unlink_segment,
    unlink_semaphore,
)

PAGE = 4096
LINE = 64  # one cache line per independently written record
MAGIC_AT, VERSION_AT = 0, 8
"""Every ring's first two words; the rest of its layout line is its own."""
READER_PID_AT = 0
"""In each reader's line, the first word: the pid of the process reading at that slot."""


class RingLayout(Protocol):
    @property
    def readers(self) -> int: ...

    @property
    def total(self) -> int: ...

    def reader(self, index: int) -> int: ...


L = TypeVar("L", bound=RingLayout)


@dataclass(frozen=True)
class RingKind:
    """One kind of wire: its noun, magic number, layout version, error and part names."""

    noun: str
    magic: int
    version: int
    error: type[Exception]
    segment_name: Callable[[RunNames, str], str]
    doorbell_name: Callable[[RunNames, str, int], str]
    no_room_advice: str


def align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class Ring(Generic[L]):
    """An open wire of one kind: its segment, its layout and the names of its parts."""

    def __init__(self, kind: RingKind, names: RunNames, block: str, segment: Segment, layout: L):
        self.kind = kind
        self.names = names
        self.block = block
        self.segment = segment
        self.mm = segment.mm
        self.layout = layout

    @classmethod
    def create(
        cls,
        kind: RingKind,
        names: RunNames,
        block: str,
        layout: L,
        header: Iterable[tuple[int, int]],
        group: int | None = None,
    ) -> Self:
        """Make the segment and the doorbells, write the layout words of ``header``
        (offset, value), then the magic number: all of it, or nothing left behind."""
        bells = [kind.doorbell_name(names, block, i) for i in range(layout.readers)]
        try:
            segment = Segment.create(kind.segment_name(names, block), layout.total, group)
        except NoRoom as exc:
            raise kind.error(
                f"no room in {SHM_DIR} for {kind.noun} {block!r}: it needs {exc.needed:,}"
                f" bytes and {exc.free:,} are free. {kind.no_room_advice}"
            ) from None
        try:
            for bell in bells:
                create_semaphore(bell, group)
        except BaseException:
            segment.close()
            _unlink(segment.name, bells)
            raise
        _atomics.store_relaxed(segment.mm, VERSION_AT, kind.version)
        for offset, value in header:
            _atomics.store_relaxed(segment.mm, offset, value)
        _atomics.store_release(segment.mm, MAGIC_AT, kind.magic)  # last: attachers check it
        return cls(kind, names, block, segment, layout)

    @classmethod
    def attach(
        cls,
        kind: RingKind,
        names: RunNames,
        block: str,
        read_layout: Callable[[Callable[[int], int]], L],
        populate: bool = False,
    ) -> Self:
        """Map an existing wire and check it is one, of this version, as big as it says."""
        name = kind.segment_name(names, block)
        try:
            segment = Segment.attach(name, populate=populate)
        except FileNotFoundError:
            raise kind.error(
                f"{kind.noun} {block!r} does not exist ({SHM_DIR}{name} is missing):"
                " is the daemon of this run still up?"
            ) from None
        except ValueError:
            raise kind.error(f"{kind.noun} {block!r} is not set up yet (0 bytes)") from None
        mm = segment.mm
        if len(mm) < PAGE or _atomics.load_acquire(mm, MAGIC_AT) != kind.magic:
            segment.close()
            raise kind.error(f"{SHM_DIR}{name} is not a pipelined {kind.noun}, or not set up yet")
        version = _atomics.load_relaxed(mm, VERSION_AT)
        if version != kind.version:
            segment.close()
            raise kind.error(
                f"{kind.noun} {block!r} has layout version {version}; this pipelined reads"
                f" version {kind.version}. Restart the daemon so that every worker runs one"
                " version."
            )
        layout = read_layout(lambda offset: _atomics.load_relaxed(mm, offset))
        if len(mm) < layout.total:
            segment.close()
            raise kind.error(
                f"{kind.noun} {block!r} is {len(mm)} bytes, its layout needs {layout.total}"
            )
        return cls(kind, names, block, segment, layout)

    @property
    def label(self) -> str:
        return f"{self.kind.noun} {self.block!r}"

    def doorbell(self, reader: int) -> str:
        return self.kind.doorbell_name(self.names, self.block, reader)

    def u64(self, offset: int) -> int:
        return _atomics.load_relaxed(self.mm, offset)

    def reader_rows(self, fields: Mapping[str, int]) -> list[dict[str, int]]:
        """Each reader line's words, by name (``fields``: name -> offset in the line)."""
        rows = []
        for i in range(self.layout.readers):
            base = self.layout.reader(i)
            rows.append({name: self.u64(base + at) for name, at in fields.items()})
        return rows

    def open_doorbells(self) -> list[posix_ipc.Semaphore]:
        """Every reader's doorbell, for the writer to ring."""
        return [open_semaphore(self.doorbell(i)) for i in range(self.layout.readers)]

    def take_reader_slot(self, reader: int) -> posix_ipc.Semaphore:
        """Read at slot ``reader``: its doorbell, and our pid in its line for status.
        A slot the owner never made closes the ring and raises."""
        if not 0 <= reader < self.layout.readers:
            self.close()
            raise self.kind.error(
                f"{self.label} has reader slots 0..{self.layout.readers - 1}, not {reader}"
            )
        bell = open_semaphore(self.doorbell(reader))
        _atomics.store_relaxed(self.mm, self.layout.reader(reader) + READER_PID_AT, os.getpid())
        return bell

    def leave_reader_slot(self, reader: int, bell: posix_ipc.Semaphore) -> None:
        """Give slot ``reader`` back and close the ring."""
        _atomics.store_relaxed(self.mm, self.layout.reader(reader) + READER_PID_AT, 0)
        bell.close()
        self.close()

    def unlink(self) -> None:
        """Remove the segment and its doorbells; processes that have them mapped keep them."""
        bells = [self.doorbell(i) for i in range(self.layout.readers)]
        _unlink(self.kind.segment_name(self.names, self.block), bells)

    def close(self) -> None:
        self.segment.close()


def ring_doorbells(bells: Iterable[posix_ipc.Semaphore]) -> None:
    """The writer's part, after its head store: wake each reader that sleeps.

    The full fence orders the head store before the doorbell loads, as the reader's
    orders its decrement before its head load (wire.py's top says why both are needed)."""
    _atomics.fence_full()
    for bell in bells:
        if bell.value == 0:
            bell.release()


def wait_doorbell(bell: posix_ipc.Semaphore, deadline: float | None) -> bool:
    """The reader's part: sleep until the writer rings (True), a signal handler ran
    (True: look again, and let it act), or ``deadline`` passed (False)."""
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is not None and remaining <= 0:
        return False
    try:
        bell.acquire(remaining)
        _atomics.fence_full()  # our doorbell's decrement before the head load
    except posix_ipc.BusyError:
        return False
    except posix_ipc.SignalError:
        pass
    return True


class RingOwner(Generic[L]):
    """The owner's handle on a wire (the daemon's): it made it, it says what is in it,
    and it removes it."""

    def __init__(self, ring: Ring[L]):
        self._ring = ring

    @property
    def layout(self) -> L:
        return self._ring.layout

    def unlink(self) -> None:
        """Remove the segment and its doorbells; processes that have them mapped keep them."""
        self._ring.unlink()

    def close(self) -> None:
        self._ring.close()


def _unlink(segment: str, semaphores: list[str]) -> None:
    """Unlink what exists of a wire; a part already gone is no error (another got there)."""
    unlink_segment(segment)
    for name in semaphores:
        unlink_semaphore(name)
