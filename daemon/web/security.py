"""Who may use the page, and how its buttons are kept from other sites.

- Bound to loopback: the request's ``Host`` must be a loopback name. A web page the
  user visits cannot then reach the daemon by pointing its own name at 127.0.0.1 (DNS
  rebinding), and no other machine can reach it at all.
- With a token (required beyond loopback): every request, the page's files included,
  carries it as ``Authorization: Bearer TOKEN`` (Prometheus, curl), as ``?token=TOKEN``,
  or as the session cookie that opening ``/?token=TOKEN`` sets (HttpOnly,
  SameSite=Strict; it holds an HMAC of the token, not the token). Others get 401.
- Buttons (any method but GET/HEAD) also need the header ``X-Pipelined-Request: 1``,
  which a form or an image on another site cannot send and a cross-origin script can
  only send after a CORS preflight that this server never answers; and an ``Origin``
  (when the browser sends one) naming this very server, and a ``Sec-Fetch-Site`` (when
  sent) of ``same-origin``. Else 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from pipelined.workers.http.mjpeg import (
    given_token,
    is_loopback,
    local_host_header,
    same_secret,
)

CSRF_HEADER = "X-Pipelined-Request"
SAFE_METHODS = frozenset({"GET", "HEAD"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access:
    """The rules above for one server: its bind address and token."""

    def __init__(self, host: str, port: int, token: str):
        self.local = is_loopback(host)
        self.token = token
        self.cookie = f"pipelined_{port}"
        self._session = (
            hmac.new(token.encode(), b"pipelined page session", hashlib.sha256).hexdigest()
            if token
            else ""
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.local and not local_host_header(request):
            raise web.HTTPForbidden(text="this page answers to loopback names only\n")
        if self.token:
            by_url = same_secret(given_token(request), self.token)
            if not by_url and not same_secret(request.cookies.get(self.cookie), self._session):
                raise _unauthorized(request)
            if (
                by_url
                and request.method == "GET"
                and request.path == "/"
                and "token" in (request.query)
            ):
                raise self._log_in()
        if request.method not in SAFE_METHODS:
            refused = cross_site(request)
            if refused:
                raise web.HTTPForbidden(text=f"refused: {refused}\n")
        return await handler(request)

    def _log_in(self) -> web.HTTPSeeOther:
        """Keep the token in a cookie and take it out of the address bar."""
        redirect = web.HTTPSeeOther("/")
        redirect.set_cookie(self.cookie, self._session, httponly=True, samesite="Strict", path="/")
        return redirect


def cross_site(request: web.Request) -> str | None:
    """Why a state-changing request may come from another site, or None if it cannot."""
    if request.headers.get(CSRF_HEADER) != "1":
        return f"the request lacks the header {CSRF_HEADER}: 1"
    origin = request.headers.get("Origin")
    host = request.headers.get("Host")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        return f"Origin {origin!r} is not this server"
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site!r}"
    return None


def _unauthorized(request: web.Request) -> web.HTTPUnauthorized:
    headers = {"WWW-Authenticate": 'Bearer realm="pipelined"'}
    if request.method == "GET" and request.path == "/":
        page = (
            "<!doctype html><meta charset=utf-8><title>pipelined</title>"
            "<p>This page needs the daemon's token.</p>"
            '<form method="get" action="/"><input name="token" type="password"'
            ' autocomplete="current-password" aria-label="token" autofocus>'
            " <button>Open</button></form>"
        )
        return web.HTTPUnauthorized(text=page, content_type="text/html", headers=headers)
    return web.HTTPUnauthorized(
        text="a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n", headers=headers
    )
