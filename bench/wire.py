"""Compare the wire with other ways of moving camera frames between processes.

    python bench/wire.py [--sizes 640x480 ...] [--seconds 3] [--repeat 1] [--json]

For each transport and frame size, one writer and two reader processes run (started with
subprocess, as the daemon starts workers; mp-queue uses multiprocessing's spawn context,
the only way to hand a Queue over). Each run has two phases, timed on CLOCK_MONOTONIC:

- 30 fps: the writer is paced; the latency of a frame runs from the moment it is complete
  in the writer (after the fill of a loaned slot, or before the copy/send of a finished
  frame) to the moment a reader holds it (a validated view, or a finished copy).
- flat out: the writer sends as fast as it can; frames/s is what the slower reader got.

CPU% is each process's CPU time over each measured window (100 = one core), from the
scheduler's counters, psutil as the fallback. ``memcpy`` is np.copyto between two arrays
in one process, the physical limit (its p50/p99 are the time of one copy);
``x_memcpy`` is a transport's time per delivered frame over memcpy's time per frame.
Every segment and semaphore is named /pipelined.bench.<run>.… and removed at the end,
also on Ctrl-C or failure; children are killed. See bench/README.md for the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _transports import ALL, MEMCPY, TRANSPORTS, load
from _transports.child import MARK, StdioChannel, run, spawn_main
from _transports.common import READERS, Ctx, Schedule, sleep_until, source_frame

from pipelined.workers.ipc.names import RunNames, new_run_token
from pipelined.workers.ipc.segment import unlink_run

DEFAULT_SIZES = ["640x480", "1280x720", "1920x1080"]
STARTUP_TIMEOUT = 60.0  # s for every process of a transport to say ready
LAT_TARGET_MS = 0.5
CPU_TARGET_PCT = 1.0


class ChildFailed(RuntimeError):
    pass


class ProcChild:
    """A writer or reader started with subprocess; protocol lines on its stdin/stdout."""

    def __init__(self, argv: list[str], errlog: Path):
        self.errlog = errlog
        with open(errlog, "w") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,  # Ctrl-C is the parent's; it then stops the children
            )
        self.pid = self.proc.pid
        self._inbox: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self._inbox.put(json.loads(line[len(MARK) :]))
        self._inbox.put(None)

    def send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise ChildFailed(f"pid {self.pid} is gone: {self.stderr_tail()}") from None

    def expect(self, key: str, deadline: float) -> Any:
        try:
            msg = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            msg = None
        if msg is None or key not in msg:
            raise ChildFailed(f"pid {self.pid} sent no {key!r}: {self.stderr_tail()}")
        return msg[key]

    def stderr_tail(self) -> str:
        try:
            text = self.errlog.read_text().strip()
        except OSError:
            return "(no stderr)"
        return text[-1500:] or f"(exit status {self.proc.poll()})"

    def stop(self, grace: float) -> None:
        """Let it exit on its own for ``grace`` s, then SIGTERM, then SIGKILL."""
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class SpawnChild:
    """A writer or reader started by multiprocessing's spawn context (mp-queue only)."""

    def __init__(self, role: str, ctx: Ctx, index: int, handles: dict):
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        self._conn, theirs = spawn.Pipe()
        self.proc = spawn.Process(
            target=spawn_main, args=(role, ctx, index, theirs, handles), daemon=True
        )
        self.proc.start()
        theirs.close()
        self.pid = self.proc.pid

    def send(self, msg: dict) -> None:
        self._conn.send(msg)

    def expect(self, key: str, deadline: float) -> Any:
        msg = None
        try:
            if self._conn.poll(max(0.0, deadline - time.monotonic())):
                msg = self._conn.recv()
        except (EOFError, OSError):
            pass
        if msg is None or key not in msg:
            raise ChildFailed(f"pid {self.pid} sent no {key!r} (exit {self.proc.exitcode})")
        return msg[key]

    def stop(self, grace: float) -> None:
        self.proc.join(timeout=grace)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()


def _launch(role: str, ctx: Ctx, index: int, handles: dict) -> ProcChild | SpawnChild:
    if TRANSPORTS[ctx.transport].launcher == "spawn":
        return SpawnChild(role, ctx, index, handles)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        role,
        "--index",
        str(index),
        "--transport",
        ctx.transport,
        "--sizes",
        ctx.size,
        "--run",
        ctx.run,
        "--tmpdir",
        ctx.tmpdir,
    ]
    return ProcChild(argv, Path(ctx.tmpdir) / f"{ctx.label}.{role}{index}.err")


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of all of a process's threads, to the microsecond where the kernel tells.

    psutil's cpu_times() counts 10 ms ticks: over a 1 s window one tick is 1% of a core,
    too coarse to check a reader against a 1% target. The scheduler's own counters
    (/proc/PID/task/*/sched, se.sum_exec_runtime in ms) are exact; psutil is the fallback.
    """
    total = 0.0
    try:
        for task in os.scandir(f"/proc/{proc.pid}/task"):
            with open(f"{task.path}/sched") as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.rsplit(":", 1)[1]) / 1e3
                        break
                else:
                    raise OSError("no se.sum_exec_runtime")
        return total
    except (OSError, ValueError):
        t = proc.cpu_times()
        return t.user + t.system


def _percentile_ms(values_ns: list[int], q: float) -> float | None:
    return float(np.percentile(values_ns, q)) / 1e6 if values_ns else None


def measure(transport: str, size: str, seconds: float, run_token: str, tmpdir: str) -> dict:
    """One writer and two readers of one transport: the 30 fps phase, then flat out."""
    width, height = map(int, size.split("x"))
    ctx = Ctx(transport, width, height, run_token, tmpdir)
    owner = load(transport).setup(ctx)
    handles = getattr(owner, "handles", {})
    children: list[ProcChild | SpawnChild] = []
    done = False
    try:
        children.append(_launch("writer", ctx, 0, handles))
        children += [_launch("reader", ctx, i, handles) for i in range(READERS)]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for child in children:
            child.expect("ready", deadline)
        if owner is not None:
            owner.attached()
        schedule = Schedule.plan(time.monotonic_ns(), seconds)
        for child in children:
            child.send({"schedule": schedule.to_json()})
        procs = [psutil.Process(c.pid) for c in children]
        cpu: dict[str, list[float]] = {}
        for ph in schedule.phases:
            sleep_until(ph.t0)
            before = [_cpu_seconds(p) for p in procs]
            sleep_until(ph.t1)
            after = [_cpu_seconds(p) for p in procs]
            window = (ph.t1 - ph.t0) / 1e9
            cpu[ph.name] = [100 * (a - b) / window for a, b in zip(after, before, strict=True)]
        deadline = time.monotonic() + (schedule.end - time.monotonic_ns()) / 1e9 + 30
        results = [child.expect("result", deadline) for child in children]
        done = True
    finally:
        for child in children:
            child.stop(grace=5.0 if done else 0.0)
        if owner is not None:
            owner.close()
    writer, readers = results[0], results[1:]
    latency = [ns for r in readers for ns in r["latency_ns"]]
    info = TRANSPORTS[transport]
    return {
        "transport": transport,
        "size": size,
        "fps_per_reader": min(r["frames"]["flat"] for r in readers) / seconds,
        "lat_p50_ms": _percentile_ms(latency, 50),
        "lat_p99_ms": _percentile_ms(latency, 99),
        "cpu_pct": {"writer": cpu["30fps"][0], "readers": cpu["30fps"][1:]},
        "x_memcpy": None,  # filled in once memcpy of this size is known
        "write": info.write,
        "read": info.read,
        "writer_fps": writer["sent"]["flat"] / seconds,
        "cpu_pct_flat": {"writer": cpu["flat"][0], "readers": cpu["flat"][1:]},
        "torn": sum(r["torn"] for r in readers),
    }


def measure_memcpy(size: str, seconds: float) -> dict:
    """np.copyto between two preallocated frames in this process: the physical limit."""
    width, height = map(int, size.split("x"))
    src = source_frame((height, width, 3))
    dst = np.empty_like(src)
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        np.copyto(dst, src)  # warm: caches, page tables, CPU clock
    me = psutil.Process()
    cpu0, t0 = _cpu_seconds(me), time.perf_counter_ns()
    stop = t0 + int(seconds * 1e9)
    times = []
    while (a := time.perf_counter_ns()) < stop:
        np.copyto(dst, src)
        times.append(time.perf_counter_ns() - a)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    cpu = 100 * (_cpu_seconds(me) - cpu0) / elapsed
    return {
        "transport": MEMCPY,
        "size": size,
        "fps_per_reader": len(times) / elapsed,
        "lat_p50_ms": _percentile_ms(times, 50),
        "lat_p99_ms": _percentile_ms(times, 99),
        "cpu_pct": {"writer": cpu, "readers": []},
        "x_memcpy": 1.0,
        "write": "copy",
        "read": "-",
        "writer_fps": len(times) / elapsed,
        "cpu_pct_flat": {"writer": cpu, "readers": []},
        "torn": 0,
    }


def _median(values: list[Any]) -> Any:
    """Median of one field over repeats (element-wise in CPU dicts and lists; None skipped)."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _median([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [_median(list(col)) for col in zip(*values, strict=True)]
    if isinstance(first, str):
        return first
    nums = [v for v in values if v is not None]
    return statistics.median(nums) if nums else None


def combine(runs: list[dict]) -> dict:
    return {key: _median([r[key] for r in runs]) for key in runs[0]}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu(c: dict) -> str:
    return f"{c['writer']:5.1f} | " + " ".join(f"{r:4.1f}" for r in c["readers"])


def table(rows: list[dict]) -> str:
    head = (
        f"{'transport':<15} {'write/read':<10} {'size':>9} {'fps/reader':>10} {'writer fps':>10}"
        f" {'p50 ms':>7}"
        f" {'p99 ms':>7}  {'CPU% @30fps w | r r':>19}  {'CPU% flat w | r r':>19}"
        f" {'x memcpy':>8}"
    )
    lines = [head, "-" * len(head)]
    size = None
    for r in rows:
        if size is not None and r["size"] != size:
            lines.append("")
        size = r["size"]
        lines.append(
            f"{r['transport']:<15} {r['write'] + '/' + r['read']:<10} {r['size']:>9}"
            f" {_fmt(r['fps_per_reader'], 0):>10} {_fmt(r['writer_fps'], 0):>10}"
            f" {_fmt(r['lat_p50_ms'], 3):>7}"
            f" {_fmt(r['lat_p99_ms'], 3):>7}  {_cpu(r['cpu_pct']):>19}"
            f"  {_cpu(r['cpu_pct_flat']):>19} {_fmt(r['x_memcpy'], 2):>8}"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, per size: PASS or MISS with the numbers; a miss is never fatal."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        out += _size_targets(size, {r["transport"]: r for r in rows if r["size"] == size})
    return out


def _size_targets(size: str, by: dict[str, dict]) -> list[str]:
    lines: list[str] = []

    def verdict(ok: bool, text: str) -> None:
        lines.append(f"{'PASS' if ok else 'MISS'}  {size:>9}  {text}")

    loan, iox_view = by.get("wire-loan-view"), by.get("iceoryx2-view")
    if loan and iox_view:
        ours, theirs = loan["lat_p50_ms"], iox_view["lat_p50_ms"]
        verdict(
            ours is not None and theirs is not None and ours <= theirs and ours <= LAT_TARGET_MS,
            f"loaned write + zero-copy read: p50 @30fps {_fmt(ours, 3)} ms"
            f" <= iceoryx2-view {_fmt(theirs, 3)} ms, and <= {LAT_TARGET_MS} ms",
        )
        ours, theirs = loan["fps_per_reader"], iox_view["fps_per_reader"]
        verdict(
            ours >= theirs,
            f"loaned write + zero-copy read: flat out {_fmt(ours, 0)} fps/reader"
            f" >= iceoryx2-view {_fmt(theirs, 0)}",
        )
    copy, iox_copy = by.get("wire-copy"), by.get("iceoryx2-copy")
    if copy and iox_copy:
        ours, theirs = copy["fps_per_reader"], iox_copy["fps_per_reader"]
        verdict(
            ours >= theirs,
            f"copy-out read: flat out {_fmt(ours, 0)} fps/reader"
            f" >= iceoryx2-copy {_fmt(theirs, 0)}",
        )
    for name in ("wire-view", "wire-loan-view"):
        if row := by.get(name):
            cpu = max(row["cpu_pct"]["readers"])
            verdict(
                cpu < CPU_TARGET_PCT,
                f"{name}: a reader at 30 fps uses {cpu:.2f}% of a core, < {CPU_TARGET_PCT}%",
            )
    return lines


def _machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1, load5, _ = os.getloadavg()
    return f"nproc {os.cpu_count()}, {model}, load average {load1:.2f} {load5:.2f} at start"


def _rounded(row: dict) -> dict:
    def r(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 4) if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: r(x) for k, x in v.items()}
        if isinstance(v, list):
            return [r(x) for x in v]
        return v

    return {k: r(v) for k, v in row.items()}


def bench(args: argparse.Namespace) -> int:
    started = datetime.datetime.now()
    machine = _machine()  # before we add load of our own
    names = RunNames("bench", new_run_token())
    # Short and under /tmp: iceoryx2's and zmq's unix socket paths must fit in 108 bytes.
    tmpdir = tempfile.mkdtemp(prefix="plb-", dir="/tmp")
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    wanted = [t for t in TRANSPORTS if t in args.transports]
    runs: dict[tuple[str, str], list[dict]] = {}
    failed = []
    try:
        for rep in range(args.repeat):
            for size in args.sizes:
                runs.setdefault((MEMCPY, size), []).append(measure_memcpy(size, args.seconds))
                for transport in wanted:
                    say(f"[{rep + 1}/{args.repeat}] {size} {transport} ...")
                    try:
                        row = measure(transport, size, args.seconds, names.run, tmpdir)
                    except ChildFailed as exc:
                        say(f"  {transport} {size} failed: {exc}")
                        failed.append((transport, size))
                        continue
                    runs.setdefault((transport, size), []).append(row)
    except KeyboardInterrupt:
        say("interrupted: children stopped, shared memory removed")
        return 130
    finally:
        unlink_run(names)
        shutil.rmtree(tmpdir, ignore_errors=True)
    rows = []
    for size in args.sizes:
        memcpy = combine(runs[(MEMCPY, size)])
        for transport in [*wanted, MEMCPY]:
            if (transport, size) not in runs:
                continue
            row = combine(runs[(transport, size)])
            fps = row["fps_per_reader"]
            row["x_memcpy"] = memcpy["fps_per_reader"] / fps if fps > 0 else None
            rows.append(row)
    checks = targets(rows)
    if args.json:
        for row in rows:
            print(json.dumps(_rounded(row)))
        for line in checks:
            say(line)
    else:
        print(
            f"pipelined bench/wire.py, {started:%Y-%m-%d %H:%M}, {machine}\n"
            f"1 writer -> {READERS} reader processes, BGR frames,"
            f" {args.seconds:g} s per phase, median of {args.repeat}\n"
        )
        print(table(rows))
        print("\nTargets (this machine, this run):")
        print("\n".join(checks) or "(none: needs wire-loan-view, iceoryx2-*, wire-copy)")
    for transport, size in failed:
        say(f"FAILED to measure {transport} at {size}")
    return 1 if failed else 0


def _sizes(values: list[str]) -> list[str]:
    sizes = [s for v in values for s in v.split(",") if s]
    for s in sizes:
        w, _, h = s.partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise SystemExit(f"bad size {s!r}: use WIDTHxHEIGHT, e.g. 640x480")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="WIDTHxHEIGHT ...")
    p.add_argument("--seconds", type=float, default=3.0, help="measured time per phase")
    p.add_argument("--repeat", type=int, default=1, help="runs per row; the median is shown")
    p.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=ALL)
    p.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    p.add_argument(
        "--overhead",
        action="store_true",
        help="only the per-call cost of the wire's and iceoryx2's APIs, hot, in one process",
    )
    p.add_argument("--child", choices=["writer", "reader"], help=argparse.SUPPRESS)
    p.add_argument("--transport", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--tmpdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = _sizes(args.sizes)
    if args.child:
        w, h = map(int, args.sizes[0].split("x"))
        ctx = Ctx(args.transport, w, h, args.run, args.tmpdir)
        return run(args.child, ctx, args.index, StdioChannel())
    if args.seconds <= 0 or args.repeat < 1:
        p.error("--seconds must be > 0 and --repeat >= 1")
    if args.overhead:
        from _transports import overhead

        for size in args.sizes:
            for label, us in overhead.measure(size):
                print(f"{size:>9}  {label:<40} {us:7.2f} us")
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
