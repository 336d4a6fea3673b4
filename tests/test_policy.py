"""The restart policy and the state machine, without processes, on a clock the test turns.

Every move of states.py, every rule of policy.py, clocks that jump both ways, and the
watcher's one restart timer. The whole file runs in milliseconds: the supervisor's
tests prove the watcher carries the decisions out with real workers.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from pipelined.daemon.graph import Supervision, parse_graph
from pipelined.daemon.policy import STABLE_AFTER, RestartPolicy
from pipelined.daemon.process import worker_args
from pipelined.daemon.states import TRANSITIONS, State, check_move
from pipelined.daemon.watcher import Watcher
from pipelined.workers.contract import EX_CONFIG
from pipelined.workers.ipc.heartbeat import RUNNING, STARTING, WAITING, Beat, Heartbeat

SIGKILL, SIGTERM = -9, -15


class Clock:
    """A clock that moves only when told to, in either direction."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Block:
    """A policy with its clock and the moves it made, as the watcher would see them."""

    def __init__(self, **settings: object) -> None:
        self.clock = Clock()
        self.moves: list[tuple[State, State]] = []
        self.policy = RestartPolicy(
            replace(Supervision(), **settings),
            self.clock,
            on_move=lambda old, new, reason: self.moves.append((old, new)),
        )

    def beat(self, age: float = 0.0, state: int = RUNNING, reason: str | None = None) -> Beat:
        """A heartbeat written ``age`` seconds ago (negative: it seems to come from ahead)."""
        return Beat(beat_ns=round((self.clock.now - age) * 1e9), pid=1, state=state, reason=reason)

    def running(self) -> RestartPolicy:
        """Started, and heard from: RUNNING."""
        assert self.policy.start()
        assert self.policy.check(self.beat()) is None
        assert self.policy.state == State.RUNNING
        return self.policy

    def crash(self, code: int = 1, after: float = 0.0) -> RestartPolicy:
        """A RUNNING worker dies ``after`` seconds; returns the policy, for its decision."""
        self.clock.advance(after)
        assert self.policy.exited(code) is False
        return self.policy

    def restart_when_due(self) -> None:
        """What the watcher's timer does once ``restart_in`` has passed."""
        self.clock.advance(self.policy.restart_in)
        assert self.policy.due()
        assert self.policy.check(self.beat()) is None  # and it runs


# -- the state machine ------------------------------------------------------------------


def test_check_move_allows_the_moves_of_the_table_and_refuses_every_other() -> None:
    for old, new in itertools.product(State, State):
        if new in TRANSITIONS[old]:
            check_move(old, new)
        else:
            with pytest.raises(RuntimeError, match=f"from {old} to {new}"):
                check_move(old, new)


def test_the_policy_makes_every_move_of_the_table() -> None:
    """The table and the rules agree: no move in it is dead, and check_move saw each."""
    made: set[tuple[State, State]] = set()

    b = Block(backoff_initial=0.5)
    b.running()
    b.crash()  # RUNNING -> BACKOFF
    b.clock.advance(b.policy.restart_in)
    assert b.policy.due()  # BACKOFF -> STARTING
    b.crash()  # STARTING -> BACKOFF: it died before its first heartbeat
    assert not b.policy.stop()  # BACKOFF -> STOPPED
    assert b.policy.start()  # STOPPED -> STARTING
    assert b.policy.stop()  # STARTING -> STOPPING
    assert not b.policy.exited(SIGTERM)  # STOPPING -> STOPPED
    b.running()  # STARTING -> RUNNING
    assert b.policy.stop()  # RUNNING -> STOPPING
    made |= set(b.moves)

    never = Block(restart="never")
    never.policy.start()
    never.crash(0)  # STARTING -> EXITED
    never.running()  # EXITED -> STARTING, STARTING -> RUNNING
    never.crash(0)  # RUNNING -> EXITED
    made |= set(never.moves)

    config = Block()
    config.policy.start()
    config.crash(EX_CONFIG)  # STARTING -> FAILED
    config.running()  # FAILED -> STARTING
    config.crash(EX_CONFIG)  # RUNNING -> FAILED
    made |= set(config.moves)

    flapping = Block(restart_limit=0, retry_failed_after=300.0)
    flapping.running()
    flapping.crash()  # RUNNING -> FAILED, for a pause
    assert not flapping.policy.stop()  # FAILED -> STOPPED
    made |= set(flapping.moves)

    assert made == {(old, new) for old, news in TRANSITIONS.items() for new in news}


# -- starting and stopping --------------------------------------------------------------


def test_a_start_launches_only_what_is_down() -> None:
    b = Block()
    assert b.policy.start() and b.policy.state == State.STARTING
    assert not b.policy.start()  # on its way up
    b.policy.check(b.beat())
    assert not b.policy.start()  # up
    b.policy.stop()
    assert not b.policy.start()  # on its way down
    assert b.moves == [
        (State.STOPPED, State.STARTING),
        (State.STARTING, State.RUNNING),
        (State.RUNNING, State.STOPPING),
    ]


def test_a_start_during_backoff_starts_at_once_and_calls_the_restart_off() -> None:
    b = Block(backoff_initial=5.0)
    b.running()
    b.crash()
    assert b.policy.start() and b.policy.restart_in is None
    assert not b.policy.due()  # the timer that still fires does nothing
    assert b.policy.restarts == 0  # a start that was asked for is no restart


def test_a_stop_during_backoff_is_never_undone_by_the_restart() -> None:
    b = Block(backoff_initial=2.0)
    b.running()
    b.crash()
    assert b.policy.state == State.BACKOFF and b.policy.restart_in == 2.0
    assert not b.policy.stop()  # nothing to signal: it has no worker
    assert b.policy.state == State.STOPPED and b.policy.restart_in is None
    b.clock.advance(3.0)
    assert not b.policy.due()
    assert b.policy.state == State.STOPPED


def test_a_stop_of_a_block_that_is_down_changes_nothing() -> None:
    for settings, code in (({}, None), ({"restart": "never"}, 0), ({}, EX_CONFIG)):
        b = Block(**settings)
        if code is not None:
            b.running()
            b.crash(code)
        before = (b.policy.state, b.policy.reason)
        assert not b.policy.stop()
        assert (b.policy.state, b.policy.reason) == before


def test_an_exit_after_a_stop_is_stopped_whatever_its_code() -> None:
    for code in (0, 1, SIGTERM, SIGKILL, EX_CONFIG):
        b = Block(restart_limit=0)
        b.running()
        assert b.policy.stop()
        assert not b.policy.exited(code)
        assert b.policy.state == State.STOPPED and b.policy.reason is None
        assert b.policy.restart_in is None


def test_a_restart_launches_again_once_the_old_worker_is_gone() -> None:
    b = Block()
    b.running()
    assert b.policy.stop()
    b.policy.start_after_stop()
    assert b.policy.exited(SIGTERM)  # launch now
    assert b.policy.state == State.STARTING and b.policy.restarts == 0


def test_a_stop_after_a_restart_was_asked_for_wins() -> None:
    b = Block()
    b.running()
    b.policy.stop()
    b.policy.start_after_stop()
    assert not b.policy.stop()  # already on its way down
    assert not b.policy.exited(SIGTERM)
    assert b.policy.state == State.STOPPED


def test_start_after_stop_of_a_block_that_is_not_stopping_is_ignored() -> None:
    b = Block()
    b.running()
    b.policy.start_after_stop()  # not stopping: nothing to come back from
    b.crash()
    assert b.policy.state == State.BACKOFF


def test_a_worker_that_cannot_be_launched_fails_with_the_reason() -> None:
    b = Block(retry_failed_after=0.0)
    b.policy.start()
    b.policy.launch_failed("[Errno 24] Too many open files")
    assert b.policy.state == State.FAILED
    assert b.policy.reason == "cannot launch the worker: [Errno 24] Too many open files"
    assert b.policy.restart_in is None
    assert b.policy.start()  # a start by hand tries again


# -- exits and restarts -----------------------------------------------------------------


def test_backoff_doubles_per_crash_in_a_row_up_to_backoff_max() -> None:
    b = Block(backoff_initial=0.1, backoff_max=1.0, restart_limit=100)
    b.running()
    delays = []
    for _ in range(6):
        b.crash(after=1.0)
        delays.append(b.policy.restart_in)
        b.restart_when_due()
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.policy.restarts == 6


def test_the_reason_of_a_backoff_says_what_happened_and_when_it_restarts() -> None:
    b = Block(backoff_initial=0.25)
    b.running()
    b.crash(SIGKILL)
    assert b.policy.reason == "killed by SIGKILL; restarting in 0.25 s"
    b.restart_when_due()
    b.crash(3)
    assert b.policy.reason == "exit code 3; restarting in 0.5 s"
    b.restart_when_due()
    b.policy.exited(-45)  # a real-time signal Python has no name for
    assert b.policy.reason.startswith("killed by signal 45;")


def test_a_run_of_stable_after_seconds_starts_the_backoff_streak_again() -> None:
    b = Block(backoff_initial=0.1, restart_limit=100)
    b.running()
    for _ in range(4):
        b.crash(after=1.0)
        b.restart_when_due()
    b.crash(after=STABLE_AFTER - 0.5)  # short of stable: the streak goes on
    assert b.policy.restart_in == pytest.approx(1.6)
    b.restart_when_due()
    b.crash(after=STABLE_AFTER + 0.01)
    assert b.policy.restart_in == pytest.approx(0.1)


def test_stable_counts_from_the_first_heartbeat_not_from_the_launch() -> None:
    b = Block(backoff_initial=0.1, restart_limit=100)
    b.running()
    b.crash(after=1.0)
    b.clock.advance(b.policy.restart_in)
    assert b.policy.due()
    b.clock.advance(STABLE_AFTER)  # a slow setup()...
    b.policy.check(b.beat())  # ...then its first frame
    b.crash(after=1.0)
    assert b.policy.restart_in == pytest.approx(0.2)


def test_more_than_restart_limit_crashes_within_the_window_fail() -> None:
    b = Block(restart_limit=3, restart_window=60.0, retry_failed_after=0.0)
    b.running()
    for _ in range(3):
        b.crash(after=1.0)
        assert b.policy.state == State.BACKOFF
        b.restart_when_due()
    b.crash(after=1.0)
    assert b.policy.state == State.FAILED and b.policy.restart_in is None
    assert b.policy.reason == "exited 4 times within 60 s (restart_limit 3); last: exit code 1"
    assert b.policy.restarts == 3
    assert not b.policy.due()


def test_restart_limit_0_fails_at_the_first_crash() -> None:
    b = Block(restart_limit=0)
    b.running()
    b.crash()
    assert b.policy.state == State.FAILED
    assert b.policy.restarts == 0


def test_crashes_further_apart_than_the_window_never_fail() -> None:
    b = Block(restart_limit=2, restart_window=60.0, backoff_initial=0.1)
    b.running()
    for _ in range(50):
        b.crash(after=60.5)  # the clock jumps past the window before each crash
        assert b.policy.state == State.BACKOFF
        b.restart_when_due()
    assert b.policy.restarts == 50


def test_the_window_slides_crashes_out_one_by_one() -> None:
    b = Block(restart_limit=2, restart_window=10.0, backoff_initial=0.1, backoff_max=0.1)
    b.running()
    b.crash(after=1.0)  # t=1
    b.restart_when_due()
    b.crash(after=1.0)  # t=2.1: two within 10 s
    b.restart_when_due()
    b.crash(after=8.95)  # t=11.15: the first is 10.15 s old, two within 10 s
    assert b.policy.state == State.BACKOFF
    b.restart_when_due()
    b.crash(after=0.1)  # t=11.35: three within 10 s
    assert b.policy.state == State.FAILED
    assert b.policy.reason.startswith("exited 3 times within 10 s")


def test_exit_78_fails_at_once_with_the_blocks_last_words() -> None:
    b = Block()
    b.running()
    assert not b.policy.exited(EX_CONFIG, last_line="ConfigurationError: no frobnicator")
    assert b.policy.state == State.FAILED
    assert b.policy.reason == "ConfigurationError: no frobnicator"
    assert b.policy.restart_in is None and b.policy.restarts == 0
    b.policy.start()
    b.policy.exited(EX_CONFIG)
    assert b.policy.reason == "the block cannot run this configuration"


@pytest.mark.parametrize(
    ("restart", "code", "state", "reason"),
    [
        ("never", 0, State.EXITED, "exited with code 0"),
        ("never", 1, State.EXITED, "exited with code 1"),
        ("never", SIGKILL, State.EXITED, "exited with a signal"),
        ("on-failure", 0, State.EXITED, "exited with code 0"),
        ("on-failure", 1, State.BACKOFF, "exit code 1; restarting in 0.1 s"),
        ("on-failure", SIGKILL, State.BACKOFF, "killed by SIGKILL; restarting in 0.1 s"),
        ("always", 0, State.BACKOFF, "exit code 0; restarting in 0.1 s"),
        ("always", 1, State.BACKOFF, "exit code 1; restarting in 0.1 s"),
        ("never", EX_CONFIG, State.FAILED, "the block cannot run this configuration"),
    ],
)
def test_the_restart_key(restart: str, code: int, state: State, reason: str) -> None:
    b = Block(restart=restart)
    b.running()
    b.crash(code)
    assert (b.policy.state, b.policy.reason) == (state, reason)
    assert (b.policy.restart_in is not None) == (state == State.BACKOFF)


# -- failed, for a long pause ------------------------------------------------------------


def test_a_block_failed_by_crashes_tries_again_after_the_long_pause() -> None:
    """A box nobody visits gets its camera back: FAILED, with its reason, then a new try."""
    b = Block(restart_limit=2, restart_window=60.0, retry_failed_after=300.0)
    b.running()
    for _ in range(2):
        b.crash(after=1.0)
        b.restart_when_due()
    b.crash(after=1.0)
    p = b.policy
    assert p.state == State.FAILED and p.restarts == 2
    assert p.reason == (
        "exited 3 times within 60 s (restart_limit 2); last: exit code 1; trying again in 300 s"
    )
    assert p.restart_in == 300.0
    b.clock.advance(300.0)
    assert p.due() and p.state == State.STARTING and p.restarts == 3
    p.check(b.beat())
    b.crash(after=1.0)  # the old crashes are out of the window: a whole new round
    assert p.state == State.BACKOFF


def test_retry_failed_after_0_stays_failed() -> None:
    b = Block(restart_limit=0, retry_failed_after=0.0)
    b.running()
    b.crash()
    assert b.policy.state == State.FAILED and b.policy.restart_in is None
    assert "trying again" not in b.policy.reason
    b.clock.advance(1e9)
    assert not b.policy.due() and b.policy.state == State.FAILED


def test_a_pause_shorter_than_the_window_gives_one_try_per_pause() -> None:
    b = Block(restart_limit=1, restart_window=3600.0, retry_failed_after=60.0)
    b.running()
    b.crash()
    b.restart_when_due()
    b.crash()
    assert b.policy.state == State.FAILED
    b.restart_when_due()
    b.crash()  # within the hour: FAILED again at once, for another pause
    assert b.policy.state == State.FAILED and b.policy.restart_in == 60.0
    assert b.policy.reason.startswith("exited 3 times within 3600 s")


def test_a_configuration_it_cannot_run_stays_failed() -> None:
    b = Block(retry_failed_after=300.0)
    b.running()
    b.crash(EX_CONFIG)
    assert b.policy.state == State.FAILED and b.policy.restart_in is None


def test_a_worker_that_cannot_be_launched_is_tried_again_after_the_pause() -> None:
    b = Block(retry_failed_after=300.0)
    b.policy.start()
    b.policy.launch_failed("[Errno 12] Cannot allocate memory")
    assert b.policy.reason.endswith("Cannot allocate memory; trying again in 300 s")
    assert b.policy.restart_in == 300.0
    assert b.policy.due() and b.policy.state == State.STARTING


def test_a_stop_during_the_pause_is_never_undone_and_a_start_ends_it() -> None:
    b = Block(restart_limit=0, retry_failed_after=300.0)
    b.running()
    b.crash()
    assert not b.policy.stop()
    assert b.policy.state == State.STOPPED and b.policy.restart_in is None
    assert not b.policy.due()
    b.running()
    b.crash()
    assert b.policy.start() and b.policy.restart_in is None  # at once, by hand
    assert b.policy.restarts == 0


# -- heartbeats: running, waiting, hung -------------------------------------------------


def test_the_first_beat_that_says_it_runs_makes_it_running() -> None:
    b = Block()
    b.policy.start()
    assert b.policy.check(None) is None
    assert b.policy.check(b.beat(state=STARTING)) is None  # still in setup()
    assert b.policy.state == State.STARTING
    b.clock.advance(2.0)
    assert b.policy.check(b.beat(state=WAITING, reason="waiting for rtsp://cam")) is None
    assert b.policy.state == State.RUNNING
    assert b.policy.reason == "waiting for rtsp://cam"
    b.clock.advance(3.0)
    assert b.policy.uptime() == 3.0 and b.policy.ran() == 3.0


def test_the_reason_while_running_follows_the_heartbeat() -> None:
    b = Block()
    p = b.running()
    p.check(b.beat(state=WAITING, reason="waiting for /dev/video0"))
    assert p.reason == "waiting for /dev/video0"
    p.check(b.beat())
    assert p.reason is None and p.state == State.RUNNING


def test_no_first_heartbeat_within_startup_timeout_kills_once() -> None:
    b = Block(startup_timeout=30.0)
    b.policy.start()
    b.clock.advance(30.0)
    assert b.policy.check(b.beat(state=STARTING)) is None  # not past it yet
    b.clock.advance(0.1)
    why = b.policy.check(b.beat(state=STARTING))
    assert why == "no heartbeat within startup_timeout (30 s)"
    b.clock.advance(1.0)
    assert b.policy.check(None) is None  # asked once; its exit comes next
    b.policy.exited(SIGKILL, killed_for=why)
    assert b.policy.state == State.BACKOFF
    assert b.policy.reason == f"{why}, killed by SIGKILL; restarting in 0.1 s"


def test_startup_timeout_0_waits_forever() -> None:
    b = Block(startup_timeout=0.0)
    b.policy.start()
    b.clock.advance(1e6)
    assert b.policy.check(None) is None and b.policy.state == State.STARTING


def test_a_silent_worker_is_killed_by_the_watchdog() -> None:
    b = Block(watchdog=5.0)
    p = b.running()
    b.clock.advance(60.0)
    assert p.check(b.beat(age=5.0)) is None
    why = p.check(b.beat(age=5.5))
    assert why == "hung: no heartbeat for 5.5 s (watchdog 5 s)"
    assert p.check(b.beat(age=9.0)) is None  # once
    p.exited(SIGKILL, killed_for=why)
    assert p.reason.startswith("hung: no heartbeat for 5.5 s (watchdog 5 s), killed by SIGKILL;")
    b.restart_when_due()
    b.clock.advance(10.0)
    assert p.check(b.beat(age=6.0)) is not None  # the new worker is watched again


def test_watchdog_0_never_kills() -> None:
    b = Block(watchdog=0.0)
    p = b.running()
    b.clock.advance(1e6)
    assert p.check(b.beat(age=1e6)) is None


# -- clocks that jump ---------------------------------------------------------------------


def test_a_heartbeat_from_ahead_of_the_clock_is_fresh() -> None:
    """The daemon reads its clock, then a worker beats: the beat is newer than "now"."""
    b = Block(watchdog=5.0)
    p = b.running()
    assert p.check(b.beat(age=-100.0)) is None
    assert p.state == State.RUNNING


def test_a_clock_that_goes_back_kills_nothing_and_counts_nothing_negative() -> None:
    b = Block(startup_timeout=30.0, watchdog=5.0)
    b.policy.start()
    b.clock.advance(-3600.0)
    assert b.policy.check(None) is None  # launched "in the future": not overdue
    assert b.policy.ran() == 0.0
    b.policy.check(b.beat())
    b.clock.advance(-3600.0)
    assert b.policy.uptime() == 0.0 and b.policy.check(b.beat(age=-1.0)) is None


def test_a_clock_that_goes_back_forgets_no_crash() -> None:
    b = Block(restart_limit=1, restart_window=60.0)
    b.running()
    b.crash()
    b.restart_when_due()
    b.clock.advance(-1000.0)  # the first crash now seems 1000 s ahead: still counted
    b.crash()
    assert b.policy.state == State.FAILED
    assert b.policy.reason.startswith("exited 2 times within 60 s")


def test_a_pending_restart_is_a_delay_whatever_the_clock_does() -> None:
    b = Block(backoff_initial=0.5)
    b.running()
    b.crash()
    for jump in (-1e6, 1e6):
        b.clock.advance(jump)
        assert b.policy.restart_in == 0.5 and b.policy.state == State.BACKOFF
    assert b.policy.due()


# -- the watcher keeps one timer per wait -------------------------------------------------


def test_the_watchers_timer_is_always_for_the_current_wait(names) -> None:
    """A start during a pause that fails again waits a whole new pause, not the old one's
    rest. No process runs: the worker's arguments are too long to launch."""
    text = '[blocks.count]\ntype = "userblocks.runtime_blocks:Counter"\nretry_failed_after = 60.0\n'
    graph = parse_graph(text, "t.toml")
    spec = graph.blocks["count"]
    args = worker_args(names, spec, graph)
    args.params = {**args.params, "label": "x" * 200_000}  # past the kernel's 128 KiB
    heartbeat = Heartbeat.create(names, "count")

    async def scenario() -> None:
        w = Watcher(spec, args, heartbeat)
        w.start()
        assert w.state == State.FAILED and w.reason.endswith("trying again in 60 s")
        first = w._restart_timer.when()
        await asyncio.sleep(0.05)
        w.start()  # by hand: fails again, and waits from now
        assert w.state == State.FAILED and w._restart_timer.when() > first
        await w.stop()
        assert w.state == State.STOPPED and w._restart_timer is None

    try:
        asyncio.run(scenario())
    finally:
        heartbeat.close()
