"""The preview block's HTTP side: feeds, one encoding per (input, quality, width), routes.

It runs on its own thread's event loop (the block starts it), never on the worker's
thread: the block only hands frames to a ``Feed``, and only while someone watches. Each
``Encoding`` turns a feed's frames into JPEGs once for all of its viewers, and every
viewer is sent the newest JPEG, never a queue. What the routes are is in the block's
docstring (``pipelined.workers.blocks.preview``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import math
import time
from typing import Any

import numpy as np
from aiohttp import web

from .access import TokenGate
from .mjpeg import (
    FRAME_WAIT,
    NO_STORE,
    Pacer,
    Streams,
    View,
    add_look,
    encode_jpeg,
    mjpeg_response,
    parse_listen,
    secure_response,
    send_mjpeg,
    start_server,
)

MAX_VIEWERS = 64
MAX_CONNECTIONS = 128
"""Open connections at once (viewers, snapshots, a page): more get 503 and are closed."""
MAX_ENCODINGS = 8
SNAPSHOT_TIMEOUT = 5.0


class _Changes:
    """A value's version number and a way to wait for a newer one (one event loop)."""

    def __init__(self) -> None:
        self.seq = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.seq += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def newer_than(self, seq: int, timeout: float) -> bool:
        if self.seq > seq:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        return self.seq > seq


class Feed:
    """One input: the newest frame the worker's thread handed over, while anyone watches."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.frame: np.ndarray | None = None
        self.changes = _Changes()
        self.handed = 0
        self._loop = loop
        self._rates: list[float] = []
        self._pacer = Pacer(math.inf)

    # the worker's thread

    def due(self) -> bool:
        """True if someone watches and a frame is due now; never blocks."""
        pacer = self._pacer
        if pacer.period == math.inf:
            return False
        now = time.monotonic()
        if pacer.wait_time(now) > 0:
            return False
        pacer.advance(now)
        return True

    def hand(self, frame: np.ndarray) -> None:
        """Give the server thread a frame of the block's own (a copy)."""
        self._loop.call_soon_threadsafe(self._put, frame)

    # the server's loop

    def _put(self, frame: np.ndarray) -> None:
        self.frame = frame
        self.handed += 1
        self.changes.bump()

    def watch(self, fps: float) -> None:
        self._rates.append(fps)
        self._repace()

    def unwatch(self, fps: float) -> None:
        self._rates.remove(fps)
        self._repace()

    def _repace(self) -> None:
        period = 1.0 / max(self._rates) if self._rates else math.inf
        if period != self._pacer.period:
            self._pacer = Pacer(period)  # one object: the worker's thread sees old or new
        if not self._rates:
            self.frame = None


class Encoding:
    """One (input, quality, width): each handed frame encoded once, for all its viewers."""

    def __init__(self, feed: Feed, quality: int, width: int, pool: concurrent.futures.Executor):
        self.feed = feed
        self.quality = quality
        self.width = width
        self.jpeg: bytes | None = None
        self.changes = _Changes()
        self.viewers = 0
        self.errors = 0
        self._pool = pool
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        seen = 0
        while True:
            if not await self.feed.changes.newer_than(seen, FRAME_WAIT):
                continue
            seen = self.feed.changes.seq
            frame = self.feed.frame
            if frame is None:
                continue
            try:
                jpeg = await loop.run_in_executor(
                    self._pool, encode_jpeg, frame, self.quality, self.width
                )
            except ValueError as exc:
                self.errors += 1
                if self.errors == 1:
                    logging.getLogger("pipelined.preview").warning(
                        "input %s cannot be shown: %s", self.feed.name, exc
                    )
                continue
            self.jpeg = jpeg
            self.changes.bump()

    async def next_after(self, seq: int, timeout: float = FRAME_WAIT) -> tuple[bytes, int] | None:
        if await self.changes.newer_than(seq, timeout) and self.jpeg is not None:
            return self.jpeg, self.changes.seq
        return None

    def stop(self) -> None:
        self._task.cancel()

    def stats(self) -> dict[str, Any]:
        return {
            "input": self.feed.name,
            "quality": self.quality,
            "width": self.width,
            "viewers": self.viewers,
            "encoded": self.changes.seq,
        }


class PreviewServer:
    """The HTTP side of the block: routes, and who watches what. Runs on one event loop."""

    def __init__(self, block: str, params: dict[str, Any], names: list[str]):
        self.block = block
        self.host, self.port = parse_listen(params["listen"])
        self.token: str = params["token"]
        self.gate = TokenGate(self.host, self.port, self.token, realm="pipelined preview")
        self.default = View(float(params["fps"]), int(params["quality"]), int(params["width"]))
        self.client_timeout = float(params["client_timeout"])
        self.loop = asyncio.get_running_loop()
        self.feeds = [Feed(name, self.loop) for name in names]
        self.encodings: dict[tuple[int, int, int], Encoding] = {}
        self.streams = Streams()
        self.served = 0  # JPEGs sent to viewers (each viewer counts), snapshots too
        self.pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="jpeg")
        self.app = web.Application(middlewares=[self._guard])
        self.app.on_response_prepare.append(secure_response)
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/stream/{input}.mjpg", self.stream)
        self.app.router.add_get("/snapshot/{input}.jpg", self.snapshot)
        self.app.router.add_get("/stats", self.stats)
        add_look(self.app)
        self.runner: web.AppRunner | None = None

    async def bind(self) -> None:
        self.runner = await start_server(
            self.app, host=self.host, port=self.port, max_connections=MAX_CONNECTIONS
        )

    async def close(self) -> None:
        await self.streams.end_all()
        for encoding in self.encodings.values():
            encoding.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        self.pool.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A token always (workers/http/access.py): a first visit's becomes a cookie."""
        refusal = self.gate.refusal(request)
        if refusal is not None:
            return refusal
        return await handler(request)

    def _feed(self, request: web.Request) -> tuple[int, Feed]:
        name = request.match_info["input"]
        for i, feed in enumerate(self.feeds):
            if name in (feed.name, str(i)):
                return i, feed
        known = ", ".join(f.name for f in self.feeds)
        raise web.HTTPNotFound(text=f"no input {name!r}; this preview shows: {known}\n")

    def _subscribe(self, index: int, view: View) -> Encoding:
        key = (index, view.quality, view.width)
        encoding = self.encodings.get(key)
        if encoding is None:
            if len(self.encodings) >= MAX_ENCODINGS:
                raise web.HTTPServiceUnavailable(
                    text=f"{MAX_ENCODINGS} different quality/width pairs are being encoded"
                    " already: ask for one of those\n"
                )
            encoding = self.encodings[key] = Encoding(
                self.feeds[index], view.quality, view.width, self.pool
            )
        encoding.viewers += 1
        encoding.feed.watch(view.fps)
        return encoding

    def _unsubscribe(self, index: int, view: View, encoding: Encoding) -> None:
        encoding.viewers -= 1
        encoding.feed.unwatch(view.fps)
        if encoding.viewers == 0:
            encoding.stop()
            del self.encodings[(index, view.quality, view.width)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        index, _ = self._feed(request)
        view = View.from_query(request.query, self.default)
        if len(self.streams) >= MAX_VIEWERS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_VIEWERS} viewers already\n")
        encoding = self._subscribe(index, view)
        response = mjpeg_response()

        async def next_jpeg(seq: int) -> tuple[bytes, int] | None:
            got = await encoding.next_after(seq)
            self.served += got is not None
            return got

        try:
            with self.streams.opened():
                await response.prepare(request)
                await send_mjpeg(request, response, next_jpeg, view.fps, self.client_timeout)
        except ConnectionError:
            pass
        finally:
            self._unsubscribe(index, view, encoding)
        return response

    async def snapshot(self, request: web.Request) -> web.Response:
        index, feed = self._feed(request)
        view = View.from_query(request.query, self.default)
        view = View(self.default.fps, view.quality, view.width)  # the newest frame, soon
        encoding = self._subscribe(index, view)
        try:
            got = await encoding.next_after(0, SNAPSHOT_TIMEOUT)
        finally:
            self._unsubscribe(index, view, encoding)
        if got is None:
            raise web.HTTPServiceUnavailable(
                text=f"no frame from {feed.name!r} within {SNAPSHOT_TIMEOUT:g} s\n"
            )
        self.served += 1
        return web.Response(body=got[0], content_type="image/jpeg", headers=NO_STORE)

    async def stats(self, request: web.Request) -> web.Response:
        body = {
            "block": self.block,
            "viewers": len(self.streams),
            "served": self.served,
            "inputs": [{"name": f.name, "handed": f.handed} for f in self.feeds],
            "encodings": [e.stats() for e in self.encodings.values()],
        }
        return web.json_response(body, headers=NO_STORE)

    async def index(self, request: web.Request) -> web.Response:
        """Every input live, in the daemon page's look, all in view at 1280x900. Its
        links carry no token: the session cookie opens them."""
        block = html.escape(self.block)
        items = "".join(
            f'<figure><img alt="{html.escape(f.name)}, live"'
            f' src="stream/{html.escape(f.name)}.mjpg">'
            f'<figcaption><span class="name">{html.escape(f.name)}</span>'
            f'<a href="snapshot/{html.escape(f.name)}.jpg">snapshot</a>'
            f'<span class="dim">stream/{html.escape(f.name)}.mjpg</span></figcaption></figure>'
            for f in self.feeds
        )
        count = len(self.feeds)
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{block} · pipelined</title>"
            '<link rel="stylesheet" href="look.css"></head><body>'
            f'<header><h1>{block}</h1><span id="summary">{count} live'
            f" stream{'s' if count != 1 else ''}, at most {self.default.fps:g} fps each"
            f'</span><a class="aside" href="stats">stats</a></header>'
            f'<main class="streams">{items}</main></body></html>'
        )
        return web.Response(text=page, content_type="text/html", headers=NO_STORE)
