"""Is the supervisor still there? Asked by every worker, so it can clean up after it.

A pid alone can be reused by an unrelated process, so the supervisor is known by its
pid and its start time (``/proc/<pid>/stat``, field 22, in clock ticks since boot).
While the worker is its child, ``os.getppid()`` answers at no cost; a dead parent's
children are re-parented at once, so this is never fooled by a zombie, unlike
``psutil.pid_exists``.
"""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # dead, waiting to be reaped
    return int(fields[19])


@dataclass(frozen=True)
class ProcessIdentity:
    """A process known by its pid and start time: a worker's daemon, or a run's owner.

    A pid alone may by now belong to another process; the pair may not.
    """

    pid: int
    start_time: int

    @classmethod
    def me(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(pid, start_time(pid) or 0)

    def alive(self) -> bool:
        """Is this very process still there? (Free when it is our parent.)"""
        if os.getppid() == self.pid:
            return True
        return start_time(self.pid) == self.start_time

    def encode(self) -> list[int]:
        return [self.pid, self.start_time]


def ask_for_death_signal(sig: int = signal.SIGUSR1) -> bool:
    """Have the kernel send ``sig`` when the parent dies: milliseconds, not a poll period.

    Linux only, and it fires when the parent *thread* that started us exits, so the
    daemon launches workers from its main thread. Returns False where unavailable.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0  # ctypes calls are untyped
    except (OSError, AttributeError):
        return False
