"""Who may use the page, and how its buttons are kept from other sites.

- A token, always (workers/http/access.py): as ``Authorization: Bearer TOKEN``,
  ``?token=TOKEN``, or the expiring session cookie that opening ``/?token=TOKEN`` sets
  (then the token leaves the address bar); bound to loopback, a loopback ``Host`` too.
  A refused request gets 401 (or 403) and its connection is closed.
- Buttons (any method but GET/HEAD) also need the header ``X-Pipelined-Request: 1``,
  which a form or an image on another site cannot send and a cross-origin script can
  only send after a CORS preflight that this server never answers; and an ``Origin``
  (when the browser sends one) naming this very server, and a ``Sec-Fetch-Site`` (when
  sent) of ``same-origin``. Else 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pipelined.workers.http.access import TokenGate, closing

CSRF_HEADER = "X-Pipelined-Request"
SAFE_METHODS = frozenset({"GET", "HEAD"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access:
    """The rules above for one server: its bind address, port and token."""

    def __init__(self, host: str, port: int, token: str):
        self.gate = TokenGate(host, port, token, realm="pipelined")

    @property
    def cookie(self) -> str:
        return self.gate.cookie

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.gate.refusal(request)
        if refusal is not None:
            return refusal
        if request.method not in SAFE_METHODS:
            refused = cross_site(request)
            if refused:
                return closing(web.Response(status=403, text=f"refused: {refused}\n"))
        return await handler(request)


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
