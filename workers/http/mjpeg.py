"""MJPEG over HTTP, for the preview block and the daemon's live wire views.

Listen addresses, who may connect (loopback Host names, tokens), JPEG encoding, the
multipart stream with its pacing, and the aiohttp server set-up. It lives in workers/
because both sides need it: the daemon may import from workers, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..picture import as_bgr

BOUNDARY = "frame"
MJPEG_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
LOOK = Path(__file__).with_name("look.css")
"""The stylesheet the daemon's page and the preview's page share: one look."""


def add_look(app: web.Application) -> None:
    """Serve ``LOOK`` at ``/look.css``, which both pages link."""

    async def look(request: web.Request) -> web.FileResponse:
        return web.FileResponse(LOOK, headers={"Content-Type": "text/css; charset=utf-8"})

    app.router.add_get("/look.css", look)


HEAD_TIMEOUT = 10.0
"""Seconds a connection may take to send a request, and stay idle between requests."""
SHUTDOWN_TIMEOUT = 1.0
"""Seconds open streams get to end when a server closes, before they are cancelled."""
FRAME_WAIT = 1.0  # seconds a stream waits for a frame before it checks its client is there


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[::1]:8081`` for IPv6) as (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not ADDR:PORT (say 127.0.0.1:8081)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:8081")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for an address only this box can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def local_host_header(request: web.BaseRequest) -> bool:
    """Does the request name this box by a loopback name? (DNS rebinding sends another.)

    The header itself: aiohttp's ``request.host`` would ask DNS for our own name (blocking
    the event loop) when a request has no Host.
    """
    host = request.headers.get("Host", "")
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return is_loopback(name)


def given_token(request: web.BaseRequest) -> str | None:
    """The token a request carries: ``Authorization: Bearer …`` or ``?token=…``."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def same_secret(given: str | None, secret: str) -> bool:
    """Compare in constant time (a timing attack must not guess the token byte by byte)."""
    if not given or not secret:
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


def security_headers(response: web.StreamResponse) -> None:
    """What every response says: no sniffing, no framing, no referrer, only our own files."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )


async def secure_response(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: the headers above on every response, errors too."""
    security_headers(response)


def encode_jpeg(frame: np.ndarray, quality: int, width: int = 0) -> bytes:
    """``frame`` (any wire frame: grey, BGR, BGRA; any dtype) as JPEG, scaled down to ``width``."""
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        frame = frame[:, :, :3] if frame.shape[2] > 3 else frame[:, :, 0]
    if frame.ndim not in (2, 3):
        raise ValueError(f"a {frame.ndim}-dimensional frame is not a picture")
    picture = as_bgr(frame)
    h, w = picture.shape[:2]
    if 0 < width < w:
        size = (width, max(1, round(h * width / w)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buffer.tobytes()


def mjpeg_part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode() + jpeg + b"\r\n"


@dataclass(frozen=True)
class View:
    """What one request asks for: frames a second, JPEG quality, width (0: as it comes)."""

    fps: float
    quality: int
    width: int

    @classmethod
    def from_query(cls, query: Any, default: View) -> View:
        """The query's ``fps``/``quality``/``width``, each within ``default``'s limits."""
        try:
            fps = float(query.get("fps", default.fps))
            quality = int(query.get("quality", default.quality))
            width = int(query.get("width", default.width))
        except ValueError:
            raise web.HTTPBadRequest(text="fps, quality and width must be numbers\n") from None
        if not (math.isfinite(fps) and fps > 0) or not 1 <= quality <= 100 or width < 0:
            raise web.HTTPBadRequest(
                text="fps must be > 0, quality 1 to 100, width 0 (as is) or more\n"
            )
        if default.width and (width == 0 or width > default.width):
            width = default.width
        return cls(min(fps, default.fps), quality, width)


class Pacer:
    """When the next frame is due at ``period`` seconds apart, with no burst after a pause."""

    def __init__(self, period: float):
        self.period = period
        self.next = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until the next frame is due (0 or less: now); a quarter period of slack."""
        return self.next - 0.25 * self.period - now

    def advance(self, now: float) -> None:
        on_time = now - self.next <= self.period
        self.next = (self.next if on_time else now) + self.period


async def send_mjpeg(
    request: web.Request,
    response: web.StreamResponse,
    next_jpeg: Callable[[int], Awaitable[tuple[bytes, int] | None]],
    fps: float,
    client_timeout: float,
) -> None:
    """Send ``next_jpeg(after_seq)``'s frames at up to ``fps`` until the client goes.

    ``next_jpeg`` waits (a little) for a frame newer than the one sent, so the client
    always gets the newest; one that has not taken a frame in ``client_timeout`` s is
    dropped. Returns quietly when the client has gone or is dropped.
    """
    loop = asyncio.get_running_loop()
    pacer = Pacer(1.0 / fps)
    seq = 0
    try:
        while request.transport is not None and not request.transport.is_closing():
            delay = pacer.wait_time(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
            got = await next_jpeg(seq)
            if got is None:
                continue  # no new frame yet; look whether the client is still there
            jpeg, seq = got
            pacer.advance(loop.time())
            await asyncio.wait_for(response.write(mjpeg_part(jpeg)), client_timeout)
    except (ConnectionError, TimeoutError):
        pass  # gone, or stalled past client_timeout: drop it


def mjpeg_response() -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": MJPEG_TYPE, **NO_STORE})
    response.force_close()  # a stream ends with its connection
    return response


class Streams:
    """A server's open streams, to end them at once when it closes.

    aiohttp would wait for them (they never end by themselves), then cancel them.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def end_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _QuietParserErrors(logging.Filter):
    """aiohttp logs a traceback for every malformed request; one debug line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            logging.getLogger("pipelined.http").debug("bad request refused: %s", exc)
            return False
        return True


_QUIET = _QuietParserErrors()


MAX_CONNECTIONS = 128
"""Open connections a server takes at once; more are answered 503 and closed."""
ACCEPT_BURST = 16
"""The listen backlog, which is also how many connections asyncio accepts in one go:
each is a descriptor before it can be refused, so a burst stays small."""


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one 503 answer, then closed, whatever it sends."""

    BODY = b"too many connections; try again\n"
    ANSWER = (
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.ANSWER)
        transport.close()


class _CappedSite(web.SockSite):
    """aiohttp's SockSite, with at most ``limit`` connections open at once."""

    __slots__ = ("_limit",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket, limit: int, **kw: Any):
        super().__init__(runner, sock, **kw)
        self._limit = limit

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        limit = self._limit

        def connection() -> asyncio.BaseProtocol:
            return server() if len(server.connections) < limit else _Refuse()

        self._server = await asyncio.get_running_loop().create_server(
            connection, sock=self._sock, backlog=min(self._backlog, ACCEPT_BURST)
        )


async def start_server(
    app: web.Application,
    *,
    sock: socket.socket | None = None,
    host: str = "",
    port: int = 0,
    max_connections: int = MAX_CONNECTIONS,
) -> web.AppRunner:
    """Serve ``app`` on ``sock`` (or host:port) with the limits every pipelined server has.

    aiohttp parses requests and refuses malformed ones, over-long lines and too many
    headers (400). ``keepalive_timeout`` also closes a connection that sends no
    complete request within HEAD_TIMEOUT (a slowloris). At most ``max_connections`` are
    open at once: the file descriptors of a server are bounded, whoever connects.
    Streams never end by themselves, so closing gives them SHUTDOWN_TIMEOUT, not
    aiohttp's minute. The access log is off: a first visit's URL carries a token.
    """
    logging.getLogger("aiohttp.server").addFilter(_QUIET)
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=HEAD_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    try:
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family)
        site = _CappedSite(runner, sock, max_connections)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


# -- the block's server: feeds, shared encodes, viewers ----------------------------------
