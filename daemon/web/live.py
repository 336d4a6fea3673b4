"""A live view of any wire: a spare reader slot, frames encoded off the event loop, MJPEG.

Every wire has ``SPARE_READERS`` reader slots beyond its graph readers, for viewers like
this one. A viewer holds one slot for as long as it is connected and gives it back when
it goes; with none free it gets 503. Reading (which waits on the slot's doorbell) and
JPEG encoding run in this module's own threads, never on the daemon's event loop and
never in asyncio's default pool, which the daemon needs for other work. The frame is
encoded straight from the wire (zero-copy) and thrown away if the writer overwrote it
meanwhile; then a copy is encoded instead. A viewer that has taken nothing for
``CLIENT_TIMEOUT`` seconds is dropped; a wire replaced by a reload ends its streams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from pipelined.workers.http.mjpeg import (
    NO_STORE,
    Streams,
    View,
    encode_jpeg,
    mjpeg_response,
    send_mjpeg,
)
from pipelined.workers.ipc.wire import Wire, WireError, WireReader

from ..supervisor import SPARE_READERS

if TYPE_CHECKING:
    from ..supervisor import Supervisor

log = logging.getLogger("pipelined")
LIMITS = View(fps=30.0, quality=70, width=0)
"""Defaults and limits of a request's ``fps``, ``quality`` and ``width`` (0: the frame's)."""
CLIENT_TIMEOUT = 10.0
FRAME_WAIT = 0.25
"""Seconds a read waits for a frame: how long a viewer's thread may outlive its viewer."""
SNAPSHOT_TRIES = 20


class NoFreeSlot(Exception):
    """Every spare reader slot of the wire is held by a viewer."""


class SpareSlots:
    """Which spare reader slots of which wire the live viewers hold."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self._held: dict[int, tuple[Wire, set[int]]] = {}

    def take(self, name: str) -> tuple[Wire, int]:
        wire = self.supervisor.wires.get(name)
        if wire is None:
            known = ", ".join(self.supervisor.wires)
            raise KeyError(f"no wire {name!r}; the wires are: {known}")
        held = self._held.setdefault(id(wire), (wire, set()))[1]
        total = wire.layout.readers
        for index in range(total - SPARE_READERS, total):
            if index not in held:
                held.add(index)
                return wire, index
        raise NoFreeSlot(
            f"wire {name!r} has {SPARE_READERS} reader slots for viewers and both are in use:"
            " close a live view, or use a preview block"
        )

    def give_back(self, wire: Wire, index: int) -> None:
        _, held = self._held[id(wire)]
        held.discard(index)
        if not held:
            del self._held[id(wire)]

    def in_use(self) -> int:
        return sum(len(held) for _, held in self._held.values())


def grab(reader: WireReader, view: View, wait: float = FRAME_WAIT) -> tuple[bytes, int] | None:
    """The wire's newest frame as JPEG, with its sequence number; None if none came."""
    frame = reader.read(timeout=wait)
    if frame is None:
        return None
    jpeg = encode_jpeg(frame.array, view.quality, view.width)
    if frame.intact():
        return jpeg, frame.seq
    frame = reader.read_copy(timeout=wait)  # the writer lapped us: encode a copy
    if frame is None:
        return None
    return encode_jpeg(frame.array, view.quality, view.width), frame.seq


class LiveViews:
    """The ``/live/…`` routes of one daemon."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.slots = SpareSlots(supervisor)
        self.streams = Streams()
        self.pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="live")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/live/{wire}.mjpg", self.stream)
        app.router.add_get("/live/{wire}.jpg", self.snapshot)

    async def close(self) -> None:
        await self.streams.end_all()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _open(self, name: str) -> tuple[Wire, int, WireReader]:
        try:
            wire, index = self.slots.take(name)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"{exc.args[0]}\n") from None
        except NoFreeSlot as exc:
            raise web.HTTPServiceUnavailable(
                text=f"{exc}\n", headers={"Retry-After": "5"}
            ) from None
        loop = asyncio.get_running_loop()
        try:
            reader = await loop.run_in_executor(
                self.pool, WireReader, self.supervisor.names, name, index
            )
        except (WireError, OSError) as exc:
            self.slots.give_back(wire, index)
            raise web.HTTPServiceUnavailable(text=f"cannot read wire {name!r}: {exc}\n") from None
        return wire, index, reader

    async def stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["wire"]
        view = View.from_query(request.query, LIMITS)
        wire, index, reader = await self._open(name)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future | None = None

        async def next_jpeg(seq: int) -> tuple[bytes, int] | None:
            nonlocal pending
            if self.supervisor.wires.get(name) is not wire:
                raise ConnectionAbortedError(f"wire {name!r} was replaced by a reload")
            pending = loop.run_in_executor(self.pool, grab, reader, view)
            return await pending

        response = mjpeg_response()
        try:
            with self.streams.opened():
                await response.prepare(request)
                await send_mjpeg(request, response, next_jpeg, view.fps, CLIENT_TIMEOUT)
        except ConnectionError:
            pass
        except ValueError as exc:  # a frame that is not a picture
            log.warning("live view of %s: %s", name, exc)
        finally:
            await self._close(wire, index, reader, pending)
        return response

    async def snapshot(self, request: web.Request) -> web.Response:
        name = request.match_info["wire"]
        view = View.from_query(request.query, LIMITS)
        wire, index, reader = await self._open(name)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future | None = None
        try:
            for _ in range(SNAPSHOT_TRIES):
                pending = loop.run_in_executor(self.pool, grab, reader, view)
                got = await pending
                if got is not None:
                    return web.Response(body=got[0], content_type="image/jpeg", headers=NO_STORE)
        except ValueError as exc:
            raise web.HTTPUnsupportedMediaType(text=f"wire {name!r}: {exc}\n") from None
        finally:
            await self._close(wire, index, reader, pending)
        raise web.HTTPServiceUnavailable(
            text=f"no frame on wire {name!r} within {SNAPSHOT_TRIES * FRAME_WAIT:g} s\n"
        )

    async def _close(
        self, wire: Wire, index: int, reader: WireReader, pending: asyncio.Future | None
    ) -> None:
        """Give the slot back once no thread reads with it any more."""
        if pending is not None and not pending.done():
            await asyncio.wait([pending])
        reader.close()
        self.slots.give_back(wire, index)
