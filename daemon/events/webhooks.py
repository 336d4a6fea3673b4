"""Webhooks: each event's JSON POSTed to the URLs of ``[webhooks]``.

Each URL has a bounded queue (``queue``; the oldest goes first when it is full,
counted) and one task that sends its events in order with aiohttp on the daemon's loop:
nothing there waits on the network (names are resolved in aiohttp's threads, sockets do
not block), and each POST has ``timeout`` seconds. A failed POST (no answer in time, a
refused connection, a 5xx, 408 or 429) is tried again ``retries`` times, after 1 s, 2 s,
4 s…; a 4xx is not (it will not get better), and either way the next event goes on.
A URL that hangs so costs its own queue, never the graph, the control socket or another
URL. Status shows each URL as scheme://host:port/… (its path and query are often the
secret) with what it sent, dropped and failed, and why the last POST failed.

The body is ``{"type": "start"|"update"|"end", "event": {…}}``, the same as MQTT's
``<prefix>/events``, with ``Content-Type: application/json``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .config import WebhooksConfig, shown_url

log = logging.getLogger("pipelined.webhooks")
RETRY_FIRST = 1.0
RETRY_MAX = 60.0
TRANSIENT = frozenset({408, 429})


@dataclass
class _Hook:
    url: str
    shown: str
    queue: collections.deque[bytes] = field(default_factory=collections.deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    dropped: int = 0  # the queue was full
    failed: int = 0  # given up after the retries
    reason: str | None = None
    task: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        return {"url": self.shown, "queued": len(self.queue), "sent": self.sent,
                "dropped": self.dropped, "failed": self.failed, "reason": self.reason}  # fmt: skip


class Webhooks:
    """One sender per URL; a sink of the EventHub."""

    def __init__(self, config: WebhooksConfig):
        self.config = config
        self.hooks = [_Hook(url, shown_url(url)) for url in config.urls]
        self.session: Any = None

    def start(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        self.session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": "pipelined"}, raise_for_status=False
        )
        for hook in self.hooks:
            hook.task = asyncio.create_task(self._send_forever(hook))

    def event(self, change: str, event: dict[str, Any], active: bool) -> None:
        if change not in self.config.phases:
            return
        body = json.dumps({"type": change, "event": event}, separators=(",", ":")).encode()
        for hook in self.hooks:
            if len(hook.queue) >= self.config.queue:
                hook.queue.popleft()
                hook.dropped += 1
            hook.queue.append(body)
            hook.ready.set()

    async def _send_forever(self, hook: _Hook) -> None:
        while True:
            await hook.ready.wait()
            hook.ready.clear()
            while hook.queue:
                body = hook.queue[0]
                ok = await self._deliver(hook, body)
                if hook.queue and hook.queue[0] is body:
                    hook.queue.popleft()
                if ok:
                    hook.sent += 1
                else:
                    hook.failed += 1

    async def _deliver(self, hook: _Hook, body: bytes) -> bool:
        """POST one body, with the retries; True once it was taken."""
        delay = RETRY_FIRST
        for attempt in range(self.config.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            again = await self._post(hook, body)
            if again is None:
                return True
            if not again:
                break
        log.warning("webhook %s: an event was not delivered: %s", hook.shown, hook.reason)
        return False

    async def _post(self, hook: _Hook, body: bytes) -> bool | None:
        """None: delivered; True: failed, worth another try; False: failed for good."""
        import aiohttp

        try:
            async with self.session.post(
                hook.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if response.status < 300:
                    hook.reason = None
                    return None
                hook.reason = f"HTTP {response.status} {response.reason or ''}".strip()
                return response.status >= 500 or response.status in TRANSIENT
        except TimeoutError:
            hook.reason = f"no answer within {self.config.timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            hook.reason = f"cannot connect: {exc.os_error.strerror or exc.os_error}"
        except aiohttp.ClientError as exc:
            hook.reason = f"{type(exc).__name__}: {exc}".replace(hook.url, hook.shown)
        return True

    def status(self) -> dict[str, Any]:
        return {"webhooks": [hook.status() for hook in self.hooks]}

    async def close(self) -> None:
        for hook in self.hooks:
            if hook.task is not None:
                hook.task.cancel()
        await asyncio.gather(*(h.task for h in self.hooks if h.task), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
