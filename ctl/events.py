"""``pipectl events [BLOCK] [--since T] [--until T] [-n N] [-f]``: what the blocks raised.

The list is the ``events`` command's (the daemon's store), oldest first, the newest at
the bottom where the eye is. ``-f`` then follows: every half second it asks for what
changed since the last answer (``after`` its ``seq``) and prints a line per change,
start, update (a clip linked, a better score) or end; if the daemon goes away it says so
and keeps asking, so a follow survives a restart of the daemon.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, TextIO

from . import format as fmt
from . import when
from .client import Client, DaemonUnreachable

HELP = "the events blocks raised, oldest first (-f: and then as they happen)"
FOLLOW_EVERY = 0.5


def add_arguments(sub: argparse.ArgumentParser, block: Any, moment: Any) -> None:
    sub.add_argument("block", nargs="?", type=block, metavar="BLOCK")
    for name in ("since", "until"):
        sub.add_argument(f"--{name}", type=moment, metavar="T", help=f"T: {when.HELP}")
    sub.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="the last N (50)")
    sub.add_argument("-f", "--follow", action="store_true", help="then print changes as they come")


def run(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    timeout = getattr(ns, "timeout", 10.0)
    args: dict[str, Any] = {"blocks": [ns.block] if ns.block else []}
    args |= {k: v for k, v in (("since", ns.since), ("until", ns.until)) if v is not None}
    limit = max(1, min(ns.lines, 1000))
    with Client(path, timeout) as daemon:
        result = daemon.call("events", **args, limit=limit, order="newest")
    events = list(reversed(result["events"]))
    if ns.json and not ns.follow:
        print(json.dumps({**result, "events": events}, indent=2), file=out)
        return 0
    if ns.json:
        for event in events:
            print(json.dumps(event), file=out)
    else:
        print(fmt.events(events, result.get("store")), file=out)
    if ns.follow:
        out.flush()
        return follow(ns, path, out, result["seq"], {e["id"]: e for e in events}, args, timeout)
    return 0


def follow(
    ns: argparse.Namespace,
    path: Path,
    out: TextIO,
    seq: int,
    known: dict[str, dict[str, Any]],
    args: dict[str, Any],
    timeout: float,
) -> int:
    """Print each change after ``seq`` as it comes, until Ctrl-C."""
    args = {k: v for k, v in args.items() if k == "blocks"}
    away = False
    try:
        while True:
            time.sleep(FOLLOW_EVERY)
            try:
                with Client(path, timeout) as daemon:
                    result = daemon.call("events", **args, after=seq, limit=1000)
            except DaemonUnreachable as exc:
                if not away:
                    print(f"pipectl: {exc}; trying again", file=out, flush=True)
                away = True
                continue
            away = False
            if result["seq"] < seq:  # a new store (or none): start over from its beginning
                seq = 0
                continue
            for event in result["events"]:
                change = _change(known.get(event["id"]), event)
                known[event["id"]] = event
                if ns.json:
                    print(json.dumps({"type": change, "event": event}), file=out)
                else:
                    print(fmt.event_line(change, event), file=out)
                seq = max(seq, event["seq"])
            if not result["more"]:
                seq = max(seq, result["seq"])
            out.flush()
            if len(known) > 10000:
                known.clear()
    except KeyboardInterrupt:
        return 0


def _change(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    if before is None:
        return (
            "start" if after.get("end") is None or after.get("end") == after.get("start") else "end"
        )
    if before.get("end") is None and after.get("end") is not None:
        return "end"
    return "update"
