"""Which daemon owns a run, and the removal of runs whose daemon is dead.

Each run has a small ``owner`` segment holding the daemon's pid and start time. A new
daemon of the same instance removes the objects of every run whose owner is gone, so a
box that lost power or had its daemon killed does not fill /dev/shm over the months.

Only what this user owns counts: an owner segment of another user (a daemon of the same
instance name run by someone else, or a neighbour's plant) says nothing about our runs,
and another user's entries are never removed, whatever their names (``foreign``).
"""

from __future__ import annotations

import logging
import struct

from pipelined.workers.ipc.liveness import ProcessIdentity, start_time
from pipelined.workers.ipc.names import PREFIX, RunNames, check_instance
from pipelined.workers.ipc.segment import (
    Segment,
    foreign_entries,
    is_mine,
    runs_of,
    unlink_run,
    unlink_segment,
)

log = logging.getLogger("pipelined.runs")
_RECORD = struct.Struct("<QQ")  # pid, start time


def claim(names: RunNames, group: int | None = None) -> None:
    """Mark this process as the owner of ``names``' run."""
    me = ProcessIdentity.me()
    owner = Segment.create(names.owner(), _RECORD.size, group)
    owner.mm[:] = _RECORD.pack(me.pid, me.start_time)
    owner.close()


def unclaim(names: RunNames) -> None:
    """Remove the owner segment ``claim`` made."""
    unlink_segment(names.owner())


def owner_alive(names: RunNames) -> bool:
    """Whether a daemon of ours owns the run and still runs (pid and start time).

    An owner segment of another user does not count: it is not our run's. One of ours
    that cannot be read is taken as alive: nothing is removed that is not known dead.
    """
    entry = names.owner()[1:]
    if not is_mine(entry):
        return False
    try:
        owner = Segment.attach(names.owner(), writable=False)
    except (FileNotFoundError, ValueError):
        return False
    except OSError as exc:
        log.warning("cannot read %s: %s; leaving its run alone", entry, exc)
        return True
    try:
        if owner.size < _RECORD.size:
            return False
        pid, started = _RECORD.unpack(owner.mm[: _RECORD.size])
    finally:
        owner.close()
    # Our own pid too: a daemon of an earlier boot (or pid namespace) may have had it.
    return started != 0 and start_time(pid) == started


def remove_dead_runs(instance: str, keep: str | None = None) -> list[str]:
    """Unlink our objects of the instance's runs whose daemon is gone; returns them."""
    removed: list[str] = []
    for run in sorted(runs_of(instance)):
        names = RunNames(instance, run)
        if run == keep or owner_alive(names):
            continue
        gone = unlink_run(names)
        if gone:
            log.info("removed %d objects of dead run %s: %s", len(gone), run, ", ".join(gone))
        removed += gone
    return removed


def foreign(instance: str) -> list[tuple[str, int]]:
    """The instance's entries in /dev/shm that another user owns, with their uid."""
    return foreign_entries(f"{PREFIX}.{check_instance(instance)}.")
