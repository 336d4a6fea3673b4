"""``pipelined``: run a graph in the foreground (systemd runs it so), or check a graph file.

    pipelined [--graph FILE] [--instance NAME] [--socket PATH] [--http ADDR:PORT]
    pipelined --check FILE
    pipelined blocks [TYPE]        the block types and their parameters

With no --graph it runs the built-in five-block demo on the synthetic testsrc camera.
A graph that fails to load exits with status 78 (EX_CONFIG), which the systemd unit
does not restart: a typo in a graph file is not fixed by trying again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pipelined.ctl.protocol import socket_path
from pipelined.workers.contract import EX_CONFIG
from pipelined.workers.ipc.names import DEFAULT_INSTANCE, check_instance

from . import systemd as sd
from . import web
from .app import Daemon
from .control import ControlSocketError
from .graph import Graph, GraphError, default_graph, describe, load_graph
from .supervisor import RunError

log = logging.getLogger("pipelined")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pipelined", description="Run a camera-processing graph on this box."
    )
    parser.add_argument("--graph", metavar="FILE", help="graph file (default: the built-in demo)")
    parser.add_argument(
        "--instance", default=DEFAULT_INSTANCE, help="instance name (default: main)"
    )
    parser.add_argument("--socket", metavar="PATH", help="control socket path")
    parser.add_argument("--check", metavar="FILE", help="only validate FILE and print the graph")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the built-in graph records (default: $STATE_DIRECTORY, else"
        " ~/.local/state/pipelined/<instance>)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    web.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["blocks"]:
        from . import reference

        return reference.main(argv[1:])
    opts = parse_args(argv)
    logging.basicConfig(
        level=opts.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    if opts.check:
        return check(opts.check)
    try:
        instance = check_instance(opts.instance)
    except ValueError as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return 2
    sd.log_to_journal(instance)  # only when systemd gave us the journal as stderr
    try:
        graph = load_graph(opts.graph) if opts.graph else builtin(opts.state_dir, instance)
    except GraphError as exc:
        print(f"pipelined: the graph cannot run:\n{exc}", file=sys.stderr)
        return EX_CONFIG
    path = socket_path(instance, opts.socket)
    try:
        token = web.token_from_args(opts)
        http = web.listen_from_args(opts, builtin=not opts.graph, token=token)
    except web.HttpError as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return exc.exit_code
    announce(graph, path)
    web.announce(graph, http, token)
    daemon = Daemon(
        graph, instance, path, listen_sock=sd.listen_socket(), http=http, token=token.value
    )
    try:
        asyncio.run(daemon.serve())
    except (ControlSocketError, RunError) as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return 1
    return 0


def check(path: str) -> int:
    try:
        graph = load_graph(path)
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    print(describe(graph))
    return 0


def builtin(state_dir: str | None, instance: str) -> Graph:
    """The demo graph, recording into the state directory rather than wherever we stand."""
    base = Path(state_dir or os.environ.get("STATE_DIRECTORY") or _user_state(instance))
    return default_graph(state_dir=base)


def _user_state(instance: str) -> Path:
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "pipelined" / instance


def announce(graph: Graph, control: Path) -> None:
    """Say where to look: the headless box's only window is the recorder's output."""
    print(f"pipelined: running {graph.source} ({len(graph.blocks)} blocks)", file=sys.stderr)
    for spec in graph.blocks.values():
        if "directory" in spec.params and spec.type == "recorder":
            folder = spec.params["directory"]
            print(
                f"pipelined: {spec.name} records to {folder} (latest frame: {folder}/latest.jpg)",
                file=sys.stderr,
            )
    print(f"pipelined: control socket {control} (pipectl status)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
