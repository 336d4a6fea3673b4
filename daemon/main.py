"""``pipelined``: run a graph in the foreground (systemd runs it so), or check a graph file.

    pipelined [--graph FILE] [--instance NAME] [--socket PATH] [--http ADDR:PORT]
    pipelined --check FILE
    pipelined blocks [TYPE]        the block types and their parameters

With no --graph it runs the built-in demo on the synthetic testsrc camera
(daemon/demo.toml). A graph that fails to load exits with status 78 (EX_CONFIG), which
the systemd unit does not restart: a typo in a graph file is not fixed by trying again.
A daemon that already answers on the control socket is found before anything is made:
the second daemon exits 1 and touches nothing of the first's.

What a graph writes (a recorder's relative ``directory``) goes under the state directory:
``--state-dir``, else ``$STATE_DIRECTORY`` (systemd's), else
``~/.local/state/pipelined/<instance>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pipelined.ctl.client import Client, DaemonUnreachable
from pipelined.ctl.protocol import CommandError, ProtocolError, socket_path
from pipelined.workers.contract import EX_CONFIG
from pipelined.workers.ipc.names import DEFAULT_INSTANCE, check_instance

from . import banner, web
from . import systemd as sd
from .app import Daemon
from .control import ControlSocketError
from .graph import GraphError, default_graph, describe, load_graph
from .supervisor import RunError

log = logging.getLogger("pipelined")


def build_parser() -> argparse.ArgumentParser:
    """The daemon's options (its man page, pipelined(8), is made from them too)."""
    parser = argparse.ArgumentParser(
        prog="pipelined", description="Run a camera-processing graph on this box."
    )
    parser.add_argument("--graph", metavar="FILE", help="graph file (default: the built-in demo)")
    parser.add_argument(
        "--instance", default=DEFAULT_INSTANCE, metavar="NAME", help="instance name (default: main)"
    )
    parser.add_argument("--socket", metavar="PATH", help="control socket path")
    parser.add_argument("--check", metavar="FILE", help="only validate FILE and print the graph")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the event store and its snapshots, and where a recorder's relative directory"
        " goes (default: $STATE_DIRECTORY, else ~/.local/state/pipelined/<instance>)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        metavar="LEVEL",
        help="DEBUG, INFO (the default) or WARNING",
    )
    web.add_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["blocks"]:
        from . import reference

        return reference.main(argv[1:])
    opts = parse_args(argv)
    logging.basicConfig(
        level=opts.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        instance = check_instance(opts.instance)
    except ValueError as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return 2
    state = state_dir(opts.state_dir, instance)
    if opts.check:
        return check(opts.check, state)
    sd.log_to_journal(instance)  # only when systemd gave us the journal as stderr
    listen_sock = sd.listen_socket()
    path = socket_path(instance, opts.socket)
    if listen_sock is None and (other := answering(path, opts.socket, instance)) is not None:
        print(f"pipelined: {other}", file=sys.stderr)
        return 1
    try:
        graph = load_graph(opts.graph, state) if opts.graph else default_graph(state)
    except GraphError as exc:
        print(f"pipelined: the graph cannot run:\n{exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        token = web.token_from_args(opts)
        http = web.listen_from_args(opts, builtin=not opts.graph, token=token)
    except web.HttpError as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return exc.exit_code
    banner.graph_lines(graph, path if listen_sock is None else None)
    daemon = Daemon(
        graph, instance, path, listen_sock=listen_sock, http=http, token=token, state_dir=state
    )
    try:
        asyncio.run(daemon.serve())
    except (ControlSocketError, RunError) as exc:
        print(f"pipelined: {exc}", file=sys.stderr)
        return 1
    return 0


def check(path: str, state: Path) -> int:
    try:
        graph = load_graph(path, state)
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    print(describe(graph))
    return 0


def state_dir(given: str | None, instance: str) -> Path:
    """Where a graph's relative output paths and the event store go: ``--state-dir``,
    systemd's ``$STATE_DIRECTORY``, else the user's state folder for this instance."""
    if given:
        return Path(given).absolute()
    if os.environ.get("STATE_DIRECTORY"):  # systemd may list several, ':'-separated
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "pipelined" / instance


def answering(path: Path, explicit: str | None, instance: str) -> str | None:
    """What to say if a daemon already answers at ``path``: asked before anything is
    made, so a second start neither prints addresses nor touches the first's objects."""
    try:
        with Client(path, timeout=2.0) as client:
            hello = client.call("hello")
    except DaemonUnreachable:
        return None
    except (CommandError, ProtocolError):
        hello = {}  # something answers there, if not as we expect
    theirs = hello.get("instance", "?") if isinstance(hello, dict) else "?"
    which = f"--socket {path}" if explicit else f"--instance {instance}"
    which = "" if not explicit and instance == DEFAULT_INSTANCE else f" {which}"
    return (
        f"a daemon already answers at {path} (instance {theirs}): see it with"
        f" `{banner.pipectl()}{which} status`, stop it where it runs (Ctrl-C) or with"
        " systemctl; to run another beside it, give this one another --instance (and its"
        " graph other ports)"
    )


if __name__ == "__main__":
    sys.exit(main())
