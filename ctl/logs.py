"""``pipectl logs BLOCK [-f] [-n N]``: one block's lines from the systemd journal.

The daemon, when systemd runs it, logs to the journal with PIPELINED_INSTANCE= and
PIPELINED_BLOCK= on every entry about a block (its state changes, its worker's
stderr), so this is ``journalctl PIPELINED_INSTANCE=main PIPELINED_BLOCK=red``, read
with systemd-python's ``journal.Reader`` rather than by running journalctl. It needs no
daemon: the lines of a block whose daemon is stopped, or crashed, are still there.

Reading the system journal needs root or the ``adm`` / ``systemd-journal`` group; a
user without them sees no entries, so one who finds none and may not read the system
journal's files is told that, and which group to join, instead of "no lines" (exit 1).
A daemon run in a terminal logs to its stderr, not to the journal: there is nothing to
read here for it.

Exit status, as every verb's (docs/design.md): 1 when there is no journal on this box
(no systemd-journald; ``-D DIR`` without journal files), so ``-f`` never waits for lines
that cannot come; 1 when the journal has no line of the block and the running daemon has
no such block (``pipectl stop nosuch`` exits 1 the same way), or no daemon answers to say
it has one (except with ``-f``, which may wait for a daemon yet to start); else 0.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import pwd
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pipelined.workers.ipc.names import DEFAULT_INSTANCE

from . import argtypes
from .client import Client, DaemonUnreachable
from .protocol import NO_SUCH_BLOCK, CommandError

HELP = "a block's log lines from the systemd journal (the system daemon's)"
FOLLOW_WAIT = 1.0
JOURNALD_SOCKET = "/run/systemd/journal/socket"
"""Where systemd-journald listens: without it, nothing is ever written to a journal here."""
ASK_TIMEOUT = 3.0
SYSTEM_JOURNALS = ("/var/log/journal/*/system.journal", "/run/log/journal/*/system.journal")
"""The system journal's active files: persistent, or volatile when /var/log/journal is not."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "block", type=argtypes.block, metavar="BLOCK", help="the block whose lines to show"
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C"
    )
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=50,
        metavar="N",
        help="how many of the last lines to show first (default 50; 0: none)",
    )
    parser.add_argument(
        "-D",
        "--directory",
        metavar="DIR",
        help="read the journal files in DIR (a copy from another box), like journalctl -D",
    )


def format_entry(entry: Mapping[str, Any]) -> str:
    """``2026-11-26 01:36:08 [pid 94] camera: started camera as pid 94``, in local time."""
    when = entry.get("__REALTIME_TIMESTAMP")
    stamp = when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"
    pid = entry.get("PIPELINED_PID")
    return f"{stamp} {f'[pid {pid}] ' if pid else ''}{entry.get('MESSAGE', '')}"


def as_json(entry: Mapping[str, Any]) -> str:
    when = entry.get("__REALTIME_TIMESTAMP")
    pid = entry.get("PIPELINED_PID")
    return json.dumps(
        {
            "time": when.isoformat() if isinstance(when, datetime.datetime) else None,
            "instance": entry.get("PIPELINED_INSTANCE"),
            "block": entry.get("PIPELINED_BLOCK"),
            "pid": int(pid) if isinstance(pid, str | int) and str(pid).isdigit() else None,
            "priority": entry.get("PRIORITY"),
            "message": entry.get("MESSAGE", ""),
        }
    )


def _open(instance: str, block: str, directory: str | None) -> Any:
    from systemd import journal  # imported here: every other verb works without it

    reader = journal.Reader(path=directory) if directory else journal.Reader()
    reader.add_match(PIPELINED_INSTANCE=instance, PIPELINED_BLOCK=block)
    return reader


def no_journal(directory: str | None) -> str | None:
    """Why there is no journal to read here, or None: then following could wait forever."""
    if directory is not None:
        if not os.path.isdir(directory):
            return f"{directory} is not a directory"
        for _, _, files in os.walk(directory):
            if any(f.endswith((".journal", ".journal~")) for f in files):
                return None
        return f"{directory} holds no journal files (*.journal)"
    if os.path.exists(JOURNALD_SOCKET):
        return None
    return (
        "this box has no systemd journal (systemd-journald does not run: no"
        f" {JOURNALD_SOCKET}),"
        " so there are no lines to show or follow. A daemon run in a terminal logs to its"
        " stderr: look there"
    )


def not_allowed() -> str | None:
    """Why this user reads none of the system journal (where the system daemon logs), or
    None when they may, or when there is no system journal file to judge by."""
    if os.geteuid() == 0:
        return None
    files = [f for pattern in SYSTEM_JOURNALS for f in glob.glob(pattern)]
    if not files or any(os.access(f, os.R_OK) for f in files):
        return None
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return (
        f"you ({user}) may not read the system journal, where the system daemon logs:"
        " that needs root, or membership of the systemd-journal group (or adm):"
        f" sudo usermod -aG systemd-journal {user}, then log in again"
    )


def has_entries(reader: Any) -> bool:
    """Whether any entry matches; the reader is left at the end."""
    reader.seek_tail()
    found = bool(reader.get_previous())
    reader.seek_tail()
    return found


def ask_daemon(path: Path, block: str, timeout: float) -> str | None:
    """Whether the running daemon has ``block``: None if it has; else why not to go on
    (its no_such_block message, or that no daemon answers to say)."""
    try:
        with Client(path, timeout) as daemon:
            daemon.call("status", blocks=[block])
    except DaemonUnreachable:
        return "no daemon answers to say that it has such a block"
    except CommandError as exc:
        if exc.code == NO_SUCH_BLOCK:
            return f"{exc.message} ({NO_SUCH_BLOCK})"
        raise
    return None


def last_entries(reader: Any, count: int) -> list[dict[str, Any]]:
    """The last ``count`` matching entries, oldest first; the reader is left after them."""
    reader.seek_tail()
    entries: list[dict[str, Any]] = []
    while len(entries) < count:
        entry = reader.get_previous()
        if not entry:
            break
        entries.append(entry)
    entries.reverse()
    reader.seek_tail()
    reader.get_previous()  # positioned on the newest entry: get_next() gives what comes after
    return entries


def follow(reader: Any) -> Iterator[dict[str, Any]]:
    """New matching entries as they arrive, forever."""
    while True:
        entry = reader.get_next()
        if entry:
            yield entry
            continue
        reader.wait(FOLLOW_WAIT)


def run(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    """The ``logs`` verb. It reads the journal itself; the daemon at ``path``, if one
    answers, is asked only whether a block without any line in the journal exists."""
    instance = getattr(ns, "instance", DEFAULT_INSTANCE)
    show = as_json if ns.json else format_entry
    missing = no_journal(ns.directory)
    if missing is not None:
        print(f"pipectl logs: {missing}", file=sys.stderr)
        return 1
    try:
        reader = _open(instance, ns.block, ns.directory)
    except (ImportError, OSError) as exc:
        print(f"pipectl logs: cannot read the systemd journal: {exc}", file=sys.stderr)
        return 1
    with reader:
        if not has_entries(reader):
            refused = None if ns.directory else not_allowed()
            if refused is not None:
                print(f"pipectl logs: {refused}", file=sys.stderr)
                return 1
            none = f"the journal has no lines of block {ns.block!r} of instance {instance!r}"
            why_not = ask_daemon(path, ns.block, getattr(ns, "timeout", ASK_TIMEOUT))
            if why_not is not None and (ns.follow is False or NO_SUCH_BLOCK in why_not):
                print(f"pipectl logs: {none}, and {why_not}", file=sys.stderr)
                return 1
            print(
                f"pipectl logs: {none} yet. The system daemon logs there (a daemon run in"
                " a terminal logs to its stderr); reading it needs root or the adm or"
                " systemd-journal group.",
                file=sys.stderr,
            )
        shown = last_entries(reader, max(ns.lines, 0))
        for entry in shown:
            print(show(entry), file=out)
        out.flush()
        if ns.follow:
            try:
                for entry in follow(reader):
                    print(show(entry), file=out, flush=True)
            except KeyboardInterrupt:
                pass
    return 0
