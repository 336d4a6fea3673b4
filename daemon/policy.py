"""One block's restart policy: from what its worker did, what to do next. Pure.

The watcher (watcher.py) reports each event of a block's life: a start or stop was asked
for, the worker could not be launched, it beat, it exited. The policy moves the block
through the state machine of states.py (every move through ``check_move``) and answers
with a decision: launch a worker now, signal it to stop, kill it as hung, or launch one
again in ``restart_in`` seconds. It touches no process, no event loop and no wall time,
only the clock it is given, so its tests run hours of crash loops in milliseconds.

The rules, with the block's ``[supervisor]`` keys (graph.Supervision):

- An exit nobody asked for restarts after a backoff: ``backoff_initial``, doubling with
  each crash in a row up to ``backoff_max``. A worker that ran STABLE_AFTER seconds
  before it crashed starts the streak again.
- More than ``restart_limit`` such exits within ``restart_window`` seconds: FAILED, and
  launched again after ``retry_failed_after`` seconds (0: never), as Kubernetes' crash
  loop back-off never gives up: a box nobody visits gets its camera back once it
  returns. Crashes before the pause still count if they are within the window. A
  worker that cannot be launched at all is FAILED the same way.
- Exit 78 (EX_CONFIG): FAILED at once; the block said it cannot run this configuration.
- ``restart = "never"``, or ``"on-failure"`` and exit 0: EXITED.
- No first heartbeat within ``startup_timeout``, or none for ``watchdog`` seconds once
  RUNNING (0 turns either off): kill it; its exit is then a crash like any other.
- A stop cancels a pending restart: it is never undone by these rules.

A clock that jumps cannot make it kill a healthy worker: a heartbeat or launch that
seems to lie in the future counts as just now, and a crash is forgotten only once it
is ``restart_window`` in the past. A pending restart is a delay, not a time on the
clock: the watcher's loop timer measures it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from pipelined.workers.contract import EX_CONFIG
from pipelined.workers.ipc.heartbeat import STARTING, Beat

from .graph import Supervision
from .states import STARTABLE, State, check_move

STABLE_AFTER = 10.0
"""A worker that ran this long before crashing restarts with the initial backoff again."""

Clock = Callable[[], float]
"""Seconds on a clock that the heartbeats share: time.monotonic (CLOCK_MONOTONIC)."""
OnMove = Callable[[State, State, str | None], None]


class RestartPolicy:
    """One block's state, its crash history, and the decisions the rules make of them."""

    def __init__(
        self, settings: Supervision, clock: Clock = time.monotonic, on_move: OnMove | None = None
    ):
        self.settings = settings
        self.clock = clock
        self.on_move = on_move  # told of every move: the watcher logs it, drops its timer
        self.state = State.STOPPED
        self.reason: str | None = None
        self.restarts = 0
        self.restart_in: float | None = None
        """Seconds after which to launch again unasked (BACKOFF, or FAILED for a pause)."""
        self._launched = 0.0
        self._running_since: float | None = None
        self._crashes: list[float] = []
        self._streak = 0  # crashes in a row, each after a short run
        self._killing = False
        self._start_after_stop = False

    # -- asked for: start, stop, restart ------------------------------------------------

    def start(self) -> bool:
        """A start was asked for: True if a worker is to be launched now.

        A block that is up or on its way up or down is left alone; one waiting to restart
        (BACKOFF, or FAILED for a pause) starts at once.
        """
        if self.state not in STARTABLE and self.state != State.BACKOFF:
            return False
        self._begin()
        return True

    def stop(self) -> bool:
        """A stop was asked for: True if the worker is to be signalled (it is STOPPING).

        A block waiting to restart (BACKOFF, or FAILED for a pause) is STOPPED at once,
        its pending restart cancelled.
        """
        self._start_after_stop = False
        if self.restart_in is not None:
            self._move(State.STOPPED)
        if self.state in (State.STARTING, State.RUNNING):
            self._move(State.STOPPING)
            return True
        return False

    def start_after_stop(self) -> None:
        """The second half of a restart: launch again once the stopping worker is gone."""
        if self.state == State.STOPPING:
            self._start_after_stop = True

    # -- what the worker did ----------------------------------------------------------

    def launch_failed(self, error: str) -> None:
        """The worker could not be launched (no memory, no file descriptors left)."""
        self._fail(f"cannot launch the worker: {error}")

    def check(self, beat: Beat | None) -> str | None:
        """Look at the worker's latest heartbeat; returns why to kill it, if it must die.

        STARTING moves to RUNNING on the first beat that says the block runs. A worker
        with no such beat within startup_timeout, or silent for watchdog seconds while
        RUNNING, is to be killed, once: its exit comes next.
        """
        if self.state not in (State.STARTING, State.RUNNING) or self._killing:
            return None
        now, s = self.clock(), self.settings
        if self.state == State.STARTING:
            if beat is not None and beat.state != STARTING:
                self._running_since = now
                self._move(State.RUNNING, beat.reason)
            elif s.startup_timeout and now - self._launched > s.startup_timeout:
                return self._kill(f"no heartbeat within startup_timeout ({s.startup_timeout:g} s)")
            return None
        self.reason = beat.reason if beat is not None else None  # "waiting for its source"
        if s.watchdog and beat is not None:
            silent = now - beat.beat_ns / 1e9
            if silent > s.watchdog:
                return self._kill(
                    f"hung: no heartbeat for {silent:.1f} s (watchdog {s.watchdog:g} s)"
                )
        return None

    def exited(
        self, code: int, killed_for: str | None = None, last_line: str | None = None
    ) -> bool:
        """The worker exited with ``code`` (negative: the signal that killed it).

        ``killed_for`` is the reason it was killed for, if it was; ``last_line`` the last
        line it wrote to stderr, which a crash's reason quotes. Returns True if a worker is
        to be launched again now (the second half of a restart); otherwise the block is
        STOPPED, EXITED, FAILED, or in BACKOFF for ``restart_in`` seconds.
        """
        now, s = self.clock(), self.settings
        ran = self.ran()
        self._running_since = None
        self._killing = False
        if self.state == State.STOPPING:
            self._move(State.STOPPED)
            if self._start_after_stop:
                self._start_after_stop = False
                return self.start()
            return False
        if code == EX_CONFIG:
            self._move(State.FAILED, last_line or "the block cannot run this configuration")
            return False
        if s.restart == "never" or (s.restart == "on-failure" and code == 0):
            self._move(State.EXITED, f"exited with {f'code {code}' if code >= 0 else 'a signal'}")
            return False
        what = _summary(code, killed_for)
        if code > 0 and last_line:  # what the worker said last: why it crashed, usually
            what = f"{what}: {_shorten(last_line)}"
        self._crashes = [t for t in self._crashes if now - t <= s.restart_window] + [now]
        if len(self._crashes) > s.restart_limit:
            self._fail(
                f"exited {len(self._crashes)} times within {s.restart_window:g} s"
                f" (restart_limit {s.restart_limit}); last: {what}"
            )
            return False
        self._streak = 1 if ran >= STABLE_AFTER else self._streak + 1
        delay = min(s.backoff_initial * 2 ** (self._streak - 1), s.backoff_max)
        self._move(State.BACKOFF, f"{what}; restarting in {delay:.2g} s")
        self.restart_in = delay
        return False

    def due(self) -> bool:
        """``restart_in`` has passed: True if a worker is to be launched now (a restart).

        False if the restart was called off meanwhile (a stop or start was asked for).
        """
        if self.restart_in is None:
            return False
        self.restarts += 1
        self._begin()
        return True

    # -- for status -------------------------------------------------------------------

    def ran(self) -> float:
        """Seconds the worker has run: since its first heartbeat, else since its launch."""
        since = self._running_since if self._running_since is not None else self._launched
        return max(0.0, self.clock() - since)

    def uptime(self) -> float:
        """Seconds since the worker was first heard running; 0 while it is not."""
        return self.ran() if self._running_since is not None else 0.0

    # -- moves ------------------------------------------------------------------------

    def _begin(self) -> None:
        self._move(State.STARTING)
        self._launched = self.clock()
        self._running_since = None
        self._killing = False

    def _fail(self, reason: str) -> None:
        """FAILED; launched again after the long pause, if there is one (and it says so)."""
        pause = self.settings.retry_failed_after
        self._move(State.FAILED, f"{reason}; trying again in {pause:g} s" if pause else reason)
        if pause:
            self.restart_in = pause

    def _kill(self, reason: str) -> str:
        self._killing = True
        return reason

    def _move(self, new: State, reason: str | None = None) -> None:
        """The one place the state changes; a pending start never outlives its state."""
        check_move(self.state, new)
        old, self.state, self.reason, self.restart_in = self.state, new, reason, None
        if self.on_move is not None and new != old:
            self.on_move(old, new, reason)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; a signal Python has no name for (SIGRTMIN+3) as its number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


MAX_LAST_LINE = 400


def _shorten(line: str) -> str:
    return line if len(line) <= MAX_LAST_LINE else line[: MAX_LAST_LINE - 1] + "…"


def _summary(code: int, killed_for: str | None) -> str:
    """``exit code 1``, ``killed by SIGKILL``, after the reason it was killed for if any."""
    what = f"killed by {signal_name(-code)}" if code < 0 else f"exit code {code}"
    return f"{killed_for}, {what}" if killed_for else what
