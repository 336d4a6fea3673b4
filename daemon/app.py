"""The daemon process: one event loop with the supervisor, the control socket and signals.

SIGTERM and SIGINT stop the graph and unlink everything; SIGHUP reloads the graph file.
Workers are launched from this, the main, thread: the kernel's parent-death signal
that wakes them when the daemon dies is tied to the thread that started them.

The control socket is set up first: a daemon that already answers there stops this one
before it has made anything in /dev/shm (main.py asks it before even that).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelined.ctl.protocol import FAILED, CommandError

from . import banner, commands, limits
from . import systemd as sd
from .control import ControlServer
from .events.hub import EventHub
from .events.outlets import Outlets
from .graph import Graph, GraphError, load_graph
from .supervisor import ReloadError, Supervisor

if TYPE_CHECKING:
    from .web import Listener, Token
    from .web.server import WebServer

log = logging.getLogger("pipelined")


class Daemon:
    """What one ``pipelined`` process runs until it is told to stop."""

    def __init__(
        self,
        graph: Graph,
        instance: str,
        socket_path: Path | None,
        listen_sock: socket.socket | None = None,
        group: int | None = None,
        http: Listener | None = None,
        token: Token | None = None,
        state_dir: Path | None = None,
    ):
        self.hub = EventHub(graph, state_dir)
        # The token opens the page, and the previews that set none of their own.
        preview_token = token.value if token is not None else None
        self.supervisor = Supervisor(
            graph, instance, group, preview_token=preview_token, hub=self.hub
        )
        self.token = token
        self.socket_path = socket_path
        self.listen_sock = listen_sock
        self.group = group
        self.http = http  # the page's bound socket (--http); None: no page
        self.web: WebServer | None = None
        self.control: ControlServer | None = None
        self.notifier = sd.Notifier()
        self.outlets = Outlets(self)  # MQTT and webhooks, as the graph asks
        self._stop = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._sighup()))
        limits.raise_open_files()
        notifying: asyncio.Task[None] | None = None
        announcing: asyncio.Task[None] | None = None
        try:
            await self.hub.open_store()
            self.control = ControlServer(
                commands.table(self), instance=self.supervisor.names.instance, group=self.group
            )
            if self.listen_sock is not None:
                await self.control.start(sock=self.listen_sock)
            elif self.socket_path is not None:
                await self.control.start(self.socket_path)
            self.supervisor.open()  # no await since the socket: no command comes before it
            if self.http is not None:
                from .web.server import WebServer  # aiohttp and OpenCV: only with a page

                self.web = WebServer(self, self.http)
                await self.web.start(
                    limits.http_connections(len(self.supervisor.blocks), self.control.max_clients)
                )
                banner.page(self.http.url, self.token)
                self.hub.page_url = self.http.url.rstrip("/")
            self.outlets.start(self.supervisor.graph)
            await self.supervisor.run()
            log.info("started %d blocks", len(self.supervisor.blocks))
            notifying = asyncio.create_task(self.notifier.run(self.supervisor))
            announcing = asyncio.create_task(banner.previews(self.supervisor, self.token))
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
        finally:
            if self.web is not None:
                await self.web.close()
            for task in (notifying, announcing):
                if task is not None:
                    task.cancel()
            if self.control is not None:
                await self.control.close()
            await self.supervisor.close()
            await self.hub.close()

    async def reload(self) -> dict[str, Any]:
        """Re-read the graph file; a file that fails to load leaves the running graph alone."""
        path = self.supervisor.graph.path
        if path is None:
            raise CommandError(
                FAILED, "this daemon runs the built-in graph: there is no file to reload"
            )
        self.notifier.reloading()
        try:
            try:
                graph = await asyncio.to_thread(load_graph, path, self.supervisor.graph.state_dir)
                result = await self.supervisor.reload(graph)
                await self.outlets.reload(graph)
                return result
            except (GraphError, ReloadError) as exc:
                raise CommandError(
                    FAILED, f"the graph was not reloaded; the running graph carries on:\n{exc}"
                ) from None
        finally:
            self.notifier.reloaded(sd.status_line(self.supervisor))

    async def _sighup(self) -> None:
        """A reload asked for by SIGHUP: nobody waits for an answer, so the log has it."""
        try:
            await self.reload()
        except CommandError as exc:
            log.error("%s", exc.message)
        except Exception:
            log.exception("the reload asked for by SIGHUP failed (a bug in the daemon)")

    def stop(self) -> None:
        self._stop.set()
