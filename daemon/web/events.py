"""The page's events: the list (pipectl's ``events`` command) and each event's snapshot.

/api/events?block=B&since=S&until=U&after=SEQ&limit=N&order=newest
        the ``events`` command's result; ``after`` gives what changed since that seq,
        which is how the page keeps its list live (once a second)
/events/ID/snapshot.jpg
        the event's snapshot JPEG, from the store's folder, by the event's id only

Behind the page's access rules like everything else (security.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipelined.ctl.protocol import BAD_REQUEST, CommandError

from .. import commands
from .api import HTTP_STATUS

if TYPE_CHECKING:
    from ..app import Daemon

EVENT_ID = re.compile(r"[0-9]+\.[0-9]{3}-[a-z0-9]{6}\Z")


def add_routes(app: web.Application, daemon: Daemon) -> None:
    handle = commands.table(daemon)["events"]  # pipectl's own handler

    async def listing(request: web.Request) -> web.Response:
        try:
            result = await handle(_args(request.query))
        except CommandError as exc:
            error = {"code": exc.code, "message": exc.message}
            return web.json_response(
                {"ok": False, "error": error}, status=HTTP_STATUS.get(exc.code, 500)
            )
        return web.json_response({"ok": True, "result": result})

    async def snapshot(request: web.Request) -> web.FileResponse:
        event_id = request.match_info["id"]
        if not EVENT_ID.match(event_id):
            raise web.HTTPNotFound(text=f"{event_id!r} is not an event id\n")
        path = daemon.hub.snapshot_path(event_id)
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text=f"event {event_id} has no snapshot (now)\n")
        return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})

    app.router.add_get("/api/events", listing)
    app.router.add_get("/events/{id}/snapshot.jpg", snapshot)


def _args(query: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if "block" in query:
        args["blocks"] = [query["block"]]
    if "order" in query:
        args["order"] = query["order"]
    try:
        for key in ("since", "until"):
            if key in query:
                args[key] = float(query[key])
        for key in ("after", "limit"):
            if key in query:
                args[key] = int(query[key])
    except ValueError as exc:
        raise CommandError(BAD_REQUEST, f"not a number: {exc}") from None
    return args
