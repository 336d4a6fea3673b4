"""POSIX shared-memory segments and named semaphores: made, opened, listed and removed.

Every kernel object pipelined shares goes through here, so the rules are kept in one
place (in the manner of CPython's ``multiprocessing/shared_memory.py``):

- A new object is made exclusively (``O_CREX``: an existing name is an error, never
  reused) with mode 0600, or 0660 and a group. posix_ipc's mode passes through the
  umask, so the mode (and group) are set again on the object itself after creation.
- A segment's memory is reserved when it is made (``posix_fallocate``), so a full
  /dev/shm is an error then, never a SIGBUS on some later write, and it is mapped with
  MAP_POPULATE, so the first frame does not pay for page faults.
- Linux (glibc, on ARM as on x86) keeps a segment ``/name`` as ``/dev/shm/name`` and a
  semaphore ``/name`` as ``/dev/shm/sem.name``; listing a run's objects relies on that.
"""

from __future__ import annotations

import errno
import mmap
import os

import posix_ipc

from .names import PREFIX, RUN_RE, SHM_DIR, RunNames, check_instance


class NoRoom(Exception):
    """/dev/shm cannot hold a new segment: ``needed`` bytes, ``free`` available."""

    def __init__(self, name: str, needed: int, free: int):
        super().__init__(f"no room in {SHM_DIR} for {name}: {needed:,} bytes needed, {free:,} free")
        self.needed = needed
        self.free = free


def mode_for(group: int | None) -> int:
    """0600, or 0660 when a group shares the object."""
    return 0o660 if group is not None else 0o600


class Segment:
    """One mapped POSIX shared-memory segment. ``mm`` is the mapping; closing unmaps it."""

    def __init__(self, name: str, mm: mmap.mmap):
        self.name = name
        self.mm = mm

    @classmethod
    def create(cls, name: str, size: int, group: int | None = None) -> Segment:
        """Make ``name`` with ``size`` bytes reserved and mapped; NoRoom when /dev/shm is full."""
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode_for(group))
        try:
            _restrict_fd(shm.fd, group)
            try:
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise
                raise NoRoom(name, size, free_bytes()) from None
            mm = mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        except BaseException:
            unlink_segment(name)
            raise
        finally:
            shm.close_fd()
        return cls(name, mm)

    @classmethod
    def attach(cls, name: str, *, writable: bool = True, populate: bool = False) -> Segment:
        """Map the whole of an existing segment; FileNotFoundError if there is none."""
        try:
            shm = posix_ipc.SharedMemory(name, read_only=not writable)
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(errno.ENOENT, "no such shared-memory segment", name) from None
        try:
            if shm.size == 0:
                raise ValueError(f"{SHM_DIR}{name} is empty: not set up yet")
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(shm.fd, shm.size, flags=flags, prot=prot)
        finally:
            shm.close_fd()
        return cls(name, mm)

    @property
    def size(self) -> int:
        return len(self.mm)

    def close(self) -> None:
        """Unmap. A numpy view into the mapping keeps it alive until the view goes."""
        try:
            self.mm.close()
        except BufferError:
            pass  # a zero-copy frame is still alive; the mapping goes with the last one

    def unlink(self) -> None:
        """Remove the name; processes that have it mapped keep their memory."""
        unlink_segment(self.name)


def create_semaphore(name: str, group: int | None = None) -> None:
    """Make a semaphore at 0 with the mode and group of ``mode_for``."""
    posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=mode_for(group), initial_value=0).close()
    path = f"{SHM_DIR}/sem.{name.lstrip('/')}"
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode_for(group))


def open_semaphore(name: str) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name)


def unlink_segment(name: str) -> bool:
    """Remove a segment; False if it was not there (another process got there first)."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def unlink_semaphore(name: str) -> bool:
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def free_bytes() -> int:
    stat = os.statvfs(SHM_DIR)
    return stat.f_bavail * stat.f_frsize


def _restrict_fd(fd: int, group: int | None) -> None:
    """Set mode and group after creation: the umask has had its say on the create."""
    if group is not None:
        os.fchown(fd, -1, group)
    os.fchmod(fd, mode_for(group))


# -- what a run has in /dev/shm -------------------------------------------------------------


def all_entries() -> list[str]:
    """Every pipelined object in /dev/shm, of any instance and run, as entry names."""
    return [e for e in _listing() if _strip_sem(e).startswith(PREFIX + ".")]


def run_entries(names: RunNames) -> list[str]:
    """One run's objects as /dev/shm entry names (``sem.`` in front of semaphores)."""
    return [e for e in _listing() if _strip_sem(e).startswith(names.stem)]


def unlink_run(names: RunNames) -> list[str]:
    """Remove every segment and semaphore of one run; returns what was removed.

    Safe to call from many processes at once: whoever loses a race skips the entry.
    """
    return [entry for entry in run_entries(names) if unlink_entry(entry)]


def runs_of(instance: str) -> set[str]:
    """The run tokens of an instance that have anything in /dev/shm."""
    head = f"{PREFIX}.{check_instance(instance)}."
    runs = set()
    for entry in _listing():
        name = _strip_sem(entry)
        if name.startswith(head):
            run = name[len(head) :].split(".", 1)[0]
            if RUN_RE.match(run):
                runs.add(run)
    return runs


def unlink_entry(entry: str) -> bool:
    """Remove one /dev/shm entry by its listing name; False if it was gone already."""
    if entry.startswith("sem."):
        return unlink_semaphore("/" + entry[4:])
    return unlink_segment("/" + entry)


def _listing() -> list[str]:
    try:
        return sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []


def _strip_sem(entry: str) -> str:
    return entry[4:] if entry.startswith("sem.") else entry
