"""``pipectl logs BLOCK [-f] [-n N]``: one block's lines from the systemd journal.

The daemon, when systemd runs it, logs to the journal with PIPELINED_INSTANCE= and
PIPELINED_BLOCK= on every entry about a block (its state changes, its worker's
stderr), so this is ``journalctl PIPELINED_INSTANCE=main PIPELINED_BLOCK=red``, read
with systemd-python's ``journal.Reader`` rather than by running journalctl. It needs no
daemon: the lines of a block whose daemon is stopped, or crashed, are still there.

Reading the system journal needs root or the ``adm`` / ``systemd-journal`` group; a
user without them sees no entries, and is told so. A daemon run in a terminal logs to
its stderr, not to the journal: there is nothing to read here for it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pipelined.workers.ipc.names import DEFAULT_INSTANCE

from . import argtypes

HELP = "a block's log lines from the systemd journal (the system daemon's)"
FOLLOW_WAIT = 1.0


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
    """The ``logs`` verb (``path``, the control socket, is not used: no daemon needed)."""
    instance = getattr(ns, "instance", DEFAULT_INSTANCE)
    show = as_json if ns.json else format_entry
    try:
        reader = _open(instance, ns.block, ns.directory)
    except (ImportError, OSError) as exc:
        print(f"pipectl: cannot read the systemd journal: {exc}", file=sys.stderr)
        return 1
    with reader:
        shown = last_entries(reader, max(ns.lines, 0))
        for entry in shown:
            print(show(entry), file=out)
        if not shown and ns.lines > 0 and not ns.follow:
            print(
                f"pipectl: the journal has no lines of block {ns.block!r} of instance"
                f" {instance!r}. The system daemon logs there (a daemon run in a terminal"
                " logs to its stderr); reading it needs root or the adm or"
                " systemd-journal group.",
                file=sys.stderr,
            )
        out.flush()
        if ns.follow:
            try:
                for entry in follow(reader):
                    print(show(entry), file=out, flush=True)
            except KeyboardInterrupt:
                pass
    return 0
