"""The page's recordings: the list (pipectl's ``recordings`` command) and the files to play.

/api/recordings?block=B&since=S&until=U&order=newest&limit=N&after=B/F
        the ``recordings`` command's result (times as Unix seconds)
/recordings/B/FILE
        one segment of recorder B, with HTTP Range requests (a browser seeks in a video
        by asking for parts of it)

Behind the page's access rules like everything else (security.py). Only a file that a
recorder of the running graph wrote, by its own name pattern, in its own folder, is
served: the name cannot lead anywhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipelined.ctl.protocol import BAD_REQUEST, CommandError
from pipelined.workers.video.segments import Namer

from .. import commands
from ..commands import recordings as command
from .api import reply

if TYPE_CHECKING:
    from ..app import Daemon

TYPES = {".mp4": "video/mp4", ".avi": "video/x-msvideo"}


def add_routes(app: web.Application, daemon: Daemon) -> None:
    handle = commands.table(daemon)["recordings"]  # pipectl's own handler

    async def listing(request: web.Request) -> web.Response:
        return await reply(handle(_args(request.query)))

    async def segment(request: web.Request) -> web.FileResponse:
        block, name = request.match_info["block"], request.match_info["file"]
        proc = daemon.supervisor.blocks.get(block)
        if proc is None or not command.recorders([proc.spec], named=False):
            raise web.HTTPNotFound(text=f"no recorder named {block!r} in this graph\n")
        if Namer(block).start_ns(name) is None:
            raise web.HTTPNotFound(text=f"{name!r} is not a recording of {block!r}\n")
        path = command.directory(proc.spec) / name
        if not path.is_file():
            raise web.HTTPNotFound(text=f"{name} is gone (deleted to make room, or moved)\n")
        content_type = TYPES.get(path.suffix, "application/octet-stream")
        return web.FileResponse(path, headers={"Content-Type": content_type})

    app.router.add_get("/api/recordings", listing)
    app.router.add_get("/recordings/{block}/{file}", segment)


def _args(query: Any) -> dict[str, Any]:
    """The query string as the command's arguments; numbers that are not, a bad request."""
    args: dict[str, Any] = {}
    if "block" in query:
        args["blocks"] = [query["block"]]
    for key in ("order", "after"):
        if key in query:
            args[key] = query[key]
    try:
        for key in ("since", "until"):
            if key in query:
                args[key] = float(query[key])
        if "limit" in query:
            args["limit"] = int(query["limit"])
    except ValueError as exc:
        raise CommandError(BAD_REQUEST, f"not a number: {exc}") from None
    return args
