"""The control commands, one module each; ``table()`` binds them to a running daemon.

Each command gets what it acts on, already checked. The block commands (status, history,
start, stop, restart) get the supervisor and the blocks the request names, resolved here, once:
a request that names no block means ``supervisor.every()`` (restart refuses it), so no
layer below ever sees an empty list that stands for "all". ``graph`` and ``wires`` get
the supervisor; ``reload`` gets the daemon, which re-reads its graph file;
``recordings`` gets the blocks (every block when none is named) and its other arguments;
``events`` gets the daemon's event hub (its blocks need not be in the running graph: the
store remembers blocks a reload took away). The control
socket (control.py) and the web page's buttons (web/api.py) call these same handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import events, graph, history, recordings, reload, restart, start, status, stop, wires
from .blocks import WhenNone, every, resolve

if TYPE_CHECKING:
    from ..app import Daemon
    from ..supervisor import Supervisor
    from ..watcher import Watcher

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
BlockCommand = Callable[["Supervisor", list["Watcher"]], Awaitable[Any]]


def table(daemon: Daemon) -> dict[str, Handler]:
    """The handler of each command, by name, for ``daemon``."""

    def on_blocks(command: BlockCommand, when_none: WhenNone = every) -> Handler:
        async def handler(args: dict[str, Any]) -> Any:
            supervisor = daemon.supervisor
            return await command(supervisor, resolve(supervisor, args, when_none))

        return handler

    return {
        "status": on_blocks(status.handle),
        "history": on_blocks(history.handle),
        "start": on_blocks(start.handle),
        "stop": on_blocks(stop.handle),
        "restart": on_blocks(restart.handle, restart.none_named),
        "reload": lambda args: reload.handle(daemon),
        "graph": lambda args: graph.handle(daemon.supervisor),
        "wires": lambda args: wires.handle(daemon.supervisor),
        "recordings": lambda args: recordings.handle(
            daemon.supervisor, resolve(daemon.supervisor, args, every), args
        ),
        "events": lambda args: events.handle(daemon.hub, args),
    }
