"""The wire: one writer to any number of readers, over POSIX shared memory.

A wire is one segment: a header page, then a ring of slots, each big enough for the
largest frame. The writer never waits for anyone: it writes frame ``f`` into slot
``f % slots`` and moves on. A reader takes the newest frame; one that falls behind skips
frames and counts them as dropped. Nothing is ever locked, so a process that dies at
any instant leaves nothing held.

Each reader has a POSIX semaphore used only as a doorbell. The writer posts it only
while it is at zero, so a dead reader's count stays at one and costs nothing; a live
reader waits on it with a timeout.

Memory ordering (why this is right on ARM, not only on x86). Each slot has a sequence
word ``seq``: ``2f - 1`` while frame ``f`` is being written, ``2f`` once it is complete.
The ``_atomics`` helper gives real acquire/release operations and fences (Python and
numpy emit none; on ARM a plain store may become visible after a later one):

writer, frame f:                          reader:
  store_relaxed(seq, 2f - 1)                h  = load_acquire(head)
  fence_release()                           s1 = load_acquire(seq of slot h)  (must be 2h)
  ...pixels and metadata (numpy)...         ...metadata and pixels (numpy)...
  store_release(seq, 2f)                    fence_acquire()
  store_release(head, f)                    s2 = load_relaxed(seq)            (must be s1)

- If the reader sees ``head == f``, the release store of ``head`` synchronises with its
  acquire load, so the slot's ``seq = 2f`` and the pixels before it are visible too.
- If any pixel the reader copied came from a later writer's frame, then by the fence
  pairing (release fence after the odd store, acquire fence before the re-read) the
  re-read sees that odd ``seq`` or a later value, never ``s1``: the frame is discarded.
- A zero-copy reader keeps a view of the slot and re-checks ``seq`` (fence, then load)
  after it has worked on it: ``Frame.intact()``.
The helper's calls are opaque to the compiler and to CPython, so no copy moves across
them; the fences are the hardware instructions (``dmb ish`` on ARM64).
The semaphores also order memory (a post/wait pair is a release/acquire), but a reader
that never waits (it has a frame ready) gets no such pairing, hence the seqlock.

The doorbell itself is a store-buffering pattern: the writer stores ``head`` and then
loads the doorbell's count (it posts only at zero); the reader's wait decrements the
count and then it loads ``head``. Without a full fence between the store and the load on
each side, both may read the other's old value (store buffers: on ARM, and on x86 too):
the writer sees the count still at one and does not post, the reader sees the old head
and sleeps with a frame waiting, until its timeout. ``fence_full`` (``dmb ish``, ``mfence``)
after the writer's head store and after the reader's wait rules that out: in any order
of the two fences, one side sees the other's store. Both halves live in ring.py
(``ring_doorbells``, ``wait_doorbell``), for the packet wire's doorbells too.

The segment and its doorbells are made by ``segment``: 0600 (0660 with a group), memory
reserved up front, so a full /dev/shm is an error when the wire is made and never a
SIGBUS later, and mapped with MAP_POPULATE, so the first frame does not pay for page
faults.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import numpy as np
import numpy.typing as npt
import posix_ipc

from . import _atomics
from .names import RunNames
from .ring import LINE, PAGE, Ring, RingKind, RingOwner, align, ring_doorbells, wait_doorbell

MAGIC = int.from_bytes(b"PLDWIRE\0", "little")
LAYOUT_VERSION = 1
MAX_DIMS = 4

# Header word offsets (bytes). Line 0: the layout, written once (ring.py: magic, version).
_SLOTS, _SLOT_BYTES, _READERS, _STRIDE, _DATA = (8 * i for i in range(2, 7))
# Line 1: the writer.
_HEAD, _WRITER_PID = LINE, LINE + 8
# Then one line per reader, then one line per slot.
_READER_TABLE = 2 * LINE
_R_PID, _R_FRAMES, _R_DROPPED, _R_LAPPED = 0, 8, 16, 24
_S_SEQ, _S_TIME, _S_NBYTES, _S_NDIM, _S_SHAPE, _S_DTYPE = 0, 8, 16, 24, 32, 48  # shape: 4 x u32
_DESCRIPTION = struct.Struct("=QQ4I8s")  # nbytes, ndim, shape, dtype: the slot's bytes 16..56
_DESC_START, _DESC_END = _S_NBYTES, _S_NBYTES + _DESCRIPTION.size
_VIEW_CACHE = 64  # frame descriptions a reader remembers the array view of
TRIES = 64
"""Attempts at one frame that the writer overwrites before a reader with no deadline
waits for the doorbell again instead of spinning."""


class WireError(Exception):
    """A wire cannot be created, attached or used as asked."""


class FrameTooLarge(WireError):
    """A frame bigger than the wire's slots."""


_FrameKey = tuple[tuple[int, ...], np.dtype[Any]]
"""A frame's shape and dtype: what a slot's description says."""


class ReaderStats(TypedDict):
    attached_pid: int
    frames: int
    dropped: int
    lapped: int


class WireStats(TypedDict):
    frames: int
    writer_pid: int
    readers: list[ReaderStats]


@dataclass(frozen=True)
class Layout:
    """Where everything lives in a wire's segment."""

    slots: int
    slot_bytes: int
    readers: int

    @property
    def slot_table(self) -> int:
        return _READER_TABLE + LINE * self.readers

    @property
    def data(self) -> int:
        return align(self.slot_table + LINE * self.slots, PAGE)

    @property
    def stride(self) -> int:
        return align(max(self.slot_bytes, 1), PAGE)

    @property
    def total(self) -> int:
        return self.data + self.stride * self.slots

    def reader(self, index: int) -> int:
        return _READER_TABLE + LINE * index

    def slot(self, index: int) -> int:
        return self.slot_table + LINE * index

    def slot_data(self, index: int) -> int:
        return self.data + self.stride * index


def wire_bytes(slot_bytes: int, readers: int, slots: int = 4) -> int:
    """How much /dev/shm a wire takes."""
    return Layout(slots, slot_bytes, readers).total


@dataclass
class Frame:
    """A frame as a reader got it: pixels, sequence number and capture time.

    From ``read()`` the array is a read-only view into the wire's slot: call
    ``intact()`` after working on it to learn whether the writer overwrote it meanwhile
    (then throw the result away). From ``read_copy()`` it is the reader's own copy.
    """

    array: np.ndarray
    seq: int
    timestamp_ns: int
    _mm: mmap.mmap | None = None
    _seq_offset: int = 0
    copied: bool = False

    def intact(self) -> bool:
        """Whether the array is still the frame that was read: a copy always is."""
        return self.copied or not self.slot_reused()

    def slot_reused(self) -> bool:
        """Whether the writer has begun another frame in this frame's slot since it was
        read. For a copy: whether a zero-copy view of it would have been torn by now."""
        if self._mm is None:
            return False
        _atomics.fence_acquire()
        return _atomics.load_relaxed(self._mm, self._seq_offset) != 2 * self.seq


_KIND = RingKind(
    noun="wire",
    magic=MAGIC,
    version=LAYOUT_VERSION,
    error=WireError,
    segment_name=RunNames.wire,
    doorbell_name=RunNames.doorbell,
    no_room_advice="Make frames smaller, use fewer slots, or give /dev/shm more space.",
)


def _read_layout(u: Callable[[int], int]) -> Layout:
    return Layout(slots=u(_SLOTS), slot_bytes=u(_SLOT_BYTES), readers=u(_READERS))


def _attach(names: RunNames, block: str) -> Ring[Layout]:
    return Ring.attach(_KIND, names, block, _read_layout, populate=True)


class Wire(RingOwner[Layout]):
    """The owner's handle: creates the segment and the doorbells, and unlinks them."""

    @classmethod
    def create(
        cls,
        names: RunNames,
        block: str,
        slot_bytes: int,
        readers: int,
        slots: int = 4,
        group: int | None = None,
    ) -> Wire:
        """Create the wire of ``block``: reserve and pre-fault its memory, make its doorbells."""
        if slot_bytes <= 0 or readers < 0 or slots < 2:
            raise ValueError("a wire needs slot_bytes > 0, readers >= 0 and at least 2 slots")
        layout = Layout(slots, slot_bytes, readers)
        header = (
            (_SLOTS, slots),
            (_SLOT_BYTES, slot_bytes),
            (_READERS, readers),
            (_STRIDE, layout.stride),
            (_DATA, layout.data),
        )
        return cls(Ring.create(_KIND, names, block, layout, header, group))

    def stats(self) -> WireStats:
        """Frames written, and per reader index the frames read and dropped."""
        m = self._ring
        rows = m.reader_rows(
            {
                "attached_pid": _R_PID,
                "frames": _R_FRAMES,
                "dropped": _R_DROPPED,
                "lapped": _R_LAPPED,
            }
        )
        readers = cast(list[ReaderStats], rows)
        return {"frames": m.u64(_HEAD), "writer_pid": m.u64(_WRITER_PID), "readers": readers}


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (it may belong to another user: that is no answer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False  # not a pid at all: a corrupt line
    return True


class WireWriter:
    """The one process that writes a wire (the block that owns it).

    A writer that starts after a crash carries on the sequence where the dead one left it.
    """

    def __init__(self, names: RunNames, block: str):
        self._m = _attach(names, block)
        layout = self._m.layout
        self._bells = self._m.open_doorbells()
        self._next = _atomics.load_acquire(self._m.mm, _HEAD) + 1
        self._loaned: int | None = None
        self._described: list[tuple[_FrameKey, np.ndarray] | None] = [None] * layout.slots
        _atomics.store_relaxed(self._m.mm, _WRITER_PID, os.getpid())

    @property
    def capacity(self) -> int:
        return self._m.layout.slot_bytes

    @property
    def frames(self) -> int:
        """Frames published so far on this wire, by this writer and its predecessors."""
        return self._next - 1

    def borrow(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        """The next slot as an array to fill in place; ``publish()`` sends it.

        Each slot remembers the frame description last written into it, so a stream of
        same-sized frames costs two atomic stores here and no new numpy object.
        """
        key = (tuple(map(int, shape)), np.dtype(dtype))
        m, f = self._m, self._next
        index = f % m.layout.slots
        slot = m.layout.slot(index)
        cached = self._described[index]
        if cached is None or cached[0] != key:
            description, view = self._describe(key, index)
        _atomics.store_relaxed(m.mm, slot + _S_SEQ, 2 * f - 1)
        _atomics.fence_release()
        if cached is None or cached[0] != key:
            m.mm[slot + _DESC_START : slot + _DESC_END] = description
            cached = self._described[index] = (key, view)
        self._loaned = f
        return cached[1]

    def _describe(self, key: _FrameKey, index: int) -> tuple[bytes, np.ndarray]:
        """The slot header bytes and the array view for frames of this shape and dtype."""
        shape, dtype = key
        nbytes = math.prod(shape) * dtype.itemsize
        self._check_fits(shape, dtype, nbytes)
        dims = (*shape, *(0,) * (MAX_DIMS - len(shape)))
        description = _DESCRIPTION.pack(nbytes, len(shape), *dims, dtype.str.encode())
        view = np.ndarray(shape, dtype, buffer=self._m.mm, offset=self._m.layout.slot_data(index))
        return description, view

    def publish(self, timestamp_ns: int | None = None) -> int:
        """Make the borrowed slot the newest frame and ring the readers; returns its seq."""
        f = self._loaned
        if f is None:
            raise WireError(f"{self._m.label}: publish() without borrow()")
        m = self._m
        slot = m.layout.slot(f % m.layout.slots)
        ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        _atomics.store_relaxed(m.mm, slot + _S_TIME, ts)
        _atomics.store_release(m.mm, slot + _S_SEQ, 2 * f)
        _atomics.store_release(m.mm, _HEAD, f)
        self._loaned = None
        self._next = f + 1
        ring_doorbells(self._bells)
        return f

    def write(self, frame: np.ndarray, timestamp_ns: int | None = None) -> int:
        """Copy ``frame`` into the next slot and publish it."""
        out = self.borrow(frame.shape, frame.dtype)
        np.copyto(out, frame, casting="no")
        return self.publish(timestamp_ns)

    def attached_readers(self) -> int:
        """How many reader slots a live process holds now: whether anyone takes the frames.

        A reader writes its pid into its slot's line when it attaches and clears it when
        it closes; one that was killed leaves its pid behind, so each pid is also asked
        whether it still runs. A camera decodes nothing while this is 0.
        """
        m = self._m
        pids = (m.u64(m.layout.reader(i) + _R_PID) for i in range(m.layout.readers))
        return sum(1 for pid in pids if pid and _running(pid))

    def _check_fits(self, shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> None:
        if len(shape) > MAX_DIMS:
            raise WireError(f"{self._m.label}: frames have at most {MAX_DIMS} dimensions")
        if len(dtype.str) > 8 or dtype.hasobject or any(d < 0 for d in shape):
            raise WireError(f"{self._m.label}: dtype {dtype} cannot travel on a wire")
        if nbytes > self.capacity:
            raise FrameTooLarge(
                f"{self._m.label}: a {'x'.join(map(str, shape))} {dtype} frame is"
                f" {nbytes:,} bytes, but the wire's slots hold {self.capacity:,}."
                " Size the wire for the largest frame (max_frame_bytes in the graph file)."
            )

    def close(self) -> None:
        for bell in self._bells:
            bell.close()
        self._bells = []
        self._described = []
        self._m.close()


class WireReader:
    """One reader of a wire, at a reader index the owner gave it."""

    def __init__(
        self,
        names: RunNames,
        block: str,
        reader: int,
        after_copy: Callable[[], None] | None = None,
    ):
        """``after_copy`` is a hook for tests: called after a frame's pixels were taken and
        before they are checked, it lets a test make the writer lap the reader there."""
        self._m = _attach(names, block)
        self._bell: posix_ipc.Semaphore | None = self._m.take_reader_slot(reader)
        self._reader = reader
        self._row = self._m.layout.reader(reader)
        self._last = 0
        self._views: dict[tuple[int, bytes], np.ndarray | None] = {}
        self._after_copy = after_copy
        self.frames = 0
        self.dropped = 0
        self.lapped = 0  # frames the writer overwrote while this reader took them

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame as a zero-copy view, waiting up to ``timeout`` s (None: forever)."""
        return self._wait(timeout, copy=False)

    def read_copy(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, copied out of the wire: the reader's to keep."""
        return self._wait(timeout, copy=True)

    def _wait(self, timeout: float | None, copy: bool) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._take(copy, deadline)
            if frame is not None:
                return frame
            if self._bell is None:
                raise WireError(f"{self._m.label}: read after close()")
            if not wait_doorbell(self._bell, deadline):
                return self._take(copy, time.monotonic())  # one last look at the deadline

    def _take(self, copy: bool, deadline: float | None) -> Frame | None:
        """The newest frame if there is one we have not had, else None. Never torn.

        A writer that overwrites every frame while it is taken (a copy slower than the
        writer's frame period) is not waited out forever: the reader gives up at its
        deadline (after TRIES attempts when it has none) and counts each lost attempt.
        """
        m = self._m
        tries = 0
        while True:
            if tries and (time.monotonic() >= deadline if deadline else tries >= TRIES):
                return None
            tries += 1
            head = _atomics.load_acquire(m.mm, _HEAD)
            if head == self._last:
                return None
            index = head % m.layout.slots
            slot = m.layout.slot(index)
            seq = _atomics.load_acquire(m.mm, slot + _S_SEQ)
            if seq != 2 * head:
                continue  # the writer lapped us while we looked: take the newer head
            ts = _atomics.load_relaxed(m.mm, slot + _S_TIME)
            array = self._view(slot, m.layout.slot_data(index))
            if array is not None and copy:
                array = array.copy()
            if self._after_copy is not None:
                self._after_copy()
            _atomics.fence_acquire()
            if _atomics.load_relaxed(m.mm, slot + _S_SEQ) != seq:
                self.lapped += 1  # overwritten while we read it: torn, never delivered
                _atomics.store_relaxed(m.mm, self._row + _R_LAPPED, self.lapped)
                continue
            if array is None:
                raise WireError(f"{m.label}: frame {head} has a corrupt header")
            self._count(head)
            return Frame(array, head, ts, m.mm, slot + _S_SEQ, copied=copy)

    def _view(self, slot: int, data: int) -> np.ndarray | None:
        """The slot's pixels as an array, or None if its header makes no sense (torn).

        Views are remembered by the header's bytes: a stream of same-sized frames
        costs one 40-byte read here, not a new numpy array per frame.
        """
        mm = self._m.mm
        key = (data, mm[slot + _DESC_START : slot + _DESC_END])
        try:
            return self._views[key]
        except KeyError:
            pass  # a new size: parse it once
        view = self._parse(key[1], data)
        if len(self._views) >= _VIEW_CACHE:
            self._views.clear()
        self._views[key] = view
        return view

    def _parse(self, description: bytes, data: int) -> np.ndarray | None:
        nbytes, ndim, *dims, raw = _DESCRIPTION.unpack(description)
        shape = tuple(dims[: min(ndim, MAX_DIMS)])
        try:
            dtype = np.dtype(raw.rstrip(b"\0").decode("ascii"))
            if nbytes > self._m.layout.slot_bytes or math.prod(shape) * dtype.itemsize != nbytes:
                return None
            view = np.ndarray(shape, dtype, buffer=self._m.mm, offset=data)
        except (TypeError, ValueError, UnicodeDecodeError):
            return None
        view.flags.writeable = False  # shared with the other readers: look, don't touch
        return view

    def _count(self, head: int) -> None:
        if self._last:
            self.dropped += head - self._last - 1
        self._last = head
        self.frames += 1
        mm = self._m.mm
        _atomics.store_relaxed(mm, self._row + _R_FRAMES, self.frames)
        _atomics.store_relaxed(mm, self._row + _R_DROPPED, self.dropped)

    def forget_drops(self) -> None:
        """Count dropped frames from now on (here and in the wire's header): those so far
        went by while the reader's block started (its first call imports, allocates)."""
        self.dropped = 0
        _atomics.store_relaxed(self._m.mm, self._row + _R_DROPPED, 0)

    def close(self) -> None:
        if self._bell is not None:
            self._views.clear()
            self._m.leave_reader_slot(self._reader, self._bell)
            self._bell = None
