"""The packet wire: a camera's encoded video, as it was received, to any number of readers.

A frame wire (``wire.py``) carries decoded pictures of one size. A packet wire carries
what a camera sends before anyone decodes it (H.264, H.265, MJPEG packets): variable
sizes, a timestamp each, a keyframe flag, and the codec parameters a muxer needs. A
recorder copies them into files without decoding, so recording costs what
``ffmpeg -c copy`` costs.

One segment per wire::

    page 0    the layout (written once), the writer's line, one line per reader
    index     ``index_slots`` lines of 64 bytes, one per packet: packet n in line n % slots
    params    4 records of codec parameters, one per generation g in record g % 4
    data      a byte ring of ``data_bytes``; packet bytes at absolute offsets that only
              grow (offset % data_bytes in the ring; a packet may wrap around its end)

The writer never waits for anyone. A reader that falls behind is lapped: the packet it
wants has lost its index line, or its bytes have been written over. It then jumps to
the newest keyframe and counts what it skipped, so it loses whole groups of pictures
and never delivers a packet that cannot be decoded for want of the ones before it. A
new reader starts at the newest keyframe; ``rewind(seconds)`` starts it earlier, at the
oldest keyframe still whole within that many seconds: the pre-roll of a clip.

Codec parameters (codec, size, time base, extradata: a stream's SPS and PPS) change
when a camera changes resolution or codec: the writer publishes a new *generation*, and
every packet carries the generation it belongs to, so a recorder starts a new file at
the first packet of a new generation.

Memory ordering, on ARM as on x86 (read wire.py's argument first; this one is the same
kind). Each index line is a seqlock: ``seq = 2n - 1`` while packet n's line is written,
``2n`` once it is whole. The bytes are guarded by the writer's reservation mark
``reserved``, the absolute offset up to which bytes may have been written:

writer, packet n at [p, p + s):             reader, packet n:
  store_relaxed(reserved, p + s)              s1 = load_acquire(seq of line n)  (must be 2n)
  fence_release()                             ...line's fields...
  ...bytes into the ring...                   ...bytes out of the ring...
  store_relaxed(seq, 2n - 1)                  fence_acquire()
  fence_release()                             s2 = load_relaxed(seq)           (must be s1)
  ...line's fields...                         r  = load_relaxed(reserved)      (r <= p + size)
  store_release(seq, 2n)
  store_release(head, n)

- If a byte the reader copied was written for a later packet, the writer's reservation
  for that later packet came before it, behind a release fence; the reader's acquire
  fence after its copy then makes that reservation visible: ``r`` exceeds ``p + size``
  (the ring's size included), and the copy is thrown away. The same pairing on the
  index line catches a line rewritten while it was read.
- A reader that sees ``head == n`` sees line n and the bytes before it (release/acquire).
The doorbells are the frame wire's: a semaphore per reader slot, posted only at zero.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypedDict, cast

import posix_ipc

from . import _atomics
from .names import RunNames
from .ring import LINE, PAGE, Ring, RingKind, RingOwner, align, ring_doorbells, wait_doorbell
from .segment import Segment

MAGIC = int.from_bytes(b"PLDPKTS\0", "little")
LAYOUT_VERSION = 1
PARAM_RECORDS = 4
PARAM_BYTES = 8192
"""Room for one generation's parameters (as JSON), extradata included: SPS/PPS are tens
to hundreds of bytes; a few kilobytes covers any camera."""
DEFAULT_INDEX_SLOTS = 4096
"""Packets the index remembers: over two minutes at 30 packets a second."""

# Layout line (written once; ring.py: magic, version).
_INDEX_SLOTS, _DATA_BYTES, _READERS, _INDEX, _PARAMS, _DATA = (8 * i for i in range(2, 8))
# The writer's line.
_HEAD, _KEYFRAME, _RESERVED, _GENERATION, _WRITER_PID = (LINE + 8 * i for i in range(5))
_READER_TABLE = 2 * LINE
_R_PID, _R_PACKETS, _R_DROPPED, _R_GAPS = 0, 8, 16, 24
# One index line: seq, offset, size, pts, dts, duration, flags, wall-clock time (ns).
_E_SEQ = 0
_ENTRY = struct.Struct("=QQqqqQQ")  # offset, size, pts, dts, duration, flags, time_ns
_E_FIELDS = 8
_FLAG_KEY = 1
_GEN_SHIFT = 8  # flags: bit 0 keyframe, bits 8.. the packet's generation
# One params record: seq, generation, length, then the JSON.
_P_SEQ, _P_GEN, _P_LEN, _P_JSON = 0, 8, 16, 24
NO_PTS = -(2**63)
"""A packet without a pts or dts (FFmpeg's AV_NOPTS_VALUE)."""


class PacketWireError(Exception):
    """A packet wire cannot be created, attached or used as asked."""


class PacketTooLarge(PacketWireError):
    """A packet that would take more than half the ring."""


@dataclass(frozen=True)
class CodecParams:
    """What a muxer or a decoder needs to know of a stream before its first packet."""

    codec: str  # FFmpeg's codec name: "h264", "hevc", "mjpeg"
    width: int
    height: int
    time_base: tuple[int, int]  # pts and dts are counted in num/den seconds
    extradata: bytes = b""  # the stream's global headers (H.264: SPS and PPS)
    pix_fmt: str = ""
    bit_rate: int = 0  # bits a second, when the source says; 0 when unknown

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        fields["extradata"] = self.extradata.hex()
        return json.dumps(fields, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CodecParams:
        fields = json.loads(raw)
        fields["extradata"] = bytes.fromhex(fields["extradata"])
        fields["time_base"] = tuple(fields["time_base"])
        return cls(**fields)


@dataclass(frozen=True)
class Packet:
    """One packet as a reader got it: its own copy of the bytes, and where it belongs."""

    number: int  # 1, 2, … on this wire
    data: bytes
    pts: int  # in the generation's time base; NO_PTS when the source gave none
    dts: int
    duration: int
    keyframe: bool
    generation: int  # which CodecParams it belongs to
    time_ns: int  # wall-clock time (CLOCK_REALTIME) the writer received it


@dataclass(frozen=True)
class Layout:
    """Where everything lives in a packet wire's segment."""

    index_slots: int
    data_bytes: int
    readers: int

    @property
    def index(self) -> int:
        return align(_READER_TABLE + LINE * self.readers, LINE)

    @property
    def params(self) -> int:
        return align(self.index + LINE * self.index_slots, PAGE)

    @property
    def data(self) -> int:
        return align(self.params + PARAM_BYTES * PARAM_RECORDS, PAGE)

    @property
    def total(self) -> int:
        return self.data + align(self.data_bytes, PAGE)

    def reader(self, i: int) -> int:
        return _READER_TABLE + LINE * i

    def entry(self, number: int) -> int:
        return self.index + LINE * (number % self.index_slots)

    def params_record(self, generation: int) -> int:
        return self.params + PARAM_BYTES * (generation % PARAM_RECORDS)


MIN_RING = 1 << 20
"""The smallest packet ring a block asks for: room for a few large keyframes."""


def ring_bytes(size: int) -> int:
    """A packet ring of at least ``size`` bytes: whole 64 KiB, and never under MIN_RING."""
    return max(MIN_RING, -(-size // 65536) * 65536)


def stream_ring_bytes(bit_rate: float, seconds: float) -> int:
    """A packet ring that holds ``seconds`` of a stream of ``bit_rate`` bits a second."""
    return ring_bytes(math.ceil(bit_rate / 8 * seconds))


def packet_wire_bytes(data_bytes: int, readers: int, index_slots: int = DEFAULT_INDEX_SLOTS) -> int:
    """How much /dev/shm a packet wire takes."""
    return Layout(index_slots, data_bytes, readers).total


class PacketReaderStats(TypedDict):
    attached_pid: int
    packets: int
    dropped: int
    gaps: int


class PacketWireStats(TypedDict):
    packets: int
    bytes: int
    generation: int
    writer_pid: int
    readers: list[PacketReaderStats]


_KIND = RingKind(
    noun="packet wire",
    magic=MAGIC,
    version=LAYOUT_VERSION,
    error=PacketWireError,
    segment_name=RunNames.packets,
    doorbell_name=RunNames.packet_doorbell,
    no_room_advice="Keep fewer seconds of pre-roll, or give /dev/shm more space.",
)


class _Open(Ring[Layout]):
    """An attached packet wire, with its data ring as a view of its own."""

    def __init__(
        self, kind: RingKind, names: RunNames, block: str, segment: Segment, layout: Layout
    ):
        super().__init__(kind, names, block, segment, layout)
        self.data = memoryview(self.mm)[layout.data : layout.data + layout.data_bytes]

    def close(self) -> None:
        self.data.release()
        super().close()


def _read_layout(u: Callable[[int], int]) -> Layout:
    return Layout(u(_INDEX_SLOTS), u(_DATA_BYTES), u(_READERS))


def _attach(names: RunNames, block: str) -> _Open:
    return _Open.attach(_KIND, names, block, _read_layout)


class PacketWire(RingOwner[Layout]):
    """The owner's handle (the daemon): creates the segment and doorbells, unlinks them."""

    @classmethod
    def create(
        cls,
        names: RunNames,
        block: str,
        data_bytes: int,
        readers: int,
        index_slots: int = DEFAULT_INDEX_SLOTS,
        group: int | None = None,
    ) -> PacketWire:
        if data_bytes < PAGE or readers < 0 or index_slots < 16:
            raise ValueError("a packet wire needs data_bytes >= 4096, readers >= 0, 16+ slots")
        layout = Layout(index_slots, data_bytes, readers)
        header = (
            (_INDEX_SLOTS, index_slots),
            (_DATA_BYTES, data_bytes),
            (_READERS, readers),
            (_INDEX, layout.index),
            (_PARAMS, layout.params),
            (_DATA, layout.data),
        )
        return cls(Ring.create(_KIND, names, block, layout, header, group))

    def stats(self) -> PacketWireStats:
        """Packets and bytes written, and per reader slot the packets read, dropped, gaps."""
        w = self._ring
        rows = w.reader_rows(
            {"attached_pid": _R_PID, "packets": _R_PACKETS, "dropped": _R_DROPPED, "gaps": _R_GAPS}
        )
        readers = cast(list[PacketReaderStats], rows)
        return {
            "packets": w.u64(_HEAD),
            "bytes": w.u64(_RESERVED),
            "generation": w.u64(_GENERATION),
            "writer_pid": w.u64(_WRITER_PID),
            "readers": readers,
        }


class PacketWriter:
    """The one process that writes a packet wire (the camera, or an encoder)."""

    def __init__(self, names: RunNames, block: str):
        self._w = _attach(names, block)
        self._bells = self._w.open_doorbells()
        mm = self._w.mm
        self._next = _atomics.load_acquire(mm, _HEAD) + 1  # a successor carries on
        self._reserved = _atomics.load_relaxed(mm, _RESERVED)
        self._generation = _atomics.load_relaxed(mm, _GENERATION)
        _atomics.store_relaxed(mm, _WRITER_PID, os.getpid())

    @property
    def packets(self) -> int:
        """Packets published so far on this wire, by this writer and its predecessors."""
        return self._next - 1

    @property
    def generation(self) -> int:
        return self._generation

    def set_params(self, params: CodecParams) -> int:
        """Publish new codec parameters; packets written from now on belong to them."""
        raw = params.to_bytes()
        if len(raw) > PARAM_BYTES - _P_JSON:
            raise PacketWireError(
                f"{self._w.label}: codec parameters of {len(raw):,} bytes do not fit the"
                f" {PARAM_BYTES - _P_JSON:,} bytes a generation has"
            )
        mm, g = self._w.mm, self._generation + 1
        record = self._w.layout.params_record(g)
        _atomics.store_relaxed(mm, record + _P_SEQ, 2 * g - 1)
        _atomics.fence_release()
        _atomics.store_relaxed(mm, record + _P_GEN, g)
        _atomics.store_relaxed(mm, record + _P_LEN, len(raw))
        mm[record + _P_JSON : record + _P_JSON + len(raw)] = raw
        _atomics.store_release(mm, record + _P_SEQ, 2 * g)
        _atomics.store_release(mm, _GENERATION, g)
        self._generation = g
        return g

    def write(
        self,
        data: bytes | memoryview,
        *,
        pts: int = NO_PTS,
        dts: int = NO_PTS,
        duration: int = 0,
        keyframe: bool = False,
        time_ns: int | None = None,
    ) -> int:
        """Publish one packet; returns its number. Never waits for a reader."""
        w = self._w
        size = len(data)
        if self._generation == 0:
            raise PacketWireError(f"{w.label}: set_params() before the first packet")
        if size > w.layout.data_bytes // 2:
            raise PacketTooLarge(
                f"{w.label}: a packet of {size:,} bytes is more than half the ring's"
                f" {w.layout.data_bytes:,}: keep more seconds of pre-roll (a bigger ring)"
            )
        mm, n = w.mm, self._next
        start = self._reserved
        self._reserved = start + size
        _atomics.store_relaxed(mm, _RESERVED, self._reserved)
        _atomics.fence_release()
        _copy_in(w.data, start, data)
        line = w.layout.entry(n)
        flags = (self._generation << _GEN_SHIFT) | (_FLAG_KEY if keyframe else 0)
        stamp = time.time_ns() if time_ns is None else time_ns
        _atomics.store_relaxed(mm, line + _E_SEQ, 2 * n - 1)
        _atomics.fence_release()
        mm[line + 8 : line + LINE] = _ENTRY.pack(start, size, pts, dts, duration, flags, stamp)
        _atomics.store_release(mm, line + _E_SEQ, 2 * n)
        _atomics.store_release(mm, _HEAD, n)
        if keyframe:
            _atomics.store_release(mm, _KEYFRAME, n)
        self._next = n + 1
        ring_doorbells(self._bells)
        return n

    def close(self) -> None:
        for bell in self._bells:
            bell.close()
        self._bells = []
        self._w.close()


def _copy_in(ring: memoryview, offset: int, data: bytes | memoryview) -> None:
    size, capacity = len(data), len(ring)
    at = offset % capacity
    first = min(size, capacity - at)
    ring[at : at + first] = data[:first]
    if first < size:
        ring[: size - first] = data[first:]


def _copy_out(ring: memoryview, offset: int, size: int) -> bytes:
    capacity = len(ring)
    at = offset % capacity
    if at + size <= capacity:
        return bytes(ring[at : at + size])
    return bytes(ring[at:]) + bytes(ring[: size - (capacity - at)])


@dataclass(frozen=True)
class _Entry:
    offset: int
    size: int
    pts: int
    dts: int
    duration: int
    flags: int
    time_ns: int

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & _FLAG_KEY)

    @property
    def generation(self) -> int:
        return self.flags >> _GEN_SHIFT


class PacketReader:
    """One reader of a packet wire, at a reader slot the owner gave it.

    It starts at the newest keyframe (or at the first one to come). ``after_copy`` is a hook
    for tests: called between taking a packet's bytes and checking they are still whole,
    it lets a test make the writer lap the reader at exactly that moment.
    """

    def __init__(
        self,
        names: RunNames,
        block: str,
        reader: int,
        after_copy: Callable[[], None] | None = None,
    ):
        self._w = _attach(names, block)
        self._bell: posix_ipc.Semaphore | None = self._w.take_reader_slot(reader)
        self._reader = reader
        self._row = self._w.layout.reader(reader)
        self._after_copy = after_copy
        mm = self._w.mm
        key, head = _atomics.load_acquire(mm, _KEYFRAME), _atomics.load_acquire(mm, _HEAD)
        self._next = key or head + 1  # the packet to deliver next
        self._need_key = key == 0  # nothing yet: start at the first keyframe that comes
        self._params: dict[int, CodecParams] = {}
        self.packets = 0
        self.dropped = 0  # packets skipped: lapped, or waiting for a keyframe after a gap
        self.gaps = 0  # times the reader was lapped and jumped ahead

    # -- positioning ---------------------------------------------------------------------

    def rewind(self, seconds: float) -> bool:
        """Start at the oldest keyframe still whole that is at most ``seconds`` older than
        the newest packet; False (and the newest keyframe) if there is none yet."""
        w = self._w
        head = _atomics.load_acquire(w.mm, _HEAD)
        if head == 0:
            return False
        newest = self._entry(head)
        if newest is None:
            return False
        oldest_wanted = newest.time_ns - int(seconds * 1e9)
        best = None
        low = max(1, head - w.layout.index_slots + 1)
        for n in range(head, low - 1, -1):
            entry = self._entry(n)
            if entry is None or not self._whole(entry) or entry.time_ns < oldest_wanted:
                break
            if entry.keyframe:
                best = n
        if best is None:
            return False
        self._next, self._need_key = best, False
        return True

    def catch_up(self) -> int:
        """Jump to the newest keyframe if it is past the next packet, counting what is
        skipped as dropped; returns how many packets were skipped (0: none newer).

        For a reader that must not fall behind (the Zenoh link, a remote block): whole
        groups of pictures go, never part of one that is then sent or decoded."""
        key = _atomics.load_acquire(self._w.mm, _KEYFRAME)
        if key <= self._next:
            return 0
        skipped = key - self._next
        self._count(dropped=skipped)
        self._next, self._need_key = key, False
        return skipped

    def seek_newest_keyframe(self) -> bool:
        """Go back (or on) to the newest keyframe on the wire: a new subscriber gets the
        group of pictures under way at once. False if there is none yet."""
        key = _atomics.load_acquire(self._w.mm, _KEYFRAME)
        if key == 0:
            return False
        self._next, self._need_key = key, False
        return True

    def newer_keyframe(self) -> bool:
        """Whether a keyframe past the next packet is on the wire (``catch_up`` would jump)."""
        return _atomics.load_acquire(self._w.mm, _KEYFRAME) > self._next

    def behind(self) -> int:
        """Packets written that this reader has not taken yet."""
        return max(0, _atomics.load_acquire(self._w.mm, _HEAD) + 1 - self._next)

    # -- reading -------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Packet | None:
        """The next packet, waiting up to ``timeout`` s (None: forever); never torn."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            packet = self._take()
            if packet is not None:
                return packet
            if self._bell is None:
                raise PacketWireError(f"{self._w.label}: read after close()")
            if not wait_doorbell(self._bell, deadline):
                return self._take()  # one last look at the deadline

    def _take(self) -> Packet | None:
        w = self._w
        while True:
            n = self._next
            if n > _atomics.load_acquire(w.mm, _HEAD):
                return None
            entry = self._entry(n)
            if entry is None:
                self._lapped()
                continue
            if self._need_key and not entry.keyframe:
                self._next = n + 1  # undecodable without what was lost: skip to a keyframe
                self._count(dropped=1)
                continue
            if entry.size > w.layout.data_bytes:
                raise PacketWireError(f"{w.label}: packet {n} has a corrupt size")
            data = _copy_out(w.data, entry.offset, entry.size)
            if self._after_copy is not None:
                self._after_copy()
            _atomics.fence_acquire()
            if not self._whole(entry) or not self._same_line(n):
                self._lapped()
                continue
            self._next = n + 1
            self._need_key = False
            self._count(delivered=1)
            return Packet(
                n, data, entry.pts, entry.dts, entry.duration, entry.keyframe,
                entry.generation, entry.time_ns,
            )  # fmt: skip

    def _entry(self, n: int) -> _Entry | None:
        """Packet n's index line, or None if it is not (or no longer) packet n's."""
        mm, line = self._w.mm, self._w.layout.entry(n)
        seq = _atomics.load_acquire(mm, line + _E_SEQ)
        if seq != 2 * n:
            return None
        fields = _ENTRY.unpack(mm[line + 8 : line + LINE])
        _atomics.fence_acquire()
        if _atomics.load_relaxed(mm, line + _E_SEQ) != seq:
            return None
        return _Entry(*fields)

    def _same_line(self, n: int) -> bool:
        line = self._w.layout.entry(n)
        return _atomics.load_relaxed(self._w.mm, line + _E_SEQ) == 2 * n

    def _whole(self, entry: _Entry) -> bool:
        """No byte of the entry's packet has been reserved for a later one (the caller has
        issued the acquire fence after its copy)."""
        reserved = _atomics.load_relaxed(self._w.mm, _RESERVED)
        return reserved <= entry.offset + self._w.layout.data_bytes

    def _lapped(self) -> None:
        """The writer overtook us: go on at a keyframe, never in the middle of a group."""
        key = _atomics.load_acquire(self._w.mm, _KEYFRAME)
        head = _atomics.load_acquire(self._w.mm, _HEAD)
        target = key if key > self._next else head + 1
        self._need_key = key <= self._next  # none newer yet: take the next that comes
        self.gaps += 1
        self._count(dropped=target - self._next)
        self._next = target

    def _count(self, delivered: int = 0, dropped: int = 0) -> None:
        self.packets += delivered
        self.dropped += dropped
        mm, row = self._w.mm, self._row
        _atomics.store_relaxed(mm, row + _R_PACKETS, self.packets)
        _atomics.store_relaxed(mm, row + _R_DROPPED, self.dropped)
        _atomics.store_relaxed(mm, row + _R_GAPS, self.gaps)

    # -- codec parameters ----------------------------------------------------------------

    def params(self, generation: int) -> CodecParams | None:
        """The codec parameters of ``generation``; None if they were overwritten (more
        than three changes behind) or are being written right now."""
        known = self._params.get(generation)
        if known is not None:
            return known
        mm, record = self._w.mm, self._w.layout.params_record(generation)
        seq = _atomics.load_acquire(mm, record + _P_SEQ)
        if seq != 2 * generation:
            return None
        length = _atomics.load_relaxed(mm, record + _P_LEN)
        raw = bytes(mm[record + _P_JSON : record + _P_JSON + min(length, PARAM_BYTES)])
        _atomics.fence_acquire()
        if _atomics.load_relaxed(mm, record + _P_SEQ) != seq:
            return None
        params = CodecParams.from_bytes(raw)
        if len(self._params) > 2 * PARAM_RECORDS:
            self._params.clear()
        self._params[generation] = params
        return params

    def close(self) -> None:
        if self._bell is not None:
            self._w.leave_reader_slot(self._reader, self._bell)
            self._bell = None
