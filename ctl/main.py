"""pipectl: talk to a running pipelined daemon.

    pipectl status                 the blocks and wires, like supervisorctl's table
    pipectl status --watch         the same, refreshed in place until Ctrl-C
    pipectl stop red && pipectl start red
    pipectl graph --dot | dot -Tsvg > graph.svg
    pipectl recordings cam --since -1h
    pipectl events motion -f
    pipectl export cam --since 14:00 --until 14:05 clip.mp4

Exit codes, one rule for every verb (docs/design.md): 0 done, 1 refused, failed or not
there (an unknown block, for ``logs`` too; no journal to read), 2 usage, 3 no daemon
reachable. ``--socket``, ``--instance`` and
``--timeout`` may come before or after the verb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pipelined.workers.ipc.names import DEFAULT_INSTANCE

from . import argtypes, events, logs, when
from . import format as fmt
from .client import Client, DaemonUnreachable
from .protocol import (
    SOCKET_ENV,
    UNKNOWN_COMMAND,
    CommandError,
    ProtocolError,
    places_looked,
    socket_path,
)

EXIT_OK = 0
EXIT_FAILED = 1  # the daemon refused or failed
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def build_parser() -> argparse.ArgumentParser:
    # The common options live on a parent parser with SUPPRESS defaults, so they work on
    # either side of the verb without one position overwriting the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"the daemon's control socket (default: ${SOCKET_ENV}, else by --instance)",
    )
    common.add_argument(
        "--instance",
        type=argtypes.instance,
        default=argparse.SUPPRESS,
        metavar="NAME",
        help=f"which daemon, when several run (default: {DEFAULT_INSTANCE})",
    )
    common.add_argument(
        "--timeout",
        type=argtypes.positive,
        default=argparse.SUPPRESS,
        metavar="S",
        help="seconds to wait for the daemon (default: 10)",
    )
    parser = argparse.ArgumentParser(
        prog="pipectl",
        parents=[common],
        description="Control a running pipelined daemon.",
        epilog="Exit codes: 0 done, 1 the daemon refused or failed, 2 usage, 3 no daemon.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, parents=[common], help=help, description=help)
        sub.add_argument("--json", action="store_true", help="print the daemon's JSON")
        return sub

    status = verb("status", "the state of every block (or of the BLOCKs named) and the wires")
    status.add_argument("blocks", nargs="*", type=argtypes.block, metavar="BLOCK")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--interval", type=argtypes.positive, default=2.0, metavar="S", help="--watch period (2 s)"
    )
    status.add_argument(
        "--count", type=int, default=None, metavar="N", help="--watch: stop after N refreshes"
    )
    for name, what in (("start", "start"), ("stop", "stop")):
        sub = verb(name, f"{what} the BLOCKs named, or all of them; the daemon keeps running")
        sub.add_argument("blocks", nargs="*", type=argtypes.block, metavar="BLOCK")
    restart = verb("restart", "stop and start the BLOCKs named")
    restart.add_argument("blocks", nargs="+", type=argtypes.block, metavar="BLOCK")
    verb("reload", "re-read the graph file and restart only what changed")
    graph = verb("graph", "the running graph: blocks, states and what each reads")
    graph.add_argument("--dot", action="store_true", help="as Graphviz dot, states as colours")
    verb("wires", "each wire: writer, readers, frames and drops")
    verb("hello", "the daemon's version, instance and protocol")
    logs.add_arguments(verb("logs", logs.HELP))
    recordings = verb("recordings", "the segments recorders wrote, oldest first, gaps shown")
    recordings.add_argument("block", nargs="?", type=argtypes.block, metavar="BLOCK")
    _time_range(recordings, required=False)
    export = verb("export", "join a recorder's segments over a time range into one file")
    export.add_argument("block", type=argtypes.block, metavar="BLOCK")
    _time_range(export, required=True)
    export.add_argument("file", type=Path, metavar="FILE", help="FILE.mp4 (or .mov, .mkv)")
    events.add_arguments(verb("events", events.HELP), argtypes.block, _when)
    return parser


def _time_range(sub: argparse.ArgumentParser, required: bool) -> None:
    for name in ("since", "until"):
        sub.add_argument(
            f"--{name}", type=_when, required=required, metavar="T", help=f"T: {when.HELP}"
        )


def _glue_times(argv: list[str]) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: argparse takes "-1h" for an option otherwise."""
    glued, i = [], 0
    while i < len(argv):
        if argv[i] in ("--since", "--until") and i + 1 < len(argv) and argv[i + 1][:1] == "-":
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued


def _when(text: str) -> float:
    try:
        return when.parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _client(ns: argparse.Namespace, path: Path) -> Client:
    return Client(path, getattr(ns, "timeout", 10.0))


def _print_json(result: Any, out: TextIO) -> None:
    print(json.dumps(result, indent=2, sort_keys=False), file=out)


def _run_status(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    if ns.watch:
        return _watch(ns, path, out)
    with _client(ns, path) as daemon:
        result = daemon.call("status", blocks=ns.blocks)
    if ns.json:
        _print_json(result, out)
    else:
        print(fmt.status(result), file=out)
    return EXIT_OK


def _watch(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    """Redraw the status page every --interval, in place on a terminal.

    On a terminal the page is redrawn from the top-left corner, each line erased to its
    end, and cut to the window so it never scrolls. Elsewhere (a pipe, a log) each
    refresh is appended: the whole table, or one JSON object per line with --json. If
    the daemon goes away after the first refresh the page says so and keeps trying, so
    a watch survives a daemon restart.
    """
    tty = out.isatty() and not ns.json
    frames = 0
    what = " ".join(["pipectl status", *ns.blocks])
    try:
        while True:
            columns, rows = shutil.get_terminal_size()
            try:
                with _client(ns, path) as daemon:
                    result = daemon.call("status", blocks=ns.blocks)
                    history = None if ns.json else _history(daemon, ns.blocks)
                if ns.json:
                    body = json.dumps(result)
                else:
                    body = fmt.status(result, width=columns if tty else None, history=history)
            except DaemonUnreachable as exc:
                if frames == 0:
                    raise
                body = f"pipectl: {exc}; trying again every {ns.interval:g} s"
                if ns.json:
                    print(body, file=sys.stderr)
                    body = ""
            frames += 1
            if tty:
                stamp = time.strftime("%H:%M:%S")
                head = f"Every {ns.interval:g}s: {what}"
                head = f"{head}{f'{socket.gethostname()}: {stamp}':>{max(columns - len(head), 1)}}"
                lines = [head[:columns], "", *body.splitlines()][: max(rows - 1, 1)]
                clear = "\x1b[2J" if frames == 1 else ""
                out.write(
                    clear + "\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J"
                )
            elif body:
                out.write(body + ("\n" if ns.json else "\n\n"))
            out.flush()
            if ns.count is not None and frames >= ns.count:
                return EXIT_OK
            time.sleep(ns.interval)
    except KeyboardInterrupt:
        return EXIT_OK


def _history(daemon: Client, blocks: list[str]) -> Any:
    """The blocks' last hour for the watch's sparklines; None from a daemon without it."""
    try:
        return daemon.call("history", blocks=blocks)
    except CommandError as exc:
        if exc.code == UNKNOWN_COMMAND:
            return None
        raise


def _run_action(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    args: dict[str, Any] = {"blocks": ns.blocks} if ns.verb != "reload" else {}
    with _client(ns, path) as daemon:
        result = daemon.call(ns.verb, **args)
    if ns.json:
        _print_json(result, out)
    else:
        print(fmt.action(ns.verb, result), file=out)
    return EXIT_OK


def _run_graph(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    with _client(ns, path) as daemon:
        result = daemon.call("graph")
    if ns.json:
        _print_json(result, out)
    elif ns.dot:
        print(fmt.dot(result, f"pipelined {getattr(ns, 'instance', DEFAULT_INSTANCE)}"), file=out)
    else:
        print(fmt.graph(result), file=out)
    return EXIT_OK


def _run_simple(formatter: Callable[[Any], str]) -> Callable[..., int]:
    def run(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
        with _client(ns, path) as daemon:
            result = daemon.call(ns.verb)
        if ns.json:
            _print_json(result, out)
        else:
            print(formatter(result), file=out)
        return EXIT_OK

    return run


def _list_recordings(ns: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Every page of the ``recordings`` command for the block and range asked."""
    args: dict[str, Any] = {"blocks": [ns.block] if ns.block else []}
    args |= {"since": ns.since, "until": ns.until, "limit": 1000}
    with _client(ns, path) as daemon:
        result = daemon.call("recordings", **args)
        while result["more"]:
            last = result["recordings"][-1]
            page = daemon.call("recordings", **args, after=f"{last['block']}/{last['file']}")
            result["recordings"] += page["recordings"]
            result["more"] = page["more"]
    return result


def _run_recordings(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    result = _list_recordings(ns, path)
    if ns.json:
        _print_json(result, out)
    else:
        print(fmt.recordings(result), file=out)
    return EXIT_OK


def _run_export(ns: argparse.Namespace, path: Path, out: TextIO) -> int:
    from .export import ExportError, export

    if ns.until <= ns.since:
        print("pipectl export: --until must come after --since", file=sys.stderr)
        return EXIT_USAGE
    recordings = _list_recordings(ns, path)["recordings"]
    try:
        done = export(recordings, ns.since, ns.until, ns.file)
    except ExportError as exc:
        print(f"pipectl export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    summary = {
        "file": str(ns.file), "segments": done.segments, "packets": done.packets,
        "start": done.start, "seconds": round(done.seconds, 3), "bytes": done.bytes,
    }  # fmt: skip
    if ns.json:
        _print_json(summary, out)
    else:
        print(
            f"{ns.file}: {done.seconds:.1f} s from {when.show(done.start)}, {done.segments}"
            f" segments joined, {fmt.size(done.bytes)}",
            file=out,
        )
    return EXIT_OK


VERBS: dict[str, Callable[[argparse.Namespace, Path, TextIO], int]] = {
    "status": _run_status,
    "start": _run_action,
    "stop": _run_action,
    "restart": _run_action,
    "reload": _run_action,
    "graph": _run_graph,
    "wires": _run_simple(fmt.wires),
    "hello": _run_simple(fmt.hello),
    "logs": logs.run,
    "recordings": _run_recordings,
    "export": _run_export,
    "events": events.run,
}


def no_daemon_message(exc: DaemonUnreachable, instance: str, explicit: str | None) -> str:
    """What pipectl says when no daemon answers: where it looked, and how to start one."""
    lines = [f"pipectl: {exc}"]
    places = places_looked(instance, explicit)
    lines.append("where pipectl looked (pipelined follows the same rule):")
    for place in places:
        lines.append(f"  {place.source:<18} {place.path if place.path else place.note}")
    if exc.absent:
        if explicit or places[-1].source == f"${SOCKET_ENV}":
            own = f"pipelined --socket {exc.path}"
        else:
            own = f"pipelined --instance {instance}"
        lines.append(
            "to start one: `sudo systemctl start pipelined` (the system daemon), or"
            f" `{own}` to run one in the foreground as you"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """pipectl's entry point; returns the exit code."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        ns = parser.parse_args(_glue_times(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    instance = getattr(ns, "instance", DEFAULT_INSTANCE)
    explicit = getattr(ns, "socket", None)
    path = socket_path(instance, explicit)
    try:
        return VERBS[ns.verb](ns, path, out)
    except DaemonUnreachable as exc:
        print(no_daemon_message(exc, instance, explicit), file=sys.stderr)
        return EXIT_UNREACHABLE
    except CommandError as exc:
        print(
            f"pipectl: the daemon refused {ns.verb!r}: {exc.message} ({exc.code})", file=sys.stderr
        )
        return EXIT_FAILED
    except ProtocolError as exc:
        print(f"pipectl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pipectl status | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
