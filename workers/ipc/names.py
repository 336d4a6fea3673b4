"""Names of the kernel objects of one run, and how to find and remove them.

Every segment and semaphore is named ``/pipelined.<instance>.<run>.<kind>.<block>…`` so
that ``ls /dev/shm`` shows all of them, and so that a worker orphaned by an old run can
only ever unlink its own run's objects, never a newer run's. Linux (glibc) keeps POSIX
shared memory in /dev/shm as ``<name>`` and named semaphores as ``sem.<name>``; the
listing below relies on that, on ARM as on x86.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass

import posix_ipc

PREFIX = "pipelined"
SHM_DIR = "/dev/shm"
INSTANCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
BLOCK_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
RUN_RE = re.compile(r"[a-z0-9]{1,16}\Z")
DEFAULT_INSTANCE = "main"


def new_run_token() -> str:
    """A short token, new for each daemon start."""
    return secrets.token_hex(4)


def check_instance(instance: str) -> str:
    if not INSTANCE_RE.match(instance):
        raise ValueError(
            f"instance name {instance!r} is not valid: use 1-32 of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit"
        )
    return instance


def check_block(block: str) -> str:
    if not BLOCK_RE.match(block):
        raise ValueError(
            f"block name {block!r} is not valid: use 1-64 of A-Z, a-z, 0-9, '_' and '-' (no dots)"
        )
    return block


@dataclass(frozen=True)
class RunNames:
    """The names of everything one daemon start creates."""

    instance: str
    run: str

    def __post_init__(self) -> None:
        check_instance(self.instance)
        if not RUN_RE.match(self.run):
            raise ValueError(f"run token {self.run!r} is not valid: use 1-16 of a-z, 0-9")

    @property
    def stem(self) -> str:
        """The part every object of this run starts with, without the leading slash."""
        return f"{PREFIX}.{self.instance}.{self.run}."

    def wire(self, block: str) -> str:
        return f"/{self.stem}wire.{check_block(block)}"

    def doorbell(self, block: str, reader: int) -> str:
        return f"/{self.stem}wire.{check_block(block)}.r{reader}"

    def beat(self, block: str) -> str:
        return f"/{self.stem}beat.{check_block(block)}"

    def owner(self) -> str:
        """The segment that says which daemon owns this run."""
        return f"/{self.stem}owner"

    def entries(self) -> list[str]:
        """This run's objects as /dev/shm entry names."""
        return [e for e in _shm_listing() if _strip_sem(e).startswith(self.stem)]

    def unlink_all(self) -> list[str]:
        """Remove every segment and semaphore of this run; returns what was removed.

        Safe to call from many processes at once: whoever loses a race skips the entry.
        """
        removed = []
        for entry in self.entries():
            if _unlink_entry(entry):
                removed.append(entry)
        return removed


def runs_of(instance: str) -> set[str]:
    """The run tokens of an instance that have anything in /dev/shm."""
    head = f"{PREFIX}.{check_instance(instance)}."
    runs = set()
    for entry in _shm_listing():
        name = _strip_sem(entry)
        if name.startswith(head):
            run = name[len(head) :].split(".", 1)[0]
            if RUN_RE.match(run):
                runs.add(run)
    return runs


def all_entries() -> list[str]:
    """Every pipelined object in /dev/shm, of any instance and run."""
    return [e for e in _shm_listing() if _strip_sem(e).startswith(PREFIX + ".")]


def _shm_listing() -> list[str]:
    try:
        return sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []


def _strip_sem(entry: str) -> str:
    return entry[4:] if entry.startswith("sem.") else entry


def _unlink_entry(entry: str) -> bool:
    try:
        if entry.startswith("sem."):
            posix_ipc.unlink_semaphore("/" + entry[4:])
        else:
            posix_ipc.unlink_shared_memory("/" + entry)
    except posix_ipc.ExistentialError:
        return False
    return True
