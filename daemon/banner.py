"""What the daemon tells a person at its terminal: what runs, and where to look.

Each address is printed only once something listens there: the page's once its server
runs, a preview block's once the block is RUNNING and says no reason (it has bound its
port). An address carries the token when the daemon made it (the page's, which a preview
with no token of its own shares), as Jupyter's does: nobody else knows it. A preview
that waits for its port (another daemon's preview holds it) says so, and its address
follows if it gets the port. A block that does not start with the graph (``autostart =
false``) is named with the command that starts it.

Lines go to stderr, where the log goes too: under systemd the journal has them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .states import State
from .web.listen import TOKEN_ENV

if TYPE_CHECKING:
    from .graph import Graph
    from .supervisor import Supervisor
    from .web.listen import Token

LOOK_EVERY = 0.25


def say(line: str) -> None:
    print(f"pipelined: {line}", file=sys.stderr, flush=True)


def pipectl() -> str:
    """How to run pipectl from here: ``pipectl`` if it is on $PATH, else its path beside
    this Python (``.venv/bin/pipectl`` after the README's demo command)."""
    beside = Path(sys.executable).parent / "pipectl"
    found = shutil.which("pipectl")
    if found is not None and Path(found).resolve() == beside.resolve():
        return "pipectl"
    if not beside.exists():
        return "pipectl"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)


def graph_lines(graph: Graph, control: Path | None) -> None:
    """What runs, where it records, and the blocks that wait to be asked."""
    say(f"running {graph.source} ({len(graph.blocks)} blocks)")
    ctl = pipectl()
    for spec in graph.blocks.values():
        if spec.type == "recorder":
            folder = spec.params["directory"]
            say(f"{spec.name} records to {folder} (latest frame: {folder}/latest.jpg)")
        if not spec.supervision.autostart:
            say(
                f"{spec.name} ({spec.type}) is not started until asked (autostart = false):"
                f" {ctl} start {spec.name}"
            )
    if control is not None:
        say(f"control socket {control} ({ctl} status)")


def page(url: str, token: Token | None) -> None:
    """The page's address once its server runs. A token the daemon made is in it (nobody
    else knows it; a first visit trades it for a session cookie); a given one is not."""
    if token is None or token.made:
        shown, how = (url if token is None else token.in_url(url)), ""
    else:
        shown, how = url, f" (its token: {token.source or f'${TOKEN_ENV} or --http-token-file'})"
    say(f"page {shown}{how}, metrics {url}metrics")


async def previews(supervisor: Supervisor, token: Token | None = None) -> None:
    """Say each preview's address once it serves, or why it does not yet; until cancelled.

    A preview that sets no token of its own takes the daemon's: its address carries that
    as the page's does (when the daemon made it)."""
    from pipelined.workers.http.mjpeg import parse_listen, url_host

    said: dict[str, str | None] = {}  # block -> what was said last (None: its address)
    while True:
        for watcher in list(supervisor.blocks.values()):
            if watcher.spec.type != "preview" or watcher.state != State.RUNNING:
                continue
            name, reason = watcher.name, watcher.reason
            if name in said and said[name] == reason:
                continue
            if reason is None:
                host, port = parse_listen(watcher.spec.params["listen"])
                url = f"http://{url_host(host)}:{port}/"
                if token is not None and not watcher.spec.params["token"]:
                    url = token.in_url(url)  # the daemon's token, which it made
                say(f"{name} streams at {url}")
            else:
                say(f"{name} does not serve yet: {reason}")
            said[name] = reason
        await asyncio.sleep(LOOK_EVERY)
