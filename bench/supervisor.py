"""Measure the supervisor daemon: its CPU, restarts, cleanup, control latency, startup.

    python bench/supervisor.py [--quick] [--json]

One run measures, with real daemons (``python -m pipelined.daemon.main``), real workers
and real sockets:

- demo: the built-in graph (no --graph: 5 blocks running, its screen waiting to be
  asked, on every box): the daemon's own CPU over a window (psutil cpu_times of the daemon process,
  100 = one core); ``pipectl status --json`` as a subprocess (what a user waits for) and
  ``Client.call("status")`` on one open connection (the daemon's share); then SIGKILL of
  the daemon until every worker is gone and /dev/shm holds nothing of the instance.
- restart: ``count -> invert`` (userblocks Counter and Invert); SIGKILL of invert's
  worker until status shows a new pid RUNNING, polled every 10 ms on one connection.
  The graph sets ``backoff_max = backoff_initial = 0.1`` (0.1 s is the default initial
  backoff): the daemon only resets its consecutive-crash count after a worker ran
  STABLE_AFTER = 10 s, so without the cap kill k would wait 0.1 * 2**(k-1) s, and with
  10 s waits 20 kills would take minutes. The cap makes every kill take the path a
  first crash takes with the defaults. ``restart_limit`` is high and ``restart_window``
  short so the block never ends FAILED. Inner marks: the new pid launched, and the
  worker's first RUNNING heartbeat (its own beat_ns, read from its record), so the
  daemon's share (first beat -> RUNNING) shows apart from the worker's imports.
- 20 blocks: a Counter and 19 Invert/Tally readers; daemon launch to its first answer
  and to every block RUNNING, then SIGKILL of the daemon to clean, as above.
- supervisord (if ``pip install supervisor``): one program importing what the invert
  worker imports (pipelined.workers.runtime.worker, userblocks.runtime_blocks), autorestart,
  ``startsecs=0``: with startsecs=1 RUNNING would mean "alive for 1 s" and the number
  would be 1 s plus noise. startsecs=0 makes supervisord call it RUNNING at fork, before
  any import, so the like-for-like number is "replacement's imports done" (the program
  writes its pid to a file then, polled) next to "new pid RUNNING" polled over XML-RPC
  on supervisord's Unix socket. Those polls wake supervisord's loop, which otherwise
  respawns only on its 1 s poll timeout, so a second series of kills polls only the file.

Daemons start as the tests start them (tests/harness/daemon.py): each with an instance,
a socket and a folder of its own, here under the bench's temp dir. Targets are the
issue's; a MISS is printed, never an error exit. Everything is cleaned up on any exit:
daemons and their workers stopped, supervisord stopped, temp dirs and /dev/shm entries
removed. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from pipelined.ctl.client import Client, DaemonUnreachable
from pipelined.workers.ipc.heartbeat import STARTING, Heartbeat
from pipelined.workers.ipc.names import RunNames

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's folder is sys.path[0], and this file, supervisor.py, would
# shadow the supervisor package (supervisord's) that the comparison imports. tests/ holds
# the daemon harness and the test blocks.
sys.path[:] = [str(ROOT / "tests"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]
from harness.daemon import RunningDaemon, child_env, sigterm_as_interrupt, wait_for  # noqa: E402
from harness.graphs import counter, graph, invert, tally  # noqa: E402

POLL = 0.01  # s between status polls
SETTLE = 2.0  # s after every block is RUNNING before the CPU window
KILLED_BLOCK = "invert"
RESTART_SUPERVISION = (
    "backoff_initial = 0.1\nbackoff_max = 0.1\nrestart_limit = 1000\nrestart_window = 1.0\n"
)
SD_PROGRAM = """\
import os, sys, time
import pipelined.workers.runtime.worker, userblocks.runtime_blocks  # what the invert worker imports
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
time.sleep(1e6)
"""


@dataclass
class Row:
    """One line of the table: a median (the single value if n == 1) and a p99."""

    key: str
    label: str
    unit: str
    n: int
    median: float
    p99: float
    target: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        return "PASS" if self.median < self.target else "MISS"


def row(
    key: str,
    label: str,
    unit: str,
    samples: list[float],
    target: float | None = None,
    note: str = "",
) -> Row:
    """Median and nearest-rank p99 (the max for n <= 100) of ``samples``."""
    ordered = sorted(samples)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return Row(key, label, unit, len(samples), statistics.median(ordered), p99, target, note)


class Bench:
    """Owns every process and directory the run creates, so ``close`` can remove them."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pbs", dir="/tmp"))  # AF_UNIX paths are short
        self.daemons: list[RunningDaemon] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self.env = child_env()  # the demo is the same blocks everywhere, no screen window

    @property
    def instances(self) -> list[str]:
        return [d.instance for d in self.daemons]

    def daemon(self, tag: str, text: str | None) -> RunningDaemon:
        """A daemon of its own instance, socket and folder, not started yet."""
        d = RunningDaemon(text, prefix=f"bs{tag}", parent=self.tmp)
        self.daemons.append(d)
        return d

    def close(self) -> None:
        for d in self.daemons:
            try:
                d.close()
            except Exception as exc:  # keep cleaning the others
                print(f"bench: cleaning up {d.instance}: {exc}", file=sys.stderr)
        for proc in self.others:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------


def until(check: Callable[[], Any], timeout: float, what: str, every: float = POLL) -> Any:
    """Poll ``check`` every ``every`` s until it returns something true."""
    errors = (DaemonUnreachable, OSError, xmlrpc.client.Fault)
    return wait_for(check, timeout, what, every, errors)


def with_no_such_process(action: Callable[[], Any]) -> None:
    try:
        action()
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def gone(pid: int) -> bool:
    """Exited: no process, or a zombie waiting for init (it holds no shm mapping)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_running(client: Client) -> dict[str, Any] | None:
    """The status once every block runs (those with autostart = false wait, STOPPED)."""
    status = client.call("status")
    settled = all(
        b["state"] == ("RUNNING" if b.get("autostart", True) else "STOPPED")
        for b in status["blocks"]
    )
    return status if settled else None


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def kill_daemon_until_clean(d: RunningDaemon, client: Client) -> float:
    """SIGKILL the daemon; seconds until its workers are gone and /dev/shm is clean."""
    pids = [b["pid"] for b in client.call("status")["blocks"] if b["pid"]]
    client.close()
    t0 = time.monotonic()
    d.kill()
    until(lambda: all(map(gone, pids)) and not d.runs(), 30, "cleanup", every=0.002)
    return time.monotonic() - t0


# -- phases ----------------------------------------------------------------------------


def demo(bench: Bench, quick: bool) -> list[Row]:
    """CPU of the daemon running the built-in demo; status round trips; kill to clean."""
    d = bench.daemon("d", None).start()
    client = d.client()
    until(lambda: all_running(client), 120, "the demo RUNNING")
    time.sleep(SETTLE)
    daemon = psutil.Process(d.proc.pid)
    blocks = client.call("status")["blocks"]
    workers = [psutil.Process(b["pid"]) for b in blocks if b["pid"] is not None]  # not screen
    window = 3.0 if quick else 10.0
    c0, w0, t0 = cpu_seconds(daemon), sum(map(cpu_seconds, workers)), time.monotonic()
    time.sleep(window)
    c1, w1, t1 = cpu_seconds(daemon), sum(map(cpu_seconds, workers)), time.monotonic()
    rows = [
        row(
            "daemon_cpu",
            "daemon CPU, demo running",
            "% core",
            [100 * (c1 - c0) / (t1 - t0)],
            1.0,
            f"{window:g} s window, status not polled",
        ),
        row(
            "demo_workers_cpu",
            f"demo's {len(workers)} workers' CPU (context)",
            "% core",
            [100 * (w1 - w0) / (t1 - t0)],
        ),
    ]
    calls = []
    for _ in range(20 if quick else 200):
        t = time.perf_counter()
        client.call("status")
        calls.append(1000 * (time.perf_counter() - t))
    size = len(json.dumps(client.call("status")))
    pipectl = shutil.which("pipectl", path=str(Path(sys.executable).parent)) or "pipectl"
    cli = []
    for _ in range(5 if quick else 20):
        t = time.perf_counter()
        out = subprocess.run(
            [pipectl, "--socket", str(d.socket), "status", "--json"],
            capture_output=True,
            check=True,
            env=bench.env,
        )
        cli.append(1000 * (time.perf_counter() - t))
        json.loads(out.stdout)
    rows += [
        row(
            "status_cli",
            "`pipectl status --json` end to end",
            "ms",
            cli,
            100.0,
            "subprocess, incl. interpreter start",
        ),
        row(
            "status_client",
            "Client.call('status') round trip",
            "ms",
            calls,
            note=f"one connection, {size} B reply",
        ),
        row(
            "daemon_kill_clean_demo",
            f"daemon SIGKILL -> clean, demo ({len(workers)} workers)",
            "s",
            [kill_daemon_until_clean(d, client)],
            0.5,
            "workers gone and /dev/shm empty",
        ),
    ]
    return rows


def _note_ready(beat: Heartbeat, old: int, marks: dict[str, float], t0: float) -> None:
    """Mark the replacement's first RUNNING beat (polled faster than the worker beats)."""
    first = beat.read()
    if first and first.pid != old and first.state != STARTING:
        marks.setdefault("ready", first.beat_ns / 1e9 - t0)


def restart(bench: Bench, kills: int) -> list[Row]:
    """SIGKILL a worker ``kills`` times; time until status shows its replacement RUNNING."""
    text = graph(counter(fps=30), invert(KILLED_BLOCK, "count"), supervisor=RESTART_SUPERVISION)
    d = bench.daemon("r", text).start()
    client = d.client()
    status = until(lambda: all_running(client), 120, "count and invert RUNNING")
    beat = Heartbeat.attach(RunNames(d.instance, status["run"]), KILLED_BLOCK)
    launched, ready, running, noticed = [], [], [], []
    try:
        for _ in range(kills):
            time.sleep(0.3)  # let the replacement settle; the capped backoff needs no more
            old = block_of(client)["pid"]
            marks: dict[str, float] = {}
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            while "running" not in marks:
                _note_ready(beat, old, marks, t0)
                b = block_of(client)
                new = b["pid"] not in (None, old)
                if new and "launched" not in marks:
                    marks["launched"] = time.monotonic() - t0
                if new and b["state"] == "RUNNING":
                    marks["running"] = time.monotonic() - t0
                    # The daemon saw the beat between our two looks: it is there now (at
                    # worst one beat period late, on a box too busy to poll every 10 ms).
                    _note_ready(beat, old, marks, t0)
                if time.monotonic() - t0 > 30:
                    raise TimeoutError(f"no replacement RUNNING: {b}\n{d.log_text()[-2000:]}")
                time.sleep(POLL)
            ready.append(marks["ready"])
            launched.append(marks["launched"])
            running.append(marks["running"])
            noticed.append(marks["running"] - marks["ready"])
        restarts = block_of(client)["restarts"]
    finally:
        beat.close()
        client.close()
        d.close()
    return [
        row(
            "kill_to_running",
            "worker SIGKILL -> replacement RUNNING",
            "s",
            running,
            0.5,
            f"status polled every {POLL * 1000:g} ms; {restarts} restarts counted",
        ),
        row(
            "kill_to_launch",
            "  of which: -> new pid launched",
            "s",
            launched,
            note="incl. backoff_initial 0.1 s",
        ),
        row(
            "kill_to_ready",
            "  of which: -> worker's first RUNNING beat",
            "s",
            ready,
            note="imports + set-up done (the worker's beat_ns)",
        ),
        row(
            "kill_notice",
            "  daemon's share: first beat -> RUNNING",
            "s",
            noticed,
            note="heartbeats are read every 10 ms while a block starts",
        ),
    ]


def block_of(client: Client) -> dict[str, Any]:
    return client.call("status", blocks=[KILLED_BLOCK])["blocks"][0]


def twenty(bench: Bench, runs: int) -> list[Row]:
    """Launch a 20-block graph until all RUNNING; then SIGKILL the daemon until clean."""
    answers, starts, cleans = [], [], []
    for _ in range(runs):
        out = bench.tmp / f"tally{len(starts)}"
        out.mkdir()
        blocks = [counter(fps=30)]
        for i in range(1, 13):  # inv01 reads count; the others fan out and chain from it
            blocks.append(invert(f"inv{i:02d}", "count" if i <= 6 else f"inv{i - 6:02d}"))
        blocks += [tally(f"tally{i}", f"inv{i + 5:02d}", f"{out}/t{i}") for i in range(1, 8)]
        d = bench.daemon("t", graph(*blocks))
        t0 = time.monotonic()
        d.start()
        client = d.client()
        until(lambda c=client: c.call("hello"), 120, "the daemon to answer")
        answers.append(time.monotonic() - t0)
        status = until(lambda c=client: all_running(c), 120, "20 blocks RUNNING")
        starts.append(time.monotonic() - t0)
        assert len(status["blocks"]) == 20
        cleans.append(kill_daemon_until_clean(d, client))
        d.close()
    return [
        row(
            "start_20", "launch -> 20 blocks RUNNING", "s", starts, note="from Popen of the daemon"
        ),
        row(
            "start_20_answers",
            "  of which: -> daemon answers hello",
            "s",
            answers,
            note="graph loaded, wires made, 20 workers launched",
        ),
        row(
            "daemon_kill_clean_20",
            "daemon SIGKILL -> clean, 20 workers",
            "s",
            cleans,
            0.5,
            "workers gone and /dev/shm empty",
        ),
    ]


def supervisord(bench: Bench, kills: int) -> list[Row]:
    """The same restart under supervisord: polled over XML-RPC, then left alone."""
    from supervisor.xmlrpc import SupervisorTransport

    home = bench.tmp / "supervisord"
    home.mkdir()
    sock, ready_file, program = home / "sd.sock", home / "ready", home / "worker.py"
    program.write_text(SD_PROGRAM)
    conf = home / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\nchmod=0700\n"
        f"[supervisord]\nnodaemon=true\nlogfile={home}/supervisord.log\n"
        f"pidfile={home}/supervisord.pid\nchildlogdir={home}\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[program:worker]\ncommand={sys.executable} {program} {ready_file}\n"
        "autorestart=true\nstartsecs=0\nstartretries=1000\nstopwaitsecs=5\n"
        f'environment=PYTHONPATH="{bench.env["PYTHONPATH"]}"\n'
        f"redirect_stderr=true\nstdout_logfile={home}/worker.log\n"
    )
    sd_bin = Path(sys.executable).with_name("supervisord")
    cmd = [str(sd_bin)] if sd_bin.exists() else [sys.executable, "-m", "supervisor.supervisord"]
    bench.others.append(
        proc := subprocess.Popen(
            [*cmd, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )
    rpc = xmlrpc.client.ServerProxy(
        "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}")
    ).supervisor

    def info() -> dict[str, Any]:
        return rpc.getProcessInfo("worker")

    def ready_pid() -> int | None:
        try:
            return int(ready_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    try:
        until(
            lambda: sock.exists() and info()["statename"] == "RUNNING" and ready_pid(),
            60,
            "supervisord's worker",
        )
        polled, polled_ready, alone = [], [], []
        for series in (polled, alone):
            for _ in range(kills):
                time.sleep(0.3)
                old = info()["pid"]
                until(lambda o=old: ready_pid() == o, 30, "the worker's imports")
                t0 = time.monotonic()
                os.kill(old, signal.SIGKILL)
                if series is polled:
                    until(
                        lambda o=old: (
                            (i := info())["pid"] not in (0, o) and i["statename"] == "RUNNING"
                        ),
                        30,
                        "supervisord RUNNING",
                    )
                    polled.append(time.monotonic() - t0)
                until(lambda o=old: ready_pid() not in (None, o), 30, "new pid's imports")
                (polled_ready if series is polled else alone).append(time.monotonic() - t0)
    finally:
        with_no_such_process(lambda: rpc.shutdown())
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        pid = ready_pid()
        if pid is not None and not gone(pid):
            with_no_such_process(lambda: os.kill(pid, signal.SIGKILL))
    return [
        row(
            "sd_kill_to_running",
            "supervisord: SIGKILL -> new pid RUNNING",
            "s",
            polled,
            note="startsecs=0, XML-RPC polled every 10 ms",
        ),
        row(
            "sd_kill_to_ready_polled",
            "  of which: -> replacement imports done",
            "s",
            polled_ready,
            note="same kills",
        ),
        row(
            "sd_kill_to_ready",
            "supervisord: SIGKILL -> imports done, not polled",
            "s",
            alone,
            note="supervisord respawns on its next 1 s poll timeout",
        ),
    ]


# -- output ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((x.split(":", 1)[1].strip() for x in cpuinfo if "model name" in x), "?")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit(),
    }


def commit() -> str:
    """The tree measured: HEAD, and whether the code under test had local changes."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "daemon", "workers", "ctl"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + local changes in daemon/workers/ctl" if dirty else "")


def table(rows: list[Row]) -> str:
    def num(v: float) -> str:
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"

    head = ("measurement", "n", "median", "p99", "unit", "target", "", "note")
    body = [
        (
            r.label,
            str(r.n),
            num(r.median),
            num(r.p99) if r.n > 1 else "",
            r.unit,
            f"< {r.target:g}" if r.target is not None else "",
            r.verdict,
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    right = {1, 2, 3}
    lines = []
    for line in [head, *body]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 kills, short windows")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    opts = parser.parse_args(argv)
    kills = 5 if opts.quick else 20
    has_sd = importlib.util.find_spec("supervisor") is not None
    meta = {**machine(), "quick": opts.quick, "load_before": os.getloadavg()}
    bench = Bench()
    rows: list[Row] = []
    with sigterm_as_interrupt():
        try:
            rows += demo(bench, opts.quick)
            rows += restart(bench, kills)
            rows += twenty(bench, 1 if opts.quick else 3)
            if has_sd:
                rows += supervisord(bench, kills)
        finally:
            bench.close()
    meta |= {"load_after": os.getloadavg(), "instances": bench.instances, "tmp": str(bench.tmp)}
    if not has_sd:
        meta["skipped"] = ["supervisord: `pip install supervisor` to compare"]
    if opts.json:
        print(json.dumps({**meta, "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]}))
        return 0
    load = " / ".join(f"{a:.2f}" for a in meta["load_before"])
    print(f"{meta['date']}  {meta['cpu']}, {meta['cores']} cores, load before {load}")
    print(f"commit {meta['commit']}")
    print(table(rows))
    for note in meta.get("skipped", []):
        print(f"skipped {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
