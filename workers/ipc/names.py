"""The names pipelined gives things, and the rules for them: written once, used everywhere.

An instance (``main``, ``cam2``) is one daemon with its graph, socket and state folder; a
block is a node of its graph; a run is one start of that daemon. The daemon, the workers
and pipectl all check names here, so a name one of them accepts, every other accepts.

Every segment and semaphore of a run is named ``/pipelined.<instance>.<run>.<kind>.<block>…``
so that ``ls /dev/shm`` shows all of them, and so that a worker orphaned by an old run can
only ever unlink its own run's objects, never a newer run's.

This module is plain Python (no posix_ipc, no numpy), so pipectl can import it alone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "pipelined"
SHM_DIR = "/dev/shm"
DEFAULT_INSTANCE = "main"
INSTANCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
BLOCK_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
RUN_RE = re.compile(r"[a-z0-9]{1,16}\Z")
INSTANCE_RULE = "use 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
BLOCK_RULE = "use 1-64 of A-Z, a-z, 0-9, '_' and '-' (no dots)"


RUN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RUN_TOKEN_LENGTH = 16


def new_run_token() -> str:
    """A token new for each daemon start: 16 of a-z0-9, over 80 random bits.

    Any local user can create names in /dev/shm; one who cannot guess a run's token
    cannot take its names before the daemon makes them.
    """
    return "".join(secrets.choice(RUN_ALPHABET) for _ in range(RUN_TOKEN_LENGTH))


def check_instance(instance: object) -> str:
    """The instance name, or ValueError saying what a valid one looks like."""
    if not isinstance(instance, str) or not INSTANCE_RE.match(instance):
        raise ValueError(f"instance name {instance!r} is not valid: {INSTANCE_RULE}")
    return instance


def check_block(block: object) -> str:
    """The block name, or ValueError saying what a valid one looks like."""
    if not isinstance(block, str) or not BLOCK_RE.match(block):
        raise ValueError(f"block name {block!r} is not valid: {BLOCK_RULE}")
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

    def packets(self, block: str) -> str:
        return f"/{self.stem}pkt.{check_block(block)}"

    def packet_doorbell(self, block: str, reader: int) -> str:
        return f"/{self.stem}pkt.{check_block(block)}.r{reader}"

    def beat(self, block: str) -> str:
        return f"/{self.stem}beat.{check_block(block)}"

    def report(self, block: str) -> str:
        """A worker's report beside its heartbeat (the Zenoh link's remote wires)."""
        return f"/{self.stem}report.{check_block(block)}"

    def owner(self) -> str:
        """The segment that says which daemon owns this run."""
        return f"/{self.stem}owner"

    def staged(self) -> RunNames:
        """Where a reload makes the run's new objects before it renames them into place."""
        return _StagedNames(self.instance, self.run)


@dataclass(frozen=True)
class _StagedNames(RunNames):
    """``/pipelined.<instance>.<run>.next.<kind>…``: a run's objects made by a reload
    that has not switched to them yet; the run's cleanup removes them with the rest."""

    @property
    def stem(self) -> str:
        return f"{PREFIX}.{self.instance}.{self.run}.next."
