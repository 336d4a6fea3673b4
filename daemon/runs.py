"""Which daemon owns a run, and the removal of runs whose daemon is dead.

Each run has a small ``owner`` segment holding the daemon's pid and start time. A new
daemon of the same instance removes the objects of every run whose owner is gone, so a
box that lost power or had its daemon killed does not fill /dev/shm over the months.
"""

from __future__ import annotations

import logging
import os
import struct

from pipelined.workers.ipc.liveness import ProcessIdentity, start_time
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.segment import Segment, runs_of, unlink_run

log = logging.getLogger("pipelined.runs")
_RECORD = struct.Struct("<QQ")  # pid, start time


def claim(names: RunNames, group: int | None = None) -> None:
    """Mark this process as the owner of ``names``' run."""
    me = ProcessIdentity.me()
    owner = Segment.create(names.owner(), _RECORD.size, group)
    owner.mm[:] = _RECORD.pack(me.pid, me.start_time)
    owner.close()


def owner_alive(names: RunNames) -> bool:
    try:
        owner = Segment.attach(names.owner(), writable=False)
    except (FileNotFoundError, ValueError):
        return False
    try:
        if owner.size < _RECORD.size:
            return False
        pid, started = _RECORD.unpack(owner.mm[: _RECORD.size])
    finally:
        owner.close()
    return pid == os.getpid() or (start_time(pid) == started and started != 0)


def remove_dead_runs(instance: str, keep: str | None = None) -> list[str]:
    """Unlink every object of the instance's runs whose daemon is gone; returns them."""
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
