"""Block states and the moves between them: the whole state machine on one screen.

STOPPED --start--> STARTING --first heartbeat--> RUNNING
STARTING/RUNNING --crash, policy restarts--> BACKOFF --delay--> STARTING
STARTING/RUNNING --crash, too many in the window--> FAILED --long pause--> STARTING
STARTING/RUNNING --exit, policy does not restart--> EXITED
STARTING/RUNNING --cannot run this configuration (exit 78)--> FAILED
STARTING --the worker cannot be launched--> FAILED
STARTING/RUNNING/BACKOFF --stop--> STOPPING --exit--> STOPPED   (BACKOFF: at once)
FAILED, waiting for its long pause --stop--> STOPPED
STOPPED/EXITED/FAILED --start--> STARTING

Which move a block makes is the restart policy's decision (policy.py).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "STOPPED"  # by request, or before start
    STARTING = "STARTING"  # launched, no heartbeat yet
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # crashed, waiting to restart
    STOPPING = "STOPPING"
    EXITED = "EXITED"  # ended on its own; its policy does not restart it
    FAILED = "FAILED"  # gave up (for a long pause): too many restarts; a bad configuration


ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
"""States in which the block has a process."""

STARTABLE = frozenset({State.STOPPED, State.EXITED, State.FAILED})
STOPPABLE = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset(
        {State.RUNNING, State.BACKOFF, State.STOPPING} | {State.EXITED, State.FAILED}
    ),
    State.RUNNING: frozenset({State.BACKOFF, State.STOPPING, State.EXITED, State.FAILED}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITED: frozenset({State.STARTING}),
    State.FAILED: frozenset({State.STARTING, State.STOPPED}),
}


def check_move(old: State, new: State) -> None:
    """Refuse a move the machine does not have: a bug, never a user error."""
    if new not in TRANSITIONS[old]:
        raise RuntimeError(f"a block cannot go from {old} to {new}")
