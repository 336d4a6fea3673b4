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
- /dev/shm is shared with every local user, who may create any name in it. A name that
  exists already is ``NameTaken`` (saying whose it is), never reused; and removing a run
  removes only the entries this process's user owns, never stopping at another's
  (the directory is sticky: only an entry's owner, or root, may remove or replace it).
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable

import posix_ipc

from .names import PREFIX, RUN_RE, SHM_DIR, RunNames, check_instance


class NoRoom(Exception):
    """/dev/shm cannot hold a new segment: ``needed`` bytes, ``free`` available."""

    def __init__(self, name: str, needed: int, free: int):
        if needed <= free and no_entries_left():
            why = "it holds no more entries (every inode of the file system is in use)"
        else:
            why = f"{needed:,} bytes needed, {free:,} free"
        super().__init__(f"no room in {SHM_DIR} for {name}: {why}")
        self.needed = needed
        self.free = free


class NameTaken(FileExistsError):
    """The name exists already: left by an older run, or made by another user."""

    def __init__(self, name: str):
        entry = _entry_of(name)
        try:
            whose = f" (owned by uid {os.lstat(f'{SHM_DIR}/{entry}').st_uid})"
        except OSError:
            whose = ""
        super().__init__(errno.EEXIST, f"{SHM_DIR}/{entry} exists already{whose}")
        self.name = name

    def __str__(self) -> str:
        return self.strerror or ""


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
        """Make ``name`` with ``size`` bytes reserved and mapped.

        NameTaken when the name exists; NoRoom when /dev/shm is full.
        """
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode_for(group))
        except posix_ipc.ExistentialError:
            raise NameTaken(name) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise NoRoom(name, size, free_bytes()) from None
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
        except posix_ipc.PermissionsError:
            raise PermissionError(errno.EACCES, "permission denied", name) from None
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
    """Make a semaphore at 0 with the mode and group of ``mode_for``; NameTaken, NoRoom."""
    try:
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=mode_for(group), initial_value=0).close()
    except posix_ipc.ExistentialError:
        raise NameTaken(f"sem.{name.lstrip('/')}") from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NoRoom(name, 0, free_bytes()) from None
    path = f"{SHM_DIR}/sem.{name.lstrip('/')}"
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode_for(group))


def open_semaphore(name: str) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name)


def unlink_segment(name: str) -> bool:
    """Remove a segment of ours; False if it was not there (another process got there
    first) or is another user's (left alone, even by root)."""
    return _unlink_mine(_entry_of(name), name, posix_ipc.unlink_shared_memory)


def unlink_semaphore(name: str) -> bool:
    """Remove a semaphore of ours; False as for ``unlink_segment``."""
    return _unlink_mine("sem." + _entry_of(name), name, posix_ipc.unlink_semaphore)


def _unlink_mine(entry: str, name: str, unlink: Callable[[str], None]) -> bool:
    if not is_mine(entry):
        return False
    try:
        unlink(name)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        return False
    return True


def free_bytes() -> int:
    stat = os.statvfs(SHM_DIR)
    return stat.f_bavail * stat.f_frsize


def no_entries_left() -> bool:
    """Whether /dev/shm has run out of inodes (a tmpfs mounted with ``nr_inodes``)."""
    stat = os.statvfs(SHM_DIR)
    return stat.f_files > 0 and stat.f_favail == 0


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
    """One run's objects as /dev/shm entry names (``sem.`` in front of semaphores).

    Every entry with the run's names, whoever owns it: see ``owner_of``.
    """
    return [e for e in _listing() if _strip_sem(e).startswith(names.stem)]


def owner_of(entry: str) -> int | None:
    """The uid that owns a /dev/shm entry (the symlink itself, if it is one); None: gone."""
    try:
        return os.lstat(f"{SHM_DIR}/{entry}").st_uid
    except FileNotFoundError:
        return None


def is_mine(entry: str) -> bool:
    """Whether this process's user owns the entry, and so may ever remove it."""
    return owner_of(entry) == os.geteuid()


def foreign_entries(prefix: str) -> list[tuple[str, int]]:
    """Entries whose name starts ``prefix`` that another user owns, with their uid."""
    found = []
    for entry in _listing():
        if _strip_sem(entry).startswith(prefix):
            uid = owner_of(entry)
            if uid is not None and uid != os.geteuid():
                found.append((entry, uid))
    return found


def unlink_run(names: RunNames) -> list[str]:
    """Remove every segment and semaphore of one run that is ours; returns what was removed.

    An entry of another user with the run's names is left alone (even by root), and
    never stops the removal of the rest. Safe to call from many processes at once:
    whoever loses a race skips the entry.
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
    """Remove one /dev/shm entry by its listing name; False if it was gone (or not ours)."""
    if entry.startswith("sem."):
        return unlink_semaphore("/" + entry[4:])
    return unlink_segment("/" + entry)


def rename_entry(old: str, new: str) -> None:
    """Give a /dev/shm entry of ours another name, replacing what has that name.

    rename(2) replaces atomically: the new name is never missing, so no other process
    can take it in between. Processes that have the replaced object mapped keep it.
    """
    if not is_mine(old):
        raise PermissionError(errno.EPERM, "not this user's entry", f"{SHM_DIR}/{old}")
    os.rename(f"{SHM_DIR}/{old}", f"{SHM_DIR}/{new}")


def _listing() -> list[str]:
    try:
        return sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []


def _strip_sem(entry: str) -> str:
    return entry[4:] if entry.startswith("sem.") else entry


def _entry_of(name: str) -> str:
    """The /dev/shm entry of a segment's name ("/x" -> "x"; "sem.x" stays)."""
    return name.lstrip("/")
