"""Small stand-in processes for the wire tests: a writer and a reader with checks.

Every frame the writer sends is filled with one byte value, ``seq % 251``; a reader that
finds any other byte in a frame has been handed a torn frame. Roles print one JSON line
when they are ready and one with their results when they end.

    python standins.py writer INSTANCE RUN BLOCK --frames N --fps F --shape H,W,C [--loan]
    python standins.py half-writer INSTANCE RUN BLOCK --shape H,W,C
    python standins.py reader INSTANCE RUN BLOCK INDEX [--copy] [--sleep S] [--idle S] [--until N]
    python standins.py parent INSTANCE RUN TALLY_PATH   (a stand-in supervisor)
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import numpy as np

from pipelined.workers.contract import WorkerArgs, launch_command
from pipelined.workers.ipc.heartbeat import RUNNING, Beat, Heartbeat
from pipelined.workers.ipc.liveness import ProcessIdentity
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter

BLOCKS = "userblocks.runtime_blocks"


def fill_value(seq: int) -> int:
    return seq % 251


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def writer(names: RunNames, block: str, opts: argparse.Namespace) -> None:
    shape = tuple(int(x) for x in opts.shape.split(","))
    w = WireWriter(names, block)
    say(ready=True, first=w.frames + 1)
    period = 1.0 / opts.fps if opts.fps else 0.0
    start = time.monotonic()
    for i in range(opts.frames):
        seq = w.frames + 1
        if opts.loan:
            w.borrow(shape, np.uint8)[...] = fill_value(seq)
            w.publish()
        else:
            w.write(np.full(shape, fill_value(seq), np.uint8))
        if period:
            time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
    say(done=True, last=w.frames, seconds=time.monotonic() - start)
    w.close()


def half_writer(names: RunNames, block: str, opts: argparse.Namespace) -> None:
    """Borrow a slot, write half a frame, then wait to be killed mid-frame."""
    shape = tuple(int(x) for x in opts.shape.split(","))
    w = WireWriter(names, block)
    out = w.borrow(shape, np.uint8)
    flat = out.reshape(-1)
    flat[: flat.size // 2] = fill_value(w.frames + 1)
    say(half=True, seq=w.frames + 1)
    signal.pause()


def reader(names: RunNames, block: str, opts: argparse.Namespace) -> None:
    r = WireReader(names, block, opts.index)
    say(ready=True)
    seqs: list[int] = []
    torn = 0
    stale = 0
    while True:
        frame = (r.read_copy if opts.copy else r.read)(timeout=opts.idle)
        if frame is None:
            break
        good = bool((frame.array == fill_value(frame.seq)).all())
        if opts.sleep:
            time.sleep(opts.sleep)
        if opts.copy or frame.intact():
            torn += not good
        else:
            stale += 1  # overwritten while we held it: the reader knows, and drops it
        seqs.append(frame.seq)
        if opts.frames and len(seqs) >= opts.frames:
            break
        if opts.until and frame.seq >= opts.until:
            break
    say(seqs=seqs, torn=torn, stale=stale, dropped=r.dropped)
    r.close()


def launch_chain(names: RunNames, tally: str) -> dict[str, subprocess.Popen]:
    """Counter -> Invert -> Tally as three workers of this process, wires and all.

    Uses only the workers' side (wires, heartbeats, WorkerArgs): this is how any
    supervisor, the real daemon included, has to start blocks.
    """
    Wire.create(names, "count", 32 * 32 * 3, readers=1).close()
    Wire.create(names, "inv", 32 * 32 * 3, readers=1).close()
    chain = {
        "count": ("Counter", {"fps": 100.0, "side": 32}, [], True),
        "inv": ("Invert", {}, [("count", 0)], True),
        "tally": ("Tally", {"path": tally}, [("inv", 0)], False),
    }
    procs = {}
    for block, (cls, params, inputs, output) in chain.items():
        Heartbeat.create(names, block).close()
        args = WorkerArgs(
            names.instance, names.run, block, f"{BLOCKS}:{cls}", params, inputs, output,
            supervisor=tuple(ProcessIdentity.me().encode()), liveness_interval=0.2,
        )  # fmt: skip
        procs[block] = subprocess.Popen(launch_command(args).argv, stderr=subprocess.PIPE)
    return procs


def wait_running(names: RunNames, blocks, timeout: float = 60) -> None:
    beats = [Heartbeat.attach(names, b) for b in blocks]
    deadline = time.monotonic() + timeout
    while not all((b.read() or Beat()).state == RUNNING for b in beats):
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not report RUNNING")
        time.sleep(0.05)
    for b in beats:
        b.close()


def parent(names: RunNames, tally: str) -> None:
    procs = launch_chain(names, tally)
    wait_running(names, procs)
    say(pids=[p.pid for p in procs.values()])
    signal.pause()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "half-writer", "reader", "parent"])
    parser.add_argument("instance")
    parser.add_argument("run")
    parser.add_argument("block")
    parser.add_argument("index", nargs="?", type=int, default=0)
    parser.add_argument("--frames", type=int, default=0)
    parser.add_argument("--fps", type=float, default=0.0)
    parser.add_argument("--shape", default="48,64,3")
    parser.add_argument("--loan", action="store_true")
    parser.add_argument("--copy", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--until", type=int, default=0, help="stop after this frame")
    opts = parser.parse_args()
    names = RunNames(opts.instance, opts.run)
    if opts.role == "parent":
        return parent(names, opts.block)
    role = {"writer": writer, "half-writer": half_writer, "reader": reader}[opts.role]
    role(names, opts.block, opts)


if __name__ == "__main__":
    sys.exit(main())
