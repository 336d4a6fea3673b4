"""One block over its life: the watcher carries out its restart policy on the event loop.

As a circus watcher does for its program, a ``Watcher`` looks after one block: at each
event it asks the block's ``RestartPolicy`` (policy.py) what to do, and does it: launch a
``WorkerProcess`` (process.py), signal it, arm the one timer of a pending restart. It
reads the block's heartbeat for the policy and keeps what status reports. The
supervisor (supervisor.py) holds one watcher per block.

The daemon's event loop learns of an exit at once through the worker's pidfd, and of a
hang through the heartbeat the worker writes in shared memory. Everything here runs on
that one loop, in its thread: no locks, and a stop can never race a restart.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import time
from typing import Any

from pipelined.workers.codec import CodecError
from pipelined.workers.contract import WorkerArgs, mask, secret_strings
from pipelined.workers.ipc.heartbeat import Beat, Heartbeat

from .events.hub import Attachment, EventHub
from .graph import BlockSpec
from .policy import Clock, RestartPolicy, signal_name
from .process import WorkerProcess
from .states import ALIVE, State
from .worker_log import StderrLog

log = logging.getLogger("pipelined.block")


class Watcher:
    """A block's worker, its restart policy, and what status reports of them."""

    def __init__(
        self,
        spec: BlockSpec,
        args: WorkerArgs,
        heartbeat: Heartbeat,
        clock: Clock = time.monotonic,
        hub: EventHub | None = None,
    ):
        self.spec = spec
        self.args = args
        self.heartbeat = heartbeat
        self.hub = hub  # the daemon's events: each launch gets its pipes there
        self._events: Attachment | None = None
        self._secrets = secret_strings(args.params)  # hidden in whatever status shows
        self.policy = RestartPolicy(spec.supervision, clock, on_move=self._moved)
        self.process: WorkerProcess | None = None  # the latest worker, alive or not
        self.last_exit: dict[str, Any] | None = None
        self.stderr = StderrLog(spec.name)  # across its workers: a repeated traceback once
        self._beat: Beat | None = None  # the latest beat of this worker
        self._kill_reason: str | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> State:
        return self.policy.state

    @property
    def reason(self) -> str | None:
        """Why the block is as it is: the policy's reason (FAILED, waiting, crashed), the
        worker's words with its block's secrets hidden; or, for a block never started,
        that it waits to be asked."""
        never_started = self.state == State.STOPPED and self.process is None
        if never_started and not self.spec.supervision.autostart:
            return f"autostart = false: not started until asked (pipectl start {self.name})"
        return self._hide(self.policy.reason)

    @property
    def restarts(self) -> int:
        return self.policy.restarts

    @property
    def live(self) -> WorkerProcess | None:
        """The worker while it has not exited (STARTING, RUNNING, STOPPING)."""
        return self.process if self.state in ALIVE else None

    @property
    def pid(self) -> int | None:
        return self.live.pid if self.live is not None else None

    @property
    def fps(self) -> float:
        return self.live.fps if self.live is not None else 0.0

    @property
    def _log_extra(self) -> dict[str, Any]:
        """Fields for the journal: which block, and which worker process."""
        return {"block": self.name, "worker_pid": self.process.pid if self.process else None}

    # -- asked for --------------------------------------------------------------------

    def start(self) -> None:
        """Launch the worker (a no-op if it is already up or on its way)."""
        if self.policy.start():
            self._launch()
        self._arm()

    def stop(self) -> asyncio.Future[None]:
        """Ask the worker to stop: SIGTERM, then SIGKILL after stop_timeout.

        The future completes once the block is STOPPED. A block waiting to restart
        (BACKOFF, or FAILED for a pause) stops at once: its pending restart is cancelled,
        so a stop is never undone by the restart policy.
        """
        loop = asyncio.get_running_loop()
        if self.policy.stop():
            self._stopped = loop.create_future()
            self._signal(signal.SIGTERM)
            self._kill_timer = loop.call_later(
                self.spec.supervision.stop_timeout, self._signal, signal.SIGKILL
            )
        self._arm()
        if self.state == State.STOPPING and self._stopped is not None:
            return self._stopped
        done = loop.create_future()
        done.set_result(None)
        return done

    def restart(self) -> None:
        """Stop, then start again once the old worker is gone (at once if there is none)."""
        if self.policy.start():
            self._launch()
            self._arm()
            return
        self.stop()
        self.policy.start_after_stop()

    def kill(self, reason: str) -> None:
        """Kill a hung worker; its exit is handled as a crash, with this reason."""
        self._kill_reason = reason
        log.warning("%s: %s; killing pid %s", self.name, reason, self.pid, extra=self._log_extra)
        self._signal(signal.SIGKILL)

    # -- heartbeat and metrics ----------------------------------------------------------

    def tick(self) -> None:
        """Read the heartbeat for the policy: the first beat makes RUNNING; hangs get killed."""
        if self.state not in (State.STARTING, State.RUNNING) or self.process is None:
            return
        beat = self.heartbeat.read()
        if beat is not None and beat.pid == self.process.pid:
            self._beat = beat
        hung = self.policy.check(self._beat)
        if hung is not None:
            self.kill(hung)

    def sample(self) -> None:
        """CPU, memory and frame rates, about once a second."""
        if self.process is not None and self.state in (State.STARTING, State.RUNNING):
            self.process.sample(self._beat)

    def figures(self) -> tuple[float, float, float]:
        """Frames in and out per second and CPU percent now, for the history."""
        live = self.live
        if live is None:
            return (0.0, 0.0, 0.0)
        return (live.fps_in, live.fps, live.cpu_percent)

    def status(self) -> dict[str, Any]:
        beat, live = self._beat, self.live
        return {
            "name": self.name,
            "type": self.spec.type,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "uptime_s": round(self.policy.uptime(), 3),
            "fps": round(live.fps, 2) if live else 0.0,
            "fps_in": round(live.fps_in, 2) if live else 0.0,
            "frames_out": beat.frames_out if beat else 0,
            "frames_in": beat.frames_in if beat else 0,
            "missed": beat.missed if beat else 0,
            "skipped": beat.skipped if beat else 0,
            "busy_s": round(beat.busy_ns / 1e9, 3) if beat else 0.0,
            "busy_hist": list(beat.busy_hist) if beat else [],
            "cpu_percent": round(live.cpu_percent, 1) if live else 0.0,
            "rss_bytes": live.rss_bytes if live else 0,
            "reason": self.reason,
            "autostart": self.spec.supervision.autostart,
            "detail": self._hide(beat.detail) if beat and live else None,
            "last_exit": self.last_exit,
            "inputs": list(self.spec.inputs),
            **(self.hub.block_status(self.name) if self.hub is not None else {}),
        }

    # -- carrying out -------------------------------------------------------------------

    def _launch(self) -> None:
        """Launch a worker for the policy, which has just moved to STARTING."""
        self._beat = None
        self._kill_reason = None
        events: Attachment | None = None
        try:
            events = self.hub.attach(self.spec) if self.hub is not None else None
            args = events.args(self.args) if events is not None else self.args
            fds = events.child_fds if events is not None else ()
            self.process = WorkerProcess.start(args, self._on_exit, self._stderr_line, fds)
        except (OSError, CodecError) as exc:  # arguments too long, no memory, no fds left
            if events is not None:
                events.abandon()
            self.process = None
            why = mask(str(exc), self._secrets)
            log.error("%s: cannot launch the worker: %s", self.name, why, extra=self._log_extra)
            self.policy.launch_failed(why)
            return
        self._events = events
        if events is not None:
            events.started()
        log.info(
            "%s: started %s as pid %d",
            *(self.name, self.spec.type, self.process.pid),
            extra=self._log_extra,
        )

    def _stderr_line(self, line: str) -> None:
        self.stderr.line(line, self._log_extra)

    def _on_exit(self, process: WorkerProcess) -> None:
        self.stderr.flush(self._log_extra)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if self._events is not None:
            events, self._events = self._events, None
            events.finished()  # its last events, then what it left open is ended
        code = process.returncode
        assert code is not None  # reaped before on_exit is called
        self.last_exit = {
            "code": code if code >= 0 else None,
            "signal": signal_name(-code) if code < 0 else None,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "stderr_tail": "\n".join(process.tail),
        }
        if self._kill_reason:
            self.last_exit["reason"] = self._kill_reason
        how = f"signal {self.last_exit['signal']}" if code < 0 else f"code {code}"
        log.info(
            "%s: pid %d exited with %s after %.1f s",
            *(self.name, process.pid, how, self.policy.ran()),
            extra=self._log_extra,
        )
        asked = self.state == State.STOPPING
        last_line = process.tail[-1] if process.tail else None
        again = self.policy.exited(code, self._kill_reason, last_line)
        if asked and self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        if again:
            self._launch()
        self._arm()

    def _arm(self) -> None:
        """Set the loop timer for the policy's pending restart, after every decision.

        A timer already set is for this very wait: every move cancels it (``_moved``).
        """
        if self.policy.restart_in is not None and self._restart_timer is None:
            loop = asyncio.get_running_loop()
            self._restart_timer = loop.call_later(self.policy.restart_in, self._due)

    def _due(self) -> None:
        self._restart_timer = None
        if self.policy.due():
            self._launch()
        self._arm()

    def _signal(self, sig: int) -> None:
        if self.live is not None:
            self.live.signal(sig)

    def _moved(self, old: State, new: State, reason: str | None) -> None:
        """Told by the policy of each move: log it; a pending restart is over with it."""
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        why = f" ({self._hide(reason)})" if reason else ""
        log.info("%s: %s -> %s%s", self.name, old, new, why, extra=self._log_extra)

    def _hide(self, text: str | None) -> str | None:
        return mask(text, self._secrets) if text else text
