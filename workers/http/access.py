"""Who may use a pipelined HTTP server (the daemon's page, a preview block): a token, always.

- Every request carries the server's token: as ``Authorization: Bearer TOKEN`` (curl,
  Prometheus), as ``?token=TOKEN`` (a first visit, a tool that takes only a URL), or as
  the session cookie a first visit leaves. Opening ``/?token=TOKEN`` sets the cookie and
  redirects to ``/``, so the token leaves the address bar, the history and the links.
- The cookie holds when it expires and an HMAC of that under the token, never the token
  itself; it lasts SESSION_SECONDS and the server checks the expiry, whatever the
  browser does with it. It is HttpOnly and SameSite=Strict, and Secure beyond loopback
  (serve the page through HTTPS there: a browser keeps no Secure cookie from plain HTTP).
- Bound to loopback, a request's ``Host`` must be a loopback name too, so a web page the
  user visits cannot reach the server by pointing its own name at 127.0.0.1.
- A refused request is answered, and its connection closed: nobody holds a connection
  open without the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from .mjpeg import given_token, is_loopback, local_host_header, same_secret

SESSION_SECONDS = 12 * 3600
"""How long a browser session lasts after the token was given."""


def new_token() -> str:
    """A token for a server nobody gave one: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


class TokenGate:
    """The rules above for one server: its bind address, port and token."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        realm: str,
        clock: Callable[[], float] = time.time,
    ):
        if not token:
            raise ValueError("a pipelined HTTP server needs a token")
        self.local = is_loopback(host)
        self.token = token
        self.realm = realm
        self.cookie = f"pipelined_{port}"
        self._key = hmac.new(token.encode(), b"pipelined session", hashlib.sha256).digest()
        self._clock = clock

    def refusal(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer to send instead of serving ``request``, or None to serve it."""
        if self.local and not local_host_header(request):
            text = "this server answers to loopback names only\n"
            return closing(web.Response(status=403, text=text))
        if same_secret(given_token(request), self.token):
            if request.method == "GET" and request.path == "/" and "token" in request.query:
                return self.log_in()
            return None
        if self.valid_session(request.cookies.get(self.cookie)):
            return None
        return self.unauthorized(request)

    def log_in(self) -> web.StreamResponse:
        """Keep the token in a session cookie and take it out of the address bar."""
        redirect = web.Response(status=303, headers={"Location": "/"})
        redirect.set_cookie(
            self.cookie,
            self.session(),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="Strict",
            secure=not self.local,
            path="/",
        )
        return redirect

    def session(self) -> str:
        """A cookie value: its expiry, and the HMAC of it under the token."""
        expires = str(int(self._clock()) + SESSION_SECONDS)
        return f"{expires}.{self._sign(expires)}"

    def valid_session(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        expires, _, mac = cookie.partition(".")
        if not expires.isdigit() or not same_secret(mac, self._sign(expires)):
            return False
        return self._clock() < int(expires)

    def unauthorized(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = {"WWW-Authenticate": f'Bearer realm="{self.realm}"'}
        if request.method == "GET" and request.path == "/":
            page = (
                "<!doctype html><meta charset=utf-8><title>pipelined</title>"
                "<p>This page needs its token (the daemon printed a link that carries it).</p>"
                '<form method="get" action="/"><input name="token" type="password"'
                ' autocomplete="current-password" aria-label="token" autofocus>'
                " <button>Open</button></form>"
            )
            return closing(
                web.Response(status=401, text=page, content_type="text/html", headers=headers)
            )
        text = "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n"
        return closing(web.Response(status=401, text=text, headers=headers))

    def _sign(self, expires: str) -> str:
        return hmac.new(self._key, expires.encode(), hashlib.sha256).hexdigest()


def closing(response: web.StreamResponse) -> web.StreamResponse:
    """``response``, after which the server closes the connection."""
    response.force_close()
    return response
