"""One block's worker process over its life: launch, heartbeat, exit, restart policy.

The daemon's event loop learns of an exit at once through a pidfd, and of a hang through
the heartbeat the worker writes in shared memory. Everything here runs on that one
loop, in its thread: no locks, and a stop can never race a restart.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import os
import select
import signal
import subprocess
import time
from typing import Any

import psutil

from pipelined.workers.codec import CodecError
from pipelined.workers.contract import EX_CONFIG, WorkerArgs
from pipelined.workers.ipc.heartbeat import STARTING, Beat, Heartbeat

from .graph import BlockSpec
from .launch import launch
from .states import ALIVE, STARTABLE, STOPPABLE, State, check_move

log = logging.getLogger("pipelined.block")
STABLE_AFTER = 10.0
"""A worker that ran this long before crashing restarts with the initial backoff again."""
STDERR_LINES = 20


class BlockProcess:
    """A block's worker, its state, and what status reports of it."""

    def __init__(self, spec: BlockSpec, args: WorkerArgs, heartbeat: Heartbeat):
        self.spec = spec
        self.args = args
        self.heartbeat = heartbeat
        self.state = State.STOPPED
        self.reason: str | None = None
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.proc: subprocess.Popen | None = None
        self._ps: psutil.Process | None = None
        self._pidfd: int | None = None
        self._stderr_fd: int | None = None
        self._partial = b""
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._launched = 0.0
        self._running_since: float | None = None
        self._crashes: collections.deque[float] = collections.deque()
        self._consecutive = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._kill_reason: str | None = None
        self._restart_after_stop = False
        self._beat: Beat | None = None
        self._sample: tuple[float, int, int] | None = None
        self.fps = self.fps_in = self.cpu_percent = 0.0
        self.rss_bytes = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def _log_extra(self) -> dict[str, Any]:
        """Fields for the journal: which block, and which worker process."""
        return {"block": self.name, "worker_pid": self.proc.pid if self.proc else None}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.state in ALIVE else None

    def _move(self, new: State, reason: str | None = None) -> None:
        check_move(self.state, new)
        if new != self.state:
            why = f" ({reason})" if reason else ""
            log.info("%s: %s -> %s%s", self.name, self.state, new, why, extra=self._log_extra)
        self.state = new
        self.reason = reason

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the worker (a no-op if it is already up or on its way)."""
        if self.state not in STARTABLE and self.state != State.BACKOFF:
            return
        self._cancel_timer()
        self._move(State.STARTING)
        self._launch()

    def _launch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.proc = launch(self.args)
        except (OSError, CodecError) as exc:  # arguments too long, no memory, no fds left
            self.proc = None
            self._move(State.FAILED, f"cannot launch the worker: {exc}")
            log.error("%s: cannot launch the worker: %s", self.name, exc, extra=self._log_extra)
            return
        self._launched = time.monotonic()
        self._running_since = None
        self._beat = None
        self._sample = None
        self._kill_reason = None
        try:
            self._ps = psutil.Process(self.proc.pid)
        except psutil.Error:
            self._ps = None
        self._pidfd = os.pidfd_open(self.proc.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        self._stderr_fd = self.proc.stderr.fileno()
        os.set_blocking(self._stderr_fd, False)
        loop.add_reader(self._stderr_fd, self._read_stderr)
        log.info(
            "%s: started %s as pid %d",
            self.name,
            self.spec.type,
            self.proc.pid,
            extra=self._log_extra,
        )

    # -- stop -------------------------------------------------------------------------

    def stop(self) -> asyncio.Future[None]:
        """Ask the worker to stop: SIGTERM, then SIGKILL after stop_timeout.

        The future completes once the block is STOPPED. A block in BACKOFF stops at once:
        its pending restart is cancelled, so a stop is never undone by the restart logic.
        """
        loop = asyncio.get_running_loop()
        self._restart_after_stop = False
        if self.state == State.BACKOFF:
            self._cancel_timer()
            self._move(State.STOPPED)
        if self.state in STOPPABLE:
            self._move(State.STOPPING)
            self._stopped = loop.create_future()
            self._signal(signal.SIGTERM)
            self._timer = loop.call_later(
                self.spec.supervision.stop_timeout, self._signal, signal.SIGKILL
            )
        if self.state == State.STOPPING and self._stopped is not None:
            return self._stopped
        done = loop.create_future()
        done.set_result(None)
        return done

    def restart(self) -> None:
        """Stop, then start again once the old worker is gone."""
        if self.state in STARTABLE or self.state == State.BACKOFF:
            self.start()
            return
        self.stop()
        self._restart_after_stop = True

    def kill(self, reason: str) -> None:
        """Kill a hung worker; its exit is handled as a crash, with this reason."""
        self._kill_reason = reason
        log.warning("%s: %s; killing pid %s", self.name, reason, self.pid, extra=self._log_extra)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    # -- exit -------------------------------------------------------------------------

    def _on_exit(self) -> None:
        code = self.proc.wait()
        self._close_fds()
        self._cancel_timer()
        ran = time.monotonic() - (self._running_since or self._launched)
        self.last_exit = {
            "code": code if code >= 0 else None,
            "signal": signal.Signals(-code).name if code < 0 else None,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "stderr_tail": "\n".join(self._tail),
        }
        if self._kill_reason:
            self.last_exit["reason"] = self._kill_reason
        self._tail.clear()
        self._running_since = None
        self.fps = self.fps_in = self.cpu_percent = 0.0
        self.rss_bytes = 0
        how = f"signal {self.last_exit['signal']}" if code < 0 else f"code {code}"
        log.info(
            "%s: pid %d exited with %s after %.1f s",
            *(self.name, self.proc.pid, how, ran),
            extra=self._log_extra,
        )
        if self.state == State.STOPPING:
            self._move(State.STOPPED)
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
            if self._restart_after_stop:
                self._restart_after_stop = False
                self.start()
            return
        self._after_unrequested_exit(code, ran)

    def _after_unrequested_exit(self, code: int, ran: float) -> None:
        sup = self.spec.supervision
        if code == EX_CONFIG:
            last = self.last_exit["stderr_tail"].strip().splitlines()
            self._move(
                State.FAILED, last[-1] if last else "the block cannot run this configuration"
            )
            return
        if sup.restart == "never" or (sup.restart == "on-failure" and code == 0):
            self._move(
                State.EXITED, f"exited with {'code ' + str(code) if code >= 0 else 'a signal'}"
            )
            return
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > sup.restart_window:
            self._crashes.popleft()
        if len(self._crashes) > sup.restart_limit:
            self._move(
                State.FAILED,
                f"exited {len(self._crashes)} times within {sup.restart_window:g} s"
                f" (restart_limit {sup.restart_limit}); last: {self._exit_summary()}",
            )
            return
        self._consecutive = 1 if ran >= STABLE_AFTER else self._consecutive + 1
        delay = min(sup.backoff_initial * 2 ** (self._consecutive - 1), sup.backoff_max)
        self._move(State.BACKOFF, f"{self._exit_summary()}; restarting in {delay:.2g} s")
        self._timer = asyncio.get_running_loop().call_later(delay, self._restart_now)

    def _restart_now(self) -> None:
        self._timer = None
        if self.state == State.BACKOFF:
            self.restarts += 1
            self._move(State.STARTING)
            self._launch()

    def _exit_summary(self) -> str:
        e = self.last_exit or {}
        what = f"killed by {e['signal']}" if e.get("signal") else f"exit code {e.get('code')}"
        return f"{e['reason']}, {what}" if e.get("reason") else what

    # -- heartbeat and metrics ----------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        """Read the heartbeat: STARTING -> RUNNING on the first beat; hangs get killed."""
        if self.state not in (State.STARTING, State.RUNNING) or self.proc is None:
            return
        beat = self.heartbeat.read()
        if beat is not None and beat.pid == self.proc.pid:
            self._beat = beat
        sup = self.spec.supervision
        if self.state == State.STARTING:
            if self._beat is not None and self._beat.state != STARTING:
                self._running_since = time.monotonic()
                self._move(State.RUNNING, self._beat.reason)
            elif sup.startup_timeout and time.monotonic() - self._launched > sup.startup_timeout:
                self.kill(f"no heartbeat within startup_timeout ({sup.startup_timeout:g} s)")
            return
        self.reason = self._beat.reason if self._beat else None
        if sup.watchdog and self._beat is not None:
            silent = (now_ns - self._beat.beat_ns) / 1e9
            if silent > sup.watchdog:
                self.kill(f"hung: no heartbeat for {silent:.1f} s (watchdog {sup.watchdog:g} s)")

    def sample(self) -> None:
        """CPU, memory and frame rates, about once a second."""
        if self._ps is None or self.state not in (State.STARTING, State.RUNNING):
            return
        try:
            with self._ps.oneshot():
                self.cpu_percent = self._ps.cpu_percent(None)
                self.rss_bytes = self._ps.memory_info().rss
        except psutil.Error:
            return
        beat = self._beat
        if beat is None:
            return
        now = time.monotonic()
        if self._sample is not None:
            then, frames_out, frames_in = self._sample
            dt = now - then
            if dt > 0:
                self.fps = (beat.frames_out - frames_out) / dt
                self.fps_in = (beat.frames_in - frames_in) / dt
        self._sample = (now, beat.frames_out, beat.frames_in)

    def status(self) -> dict[str, Any]:
        beat = self._beat
        uptime = time.monotonic() - self._running_since if self._running_since else 0.0
        return {
            "name": self.name,
            "type": self.spec.type,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "uptime_s": round(uptime, 3),
            "fps": round(self.fps, 2),
            "fps_in": round(self.fps_in, 2),
            "frames_out": beat.frames_out if beat else 0,
            "frames_in": beat.frames_in if beat else 0,
            "dropped": beat.dropped if beat else 0,
            "busy_s": round(beat.busy_ns / 1e9, 3) if beat else 0.0,
            "busy_hist": list(beat.busy_hist) if beat else [],
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "reason": self.reason,
            "detail": beat.detail if beat and self.state in ALIVE else None,
            "last_exit": self.last_exit,
            "inputs": list(self.spec.inputs),
        }

    # -- plumbing -----------------------------------------------------------------------

    def _read_stderr(self) -> None:
        try:
            chunk = os.read(self._stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self._stderr_fd)
            self._stderr_fd = None
            chunk, self._partial = self._partial + b"\n", b""
            if chunk == b"\n":
                return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)
                log.info("%s: %s", self.name, line, extra=self._log_extra)

    def _close_fds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stderr_fd is not None:
            self._read_stderr()  # take what the worker wrote last: it explains the exit
            if self._stderr_fd is not None and not _readable(self._stderr_fd):
                loop.remove_reader(self._stderr_fd)
                self._stderr_fd = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _readable(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)
