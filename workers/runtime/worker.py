"""The worker runtime: runs one block in its own process.

``python -m pipelined.workers <encoded-args>`` attaches the block's wires, calls the
block for every new frame, and publishes a heartbeat with its counters. It exits
cleanly on SIGTERM. If the supervisor disappears, the worker removes every segment and
semaphore of its run and exits: after ``kill -9`` of the daemon nothing is left behind.

How it is started and what its exit status means is the daemon's and the worker's
contract, in ``pipelined.workers.contract``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..block import Block, BlockLog, ConfigurationError
from ..codec import CodecError
from ..contract import EX_CONFIG, EX_CRASHED, EX_OK, EX_USAGE, WorkerArgs, read_worker_args
from ..events import EventInbox, EventSender
from ..ipc.heartbeat import BUCKETS_S, RUNNING, STARTING, WAITING, Beat, Heartbeat, bucket
from ..ipc.liveness import ProcessIdentity, ask_for_death_signal
from ..ipc.names import RunNames
from ..ipc.packets import PacketReader, PacketWriter
from ..ipc.segment import unlink_run
from ..ipc.wire import Frame, WireReader, WireWriter
from ..registry import resolve
from .first_input import FirstInput

if TYPE_CHECKING:
    from ..video.encode import EncoderThread

LINK_TYPE = "zenoh"
"""The type of the block the daemon adds for remote wires (``net/link.py``)."""
BEAT_INTERVAL = 0.1
READERS_RECHECK = 0.25
"""Seconds a "does anyone take the frames?" answer is kept: a system call per reader."""
DEATH_SIGNAL = signal.SIGUSR1


class _Context:
    """The block's view of the runtime: waiting reasons, responsive sleep, stop flag."""

    def __init__(self, worker: Worker):
        self._worker = worker
        self.log = BlockLog(worker.args.block)
        self.inputs = [wire for wire, _ in worker.args.packet_inputs or worker.args.inputs]

    @property
    def stopping(self) -> bool:
        return self._worker.stopping

    def waiting(self, reason: str | None) -> None:
        self._worker.set_waiting(reason)

    def detail(self, text: str | None) -> None:
        self._worker.detail = text
        self._worker.beat(force=True)

    def delivered(self, count: int = 1) -> None:
        self._worker.frames_out += count

    def skipped(self, count: int = 1) -> None:
        self._worker.skipped += count

    def intact(self) -> bool:
        held = self._worker.held_first
        return held is None or held.intact()

    @property
    def packets(self) -> PacketWriter | None:
        """The block's own packet wire; None when the runtime's encoder fills it."""
        worker = self._worker
        return None if worker.encoder is not None else worker.packet_writer

    def frames_wanted(self) -> bool:
        return self._worker.frames_wanted()

    @property
    def incoming(self) -> PacketReader | None:
        """The block's own packet wire, read: another process fills it (a remote block's
        wire, which the daemon's Zenoh link writes)."""
        return self._worker.incoming

    def event(
        self,
        kind: str,
        phase: str = "moment",
        *,
        key: str = "",
        score: float | None = None,
        data: Any = None,
        frame: np.ndarray | None = None,
    ) -> str | None:
        worker = self._worker
        if worker.events is None:
            self.log.debug("event %s %s: this worker has no event pipe", kind, phase)
            return None
        return worker.events.event(
            kind, phase, key=key, score=score, data=data, frame=frame,
            at=worker.frame_time(), intact=worker.frame_check(frame),
        )  # fmt: skip

    def rewind(self, seconds: float) -> bool:
        readers = self._worker.packet_readers
        return bool(readers) and readers[0].rewind(seconds)

    def clip(self, events: list[str], path: str, start: float, end: float | None) -> None:
        if self._worker.events is not None:
            self._worker.events.clip(events, path, start, end)

    def sleep(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self._worker.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, BEAT_INTERVAL))
            self._worker.beat()
        return False


class Worker:
    """One block in one process, from set-up to exit."""

    def __init__(self, args: WorkerArgs):
        self.args = args
        self.names = RunNames(args.instance, args.run)
        self.supervisor = ProcessIdentity(*args.supervisor)
        self.stopping = False
        self.state = STARTING
        self.reason: str | None = None
        self.detail: str | None = None
        self.frames_in = self.frames_out = self.busy_ns = 0
        self.stale = 0  # frames overwritten while the block worked on them, packets too late
        self.skipped = 0  # frames the block let go by design (it says so: context.skipped)
        self.busy_hist = [0] * (len(BUCKETS_S) + 1)
        self.readers: list[WireReader] = []
        self.writer: WireWriter | None = None
        self.packet_readers: list[PacketReader] = []
        self.before_publish: Callable[[], None] | None = None
        """A hook for tests: called between writing an output and checking its input."""
        self.packet_writer: PacketWriter | None = None
        self.incoming: PacketReader | None = None
        self.encoder: EncoderThread | None = None
        self._wanted = (False, -math.inf)  # (answer, when)
        self.heartbeat: Heartbeat | None = None
        self.block: Block | None = None
        self._held: list[Frame | None] = []
        self.first_input = FirstInput(on_first_copy=self._say_copies)
        self._last_beat = 0.0
        self.events: EventSender | None = None
        self.inbox: EventInbox | None = None

    # -- supervision -----------------------------------------------------------------

    def watch_supervisor(self) -> None:
        """Clean up and leave as soon as the supervisor is gone, whatever the block does."""
        if self.supervisor.pid == 0:
            return
        signal.signal(DEATH_SIGNAL, lambda *_: self._check_supervisor())
        ask_for_death_signal(DEATH_SIGNAL)
        self._check_supervisor()  # it may have died before we asked

        def poll() -> None:
            while True:
                time.sleep(self.args.liveness_interval)
                self._check_supervisor()

        threading.Thread(target=poll, name="liveness", daemon=True).start()

    def _check_supervisor(self) -> None:
        if self.supervisor.alive():
            return
        removed = unlink_run(self.names)
        try:  # stderr was a pipe to the supervisor: it may be gone with it
            print(
                f"pipelined worker {self.args.block}: the supervisor (pid"
                f" {self.supervisor.pid}) is gone; removed {len(removed)} objects of run"
                f" {self.args.run} and exiting",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            pass
        os._exit(EX_OK)

    def stop(self, *_: object) -> None:
        self.stopping = True

    # -- heartbeat -------------------------------------------------------------------

    def set_waiting(self, reason: str | None) -> None:
        state = WAITING if reason else RUNNING
        if (state, reason) == (self.state, self.reason):
            return  # said already: a block may say it for every frame
        self.state, self.reason = state, reason
        self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.heartbeat is None or (not force and now - self._last_beat < BEAT_INTERVAL):
            return
        self._last_beat = now
        missed, skipped = self.losses()
        detail = self.detail
        if self.encoder is not None and self.encoder.status:
            detail = f"{detail}; {self.encoder.status}" if detail else self.encoder.status
        self.heartbeat.publish(
            Beat(
                state=self.state,
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                missed=missed,
                skipped=skipped,
                busy_ns=self.busy_ns,
                reason=self.reason,
                busy_hist=tuple(self.busy_hist),
                detail=detail,
            )
        )

    def losses(self) -> tuple[int, int]:
        """Frames missed (it could not keep up) and skipped (by design), so far.

        The first input paces the block: each of its frames that went by unread was a
        frame to process, missed (but for those that went by during its first call, which
        imports and allocates: every block is slow once; forgotten by the reader itself, so
        the wire's count agrees). So is a frame overwritten while
        the block worked on it, and a packet the packet reader was lapped past. The other
        inputs are sampled (the newest frame when the first has one): what goes by between
        is skipped by design, as is what the block says it let go (a sink thinning to its
        own rate)."""
        first, others = self.readers[:1], self.readers[1:]
        missed = self.stale + sum(r.dropped for r in first)
        missed += sum(r.dropped for r in self.packet_readers)
        return missed, self.skipped + sum(r.dropped for r in others)

    def frames_wanted(self) -> bool:
        """Whether a reader is attached to the block's frame wire, or its frames are
        encoded; the answer is kept for ``READERS_RECHECK`` seconds."""
        if self.encoder is not None:
            return True
        if self.writer is None:
            return False
        answer, when = self._wanted
        now = time.monotonic()
        if now - when >= READERS_RECHECK:
            answer = self.writer.attached_readers() > 0
            self._wanted = (answer, now)
        return answer

    # -- events ----------------------------------------------------------------------

    def frame_time(self) -> float:
        """The wall-clock time of the frame the block works on: when it was captured,
        for a block that reads frames; now, for a source or a packet reader."""
        held = self.held_first
        now = time.time()
        if held is None:
            return now
        return now - max(0, time.monotonic_ns() - held.timestamp_ns) / 1e9

    def frame_check(self, frame: np.ndarray | None) -> Callable[[], bool] | None:
        """How to tell whether ``frame`` was still whole once copied: needed only when it
        is (a view of) the zero-copy input."""
        held = self.held_first
        if frame is None or held is None or not np.may_share_memory(frame, held.array):
            return None
        return held.intact

    def _open_events(self) -> None:
        options = self.args.events
        if not options:
            return
        snapshots = Path(options["snapshots"]) if options.get("snapshots") else None
        if snapshots is not None:
            try:
                snapshots.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                print(f"no event snapshots: {snapshots}: {exc.strerror}", file=sys.stderr)
                snapshots = None
        self.events = EventSender(
            options["fd"], snapshots, options["rate"], options["burst"], options["quality"]
        )
        if options.get("inbox_fd") is not None:
            self.inbox = EventInbox(options["inbox_fd"])

    def deliver_events(self) -> None:
        """Hand the block the events the daemon routed to it, between two frames."""
        if self.inbox is None or self.block is None:
            return
        for event in self.inbox.take():
            self.block.take_event(event)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> int:
        """Set up, run until asked to stop, tear down; the exit status (contract.py).

        The worker's last stderr line says why it ended (the daemon shows it in status):
        printed after ``close()``, which may print too.
        """
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.watch_supervisor()
        code, last_words = EX_OK, None
        try:
            self.set_up()
            self.state = RUNNING if self.state == STARTING else self.state
            self.beat(force=True)
            while not self.stopping:
                self.step()
                self.beat()
        except ConfigurationError as exc:
            code, last_words = EX_CONFIG, f"block {self.args.block!r} cannot run: {exc}"
        except Exception as exc:
            traceback.print_exc()
            code, last_words = EX_CRASHED, crash_line(exc)
        finally:
            self.tear_down()
        if last_words is not None:
            print(last_words, file=sys.stderr, flush=True)
        return code

    def set_up(self) -> None:
        args = self.args
        self.heartbeat = Heartbeat.attach(self.names, args.block)
        self.beat(force=True)
        cls = resolve(args.type, Path(args.beside) if args.beside else None)
        self._open_events()
        self.block = cls(args.block, args.params, _Context(self))
        if args.packet_output:  # before setup(): a camera states its codec there
            self.packet_writer = PacketWriter(self.names, args.block)
        if args.incoming is not None:  # before setup(): a remote block reads it there
            self.incoming = PacketReader(self.names, args.block, args.incoming)
        if args.encode is not None and self.packet_writer is not None:
            self.encoder = self._start_encoder(args.encode)
        self.block.setup()
        if args.output:
            self.writer = WireWriter(self.names, args.block)
        self.readers = [WireReader(self.names, wire, index) for wire, index in args.inputs]
        self.packet_readers = [
            PacketReader(self.names, wire, index) for wire, index in args.packet_inputs
        ]
        self._held = [None] * len(self.readers)

    def _start_encoder(self, options: dict) -> EncoderThread:
        """The ``encode`` key: FFmpeg is loaded only by the workers that encode."""
        from ..video.encode import EncoderThread
        from ..video.options import EncodeOptions

        fps = self.args.params.get("fps", 30.0)  # the frame rate of a camera, a guess else
        assert self.packet_writer is not None
        return EncoderThread(EncodeOptions.from_dict(options), self.packet_writer, float(fps))

    def step(self) -> None:
        """One frame (or packet) through the block: wait for input, process, publish."""
        self.deliver_events()
        if self.packet_readers:
            self.take_packet(self.packet_readers[0])
            return
        frames = self.next_inputs()
        if frames is None:
            return
        start = time.perf_counter_ns()
        timestamp = frames[0].timestamp_ns if frames else None
        arrays = [f.array for f in frames]
        published = self.produce(arrays, frames, timestamp)
        self._count_busy(start)
        self.frames_out += published

    def take_packet(self, reader: PacketReader) -> None:
        """One packet of a packet input to the block, in the order the source sent them."""
        packet = reader.read(timeout=BEAT_INTERVAL)
        if packet is None:
            return
        self.frames_in += 1
        codec = reader.params(packet.generation)
        if codec is None:  # three changes of stream behind: the reader was lapped anyway
            self.stale += 1
            return
        start = time.perf_counter_ns()
        assert self.block is not None  # set_up() made it
        self.block.process_packet(packet, codec)
        self._count_busy(start)

    def _count_busy(self, start_ns: int) -> None:
        busy = time.perf_counter_ns() - start_ns
        self.busy_ns += busy
        self.busy_hist[bucket(busy / 1e9)] += 1

    def next_inputs(self) -> list[Frame] | None:
        """The newest frame of every input, or None if the first has nothing new yet.

        The first input paces the block and is read in place (zero-copy), or copied
        while the block is too slow for a view to survive it (``first_input.py``); the
        others are copied, since their newest frame may be reused for several of the first's.
        """
        if not self.readers:
            return []
        reader = self.readers[0]
        take = reader.read_copy if self.first_input.copy else reader.read
        first = take(timeout=BEAT_INTERVAL)
        if first is None:
            return None
        self.first_input.taken()
        self.frames_in += 1
        if self.frames_in == 2:  # what went by during the block's first call is not missed
            self.readers[0].forget_drops()
        self._held[0] = first
        for i, reader in enumerate(self.readers[1:], start=1):
            newer = reader.read_copy(timeout=0 if self._held[i] is not None else 1.0)
            if newer is not None:
                self._held[i] = newer
        held = [f for f in self._held if f is not None]
        if len(held) < len(self._held):
            return None  # wait until every input has sent a frame
        return held

    def produce(self, arrays: list[np.ndarray], frames: list[Frame], ts: int | None) -> int:
        """Run the block once; 1 if a frame went out, else 0.

        Nothing derived from the zero-copy input leaves unless the input was still whole
        after the output was written: a block's result may be a view of its input (a
        mirror, a crop, the frame itself), so the check comes after the copy into the
        output slot and before the slot is published.
        """
        block, writer = self.block, self.writer
        assert block is not None  # set_up() made it
        shape = block.output_like(arrays) if writer is not None else None
        if shape is not None and writer is not None:  # (a shape only comes with a writer)
            out = writer.borrow(*shape)
            if not block.process_into(arrays, out):
                return 0
        else:
            result = block.process(arrays)
            if result is None or writer is None:
                self._inputs_intact(frames)  # a sink: count a torn input all the same
                return 0
            result = np.ascontiguousarray(result)
            out = writer.borrow(result.shape, result.dtype)
            np.copyto(out, result, casting="no")
        if self.before_publish is not None:
            self.before_publish()
        if not self._inputs_intact(frames):
            return 0  # the slot stays unpublished; the next frame takes it again
        if ts is None:  # a source: when it says its frame was taken, else now
            ts = block.frame_time_ns or time.monotonic_ns()
        writer.publish(ts)
        if self.encoder is not None:  # a copy of our own slot: ours, whole, until we reuse it
            self.encoder.offer(out.copy(), ts)
        return 1

    @property
    def all_readers(self) -> list[WireReader | PacketReader]:
        own = [self.incoming] if self.incoming is not None else []
        return [*self.readers, *self.packet_readers, *own]

    @property
    def held_first(self) -> Frame | None:
        """The first input's frame the block is working on (a zero-copy view)."""
        return self._held[0] if self._held else None

    def _inputs_intact(self, frames: list[Frame]) -> bool:
        """False if the writer overwrote the zero-copy input while the block worked."""
        if not frames:
            return True
        if self.first_input.done_with(frames[0]):
            return True
        self.stale += 1
        return False

    def _say_copies(self) -> None:
        logging.getLogger(f"pipelined.block.{self.args.block}").info(
            "its input's writer reused a frame's slot while the block worked on it:"
            " the block works on copies of its first input until it keeps up again"
        )

    def tear_down(self) -> None:
        if self.block is not None:
            try:
                self.block.close()
            except Exception:
                traceback.print_exc()
        if self.encoder is not None:
            self.encoder.close()  # the last packets onto the wire before it is closed
        if self.events is not None:
            self.events.close()  # what the block said last goes out before we do
        if self.inbox is not None:
            self.inbox.close()
        self._held = []
        for reader in self.all_readers:
            reader.close()
        for writer in (self.writer, self.packet_writer):
            if writer is not None:
                writer.close()
        if self.heartbeat is not None:
            self.heartbeat.close()


def crash_line(exc: BaseException) -> str:
    """``crashed in setup(): NameError: name 'y' is not defined (x.py, line 12)``.

    Where: the block's method the runtime called (the first frame past this module), and
    the innermost line of code outside Python's own library and installed packages (the
    block's, usually, even when OpenCV or numpy raised).
    """
    frames = traceback.extract_tb(exc.__traceback__)
    called = next((f for f in frames if f.filename != __file__), None)
    ours = [f for f in frames if f.filename != __file__ and not _library(f.filename)]
    ours = ours or frames[-1:]
    what = (str(exc).strip().splitlines() or [""])[0]
    what = f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    if len(what) > MAX_CRASH_TEXT:
        what = what[: MAX_CRASH_TEXT - 1] + "…"
    line = "crashed"
    if called is not None and hasattr(Block, called.name):  # a method of the block's
        line += f" in {called.name}()"
    line += f": {what}"
    if ours:
        line += f" ({Path(ours[-1].filename).name}, line {ours[-1].lineno})"
    return line


MAX_CRASH_TEXT = 300
_LIBRARIES = tuple(
    {sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
)


def _library(filename: str) -> bool:
    """Python's own library or an installed package (pipelined's blocks excepted)."""
    here = str(Path(__file__).resolve().parents[1])
    return filename.startswith(_LIBRARIES) and not filename.startswith(here)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = read_worker_args(argv, sys.stdin)
    except CodecError as exc:
        print(f"pipelined worker: {exc}", file=sys.stderr)
        return EX_USAGE
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if args.type == LINK_TYPE:  # the daemon's Zenoh link: a session in place of a block
        from ..net.link import LinkWorker

        return LinkWorker(args).run()
    return Worker(args).run()
