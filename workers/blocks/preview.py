"""The preview block: each input as an MJPEG stream and as a JPEG snapshot, over HTTP.

    http://127.0.0.1:8081/                                  every input, on one page
    http://127.0.0.1:8081/stream/camera.mjpg?fps=5&quality=60&width=320
    http://127.0.0.1:8081/snapshot/camera.jpg?quality=90
    http://127.0.0.1:8081/stats                             viewers and encodes, as JSON

An input is named by its block (``camera``) or its position (``0``). ``fps``, ``quality``
and ``width`` default to the block's parameters; a request may ask fewer frames than the
block's ``fps``, never more, and a smaller width, never a larger one.

Why it never slows the graph. The worker's thread (the runtime calling ``process``)
only hands a copy of the newest frame of a *watched* input to the HTTP server, at most
``fps`` times a second; with no viewer it does nothing. The server runs on its own
thread and event loop, and encodes each handed frame once per (input, quality, width),
however many viewers share it. Every viewer is sent the newest JPEG, never a queue: a
slow browser skips frames, and one that takes nothing for ``client_timeout`` seconds is
dropped. The wire never waits for the preview (it never waits for anyone), so at worst
the preview itself drops frames, which its reader counts.

Who may connect: only requests with the token (``Authorization: Bearer …``, ``?token=…``,
or the session cookie that opening ``/?token=…`` leaves; see
``pipelined.workers.http.access``), and bound to loopback, with a loopback ``Host`` too
(so a web page cannot reach it by DNS rebinding). The token is the block's ``token``;
left empty, the daemon gives it its own (the page's, which it prints in the preview's
URL); a preview run by no daemon makes one and logs the URL that carries it. Beyond
loopback the graph must set ``token``. The token is secret-named, so it travels to the
worker on stdin, never on its command line.

A port in use (say, a preview of an older run still closing) is not a crash: the block
says it waits for the port and tries again every few seconds.

The first input arrives as a zero-copy view into the wire; the block copies the frames
it hands to the server and then asks ``context.intact()``, so a frame the writer
overwrote meanwhile is dropped, never shown torn.

Its HTTP server is ``pipelined.workers.http.preview``; the MJPEG helpers it shares with
the daemon's live views are in ``pipelined.workers.http.mjpeg``.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from ..block import Block, ConfigurationError, Param, in_range
from ..http.access import new_token
from ..http.mjpeg import is_loopback, parse_listen, url_host
from ..http.preview import Feed, PreviewServer

BIND_RETRY = 3.0  # seconds between attempts while the port is in use


# -- the block ---------------------------------------------------------------------------


def _listen(value: Any) -> str | None:
    """ADDR:PORT ([::1]:8081 for IPv6)"""
    try:
        parse_listen(value)
    except ValueError as exc:
        return f"must be ADDR:PORT: {exc}"
    return None


class Preview(Block):
    """A sink: serves every input as an MJPEG stream and JPEG snapshots over HTTP.

    http://ADDR:PORT/ shows every input; /stream/NAME.mjpg?fps=&quality=&width= and
    /snapshot/NAME.jpg serve one, by block name or position. A viewer gets the newest
    frame, never a queue, and no viewer costs the graph nothing."""

    min_inputs = 1
    max_inputs = None
    has_output = False
    params = {
        "listen": Param(
            str,
            default="127.0.0.1:8081",
            check=_listen,
            doc="ADDR:PORT to serve on; beyond loopback a token is required",
        ),
        "fps": Param(
            float,
            default=15.0,
            check=in_range(0.1, 60),
            doc="most frames a second a viewer gets; ?fps= may ask fewer",
        ),
        "quality": Param(
            int, default=75, check=in_range(1, 100), doc="JPEG quality unless ?quality= says"
        ),
        "width": Param(
            int,
            default=0,
            check=in_range(0, 16384),
            doc="largest width sent (frames are scaled down); 0 = as they come",
        ),
        "token": Param(
            str,
            default="",
            doc="required of every request; empty: the daemon's own (its page's)",
        ),
        "client_timeout": Param(
            float,
            default=10.0,
            check=in_range(0.5, 600),
            doc="seconds a viewer may take no data before it is dropped",
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        host, _ = parse_listen(params["listen"])
        if not is_loopback(host) and not params["token"]:
            return [
                f"listen = {params['listen']!r} is beyond loopback: set a token, which every"
                " request must then carry (or listen on 127.0.0.1)"
            ]
        return []

    def setup(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="preview-http", daemon=True
        )
        self._thread.start()
        names = _input_names(self.context)
        self._server: PreviewServer = self._call(self._make_server(names or []))
        self._bound = False
        self._retry_at = 0.0
        self._reported = 0  # of the server's frames served, what status has been told
        self._try_bind()

    async def _make_server(self, names: list[str]) -> PreviewServer:
        params = self.config
        if not params["token"]:  # no daemon gave one: make one, and say where it opens
            params = {**params, "token": new_token()}
            host, port = parse_listen(params["listen"])
            query = urllib.parse.quote(params["token"])
            self.context.log.info("open http://%s:%d/?token=%s", url_host(host), port, query)
        return PreviewServer(self.name, params, names)

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _try_bind(self) -> None:
        """Bind the port; a port in use is waited for, any other failure is for good."""
        try:
            self._call(self._server.bind())
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigurationError(
                    f"preview {self.name!r} cannot listen on {self.config['listen']}:"
                    f" {exc.strerror}"
                ) from None
            self._retry_at = time.monotonic() + BIND_RETRY
            self.context.waiting(
                f"listen {self.config['listen']}: the address is in use; trying again every"
                f" {BIND_RETRY:g} s"
            )
            return
        self._bound = True
        host, port = self._server.host, self._server.port
        self.context.log.info("serving on http://%s:%d/", url_host(host), port)
        self.context.waiting(None)

    def process(self, frames: list[np.ndarray]) -> None:
        server = self._server
        if not self._bound:
            if time.monotonic() >= self._retry_at:
                self._try_bind()
            return None
        if len(server.feeds) < len(frames):  # input names unknown: name them by position
            self._call(self._add_feeds(len(frames)))
        due = [(f, frame.copy()) for f, frame in zip(server.feeds, frames, strict=False) if f.due()]
        if due and self.context.intact():  # the copies are whole frames, none torn
            for feed, copy in due:
                feed.hand(copy)
        elif not due:
            self.context.skipped()  # no viewer, or none due a frame now: by design
        served = server.served  # counted on the server's thread: read once
        if served > self._reported:
            self.context.delivered(served - self._reported)
            self._reported = served
        return None

    async def _add_feeds(self, count: int) -> None:
        server = self._server
        server.feeds += [Feed(str(i), self._loop) for i in range(len(server.feeds), count)]

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        server: PreviewServer | None = getattr(self, "_server", None)  # None: setup failed
        if server is not None:
            try:
                self._call(server.close(), timeout=5.0)
            except Exception as exc:  # closing must not hide why the worker stops
                self.context.log.warning("closing the HTTP server: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5.0)
        del self._loop  # closed: a second close() does nothing


def _input_names(context: Any) -> list[str] | None:
    """The blocks this one reads, for URLs by name; None outside a worker (by position)."""
    return [str(n) for n in context.inputs] or None
