"""The control commands, one module each; ``table()`` binds them to a running daemon."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import graph, recordings, reload, restart, start, status, stop, wires

if TYPE_CHECKING:
    from ..app import Daemon

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
MODULES = {"status": status, "start": start, "stop": stop, "restart": restart}
MODULES |= {"reload": reload, "graph": graph, "wires": wires, "recordings": recordings}


def table(daemon: Daemon) -> dict[str, Handler]:
    return {name: functools.partial(module.handle, daemon) for name, module in MODULES.items()}
