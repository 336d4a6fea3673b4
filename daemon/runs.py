"""Which daemon owns a run, and the removal of runs whose daemon is dead.

Each run has a small ``owner`` segment holding the daemon's pid and start time. A new
daemon of the same instance removes the objects of every run whose owner is gone, so a
box that lost power or had its daemon killed does not fill /dev/shm over the months.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct

import posix_ipc

from pipelined.workers.ipc.liveness import Supervisor, start_time
from pipelined.workers.ipc.names import RunNames, runs_of

log = logging.getLogger("pipelined.runs")
_RECORD = struct.Struct("<QQ")  # pid, start time


def claim(names: RunNames, group: int | None = None) -> None:
    """Mark this process as the owner of ``names``' run."""
    me = Supervisor.me()
    mode = 0o660 if group is not None else 0o600
    shm = posix_ipc.SharedMemory(names.owner(), posix_ipc.O_CREX, mode=mode, size=_RECORD.size)
    try:
        if group is not None:
            os.fchown(shm.fd, -1, group)
        os.fchmod(shm.fd, mode)
        with mmap.mmap(shm.fd, _RECORD.size) as mm:
            mm[:] = _RECORD.pack(me.pid, me.start_time)
    finally:
        shm.close_fd()


def owner_alive(names: RunNames) -> bool:
    try:
        shm = posix_ipc.SharedMemory(names.owner())
    except posix_ipc.ExistentialError:
        return False
    try:
        if shm.size < _RECORD.size:
            return False
        with mmap.mmap(shm.fd, _RECORD.size, prot=mmap.PROT_READ) as mm:
            pid, started = _RECORD.unpack(mm[:])
    finally:
        shm.close_fd()
    return pid == os.getpid() or (start_time(pid) == started and started != 0)


def remove_dead_runs(instance: str, keep: str | None = None) -> list[str]:
    """Unlink every object of the instance's runs whose daemon is gone; returns them."""
    removed: list[str] = []
    for run in sorted(runs_of(instance)):
        names = RunNames(instance, run)
        if run == keep or owner_alive(names):
            continue
        gone = names.unlink_all()
        if gone:
            log.info("removed %d objects of dead run %s: %s", len(gone), run, ", ".join(gone))
        removed += gone
    return removed
