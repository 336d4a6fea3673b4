"""The page's JSON: status and graph to draw, and the buttons, through pipectl's own handlers.

The buttons call the very functions the control socket dispatches to
(``commands.table(daemon)``), with the same arguments pipectl sends, so the page can
do nothing pipectl cannot, and answers the way pipectl would.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipelined.ctl.protocol import BAD_REQUEST, FAILED, NO_SUCH_BLOCK, CommandError

from .. import commands

if TYPE_CHECKING:
    from ..app import Daemon

ACTIONS = ("start", "stop", "restart")
HTTP_STATUS = {BAD_REQUEST: 400, NO_SUCH_BLOCK: 404, FAILED: 409}


async def reply(result: Awaitable[Any]) -> web.Response:
    """A command handler's answer as the page's JSON: pipectl's reply, with an HTTP status."""
    try:
        value = await result
    except CommandError as exc:
        error = {"code": exc.code, "message": exc.message}
        return web.json_response(
            {"ok": False, "error": error}, status=HTTP_STATUS.get(exc.code, 500)
        )
    return web.json_response({"ok": True, "result": value})


def add_routes(app: web.Application, daemon: Daemon) -> None:
    table = commands.table(daemon)

    async def call(cmd: str, args: dict[str, Any]) -> web.Response:
        return await reply(table[cmd](args))

    async def status(request: web.Request) -> web.Response:
        return await call("status", {})

    async def graph(request: web.Request) -> web.Response:
        return await call("graph", {})

    async def history(request: web.Request) -> web.Response:
        return await call("history", {})

    async def action(request: web.Request) -> web.Response:
        verb = request.match_info["action"]
        if verb not in ACTIONS:
            raise web.HTTPNotFound(text=f"no action {verb!r}: use {', '.join(ACTIONS)}\n")
        return await call(verb, {"blocks": [request.match_info["block"]]})

    app.router.add_get("/api/status", status)
    app.router.add_get("/api/graph", graph)
    app.router.add_get("/api/history", history)
    app.router.add_post("/api/blocks/{block}/{action}", action)
