"""The daemon's HTTP server: the page, its JSON, live wire views, events and /metrics.

It runs on the daemon's own event loop (aiohttp), beside the control socket: handlers
only read the supervisor's state or call the control commands, and anything slow
(reading a wire, encoding a JPEG) runs in threads.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from pipelined.workers.http.mjpeg import NO_STORE, add_look, secure_response, start_server

from . import api, events, metrics, recordings
from .listen import Listener
from .live import LiveViews
from .security import Access

if TYPE_CHECKING:
    from ..app import Daemon

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("pipelined")


class WebServer:
    """The page of one daemon, on the socket ``listener`` holds."""

    def __init__(self, daemon: Daemon, listener: Listener):
        self.listener = listener
        self.access = Access(listener.host, listener.port, listener.token)
        self.live = LiveViews(daemon.supervisor)
        self.app = web.Application(middlewares=[self.access.middleware])
        self.app.on_response_prepare.append(secure_response)
        self.app.router.add_get("/", self.index)
        self.app.router.add_static("/static/", STATIC, append_version=False)
        add_look(self.app)
        api.add_routes(self.app, daemon)
        recordings.add_routes(self.app, daemon)
        events.add_routes(self.app, daemon)
        self.live.add_routes(self.app)
        collector = metrics.DaemonCollector(daemon, _version(), self.live.slots.in_use)
        metrics.add_route(self.app, collector)
        self.runner: web.AppRunner | None = None

    async def start(self, max_connections: int) -> None:
        """Serve, with at most ``max_connections`` open (limits.http_connections)."""
        self.runner = await start_server(
            self.app, sock=self.listener.sock, max_connections=max_connections
        )
        log.info("page at %s (at most %d connections)", self.listener.url, max_connections)

    async def close(self) -> None:
        await self.live.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.listener.sock.close()

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)


def _version() -> str:
    try:
        return importlib.metadata.version("pipelined")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
