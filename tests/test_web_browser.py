"""The page in a real browser: headless Chromium draws the demo live, and shows a restart.

Chromium is driven over the DevTools protocol (a WebSocket, through aiohttp's client):
navigate, evaluate JavaScript in the page, take a screenshot. It runs with a fresh
profile in a temporary directory and is killed, with everything it started, at the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from harness.daemon import TOKEN, free_port
from harness.graphs import demo_graph
from test_web_support import DEMO_BLOCKS, web_daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
]

SCREENSHOTS = "PIPELINED_SCREENSHOTS"
"""A folder to keep the screenshots in, to look at them (unset: they are only checked)."""
BACKGROUND = (24, 20, 16)  # look.css's --bg, #101418, as BGR

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")


class Browser:
    """One headless Chromium with a fresh profile, and one page driven over DevTools."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="pd-chromium-"))
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers in one process group, to end together
        )
        self._ids = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, session: aiohttp.ClientSession) -> None:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open DevTools"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict:
        self._ids += 1
        await self.ws.send_json({"id": self._ids, "method": method, "params": params})
        while True:
            received = await self.ws.receive(timeout=30)
            if received.type != aiohttp.WSMsgType.TEXT:
                status = self.proc.poll()
                state = "still running" if status is None else f"Chromium exited {status}"
                raise AssertionError(
                    f"Chromium's DevTools connection ended during {method}"
                    f" ({received.type.name}; {state})"
                )
            message = json.loads(received.data)
            if message.get("id") == self._ids:
                assert "error" not in message, message
                return message["result"]

    async def js(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"the page did not show {what} in {timeout} s (last: {value!r})")

    async def screenshot(self, keep: str | None = None) -> np.ndarray:
        """The page as the window shows it; ``keep`` names a copy in $PIPELINED_SCREENSHOTS."""
        png = base64.b64decode((await self.call("Page.captureScreenshot"))["data"])
        if keep and os.environ.get(SCREENSHOTS):
            Path(os.environ[SCREENSHOTS], keep).write_bytes(png)
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    async def window(self, width: int, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers that outlived the browser
        except ProcessLookupError:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)


BLOCKS_JS = """[...document.querySelectorAll('.block')].map(g => [g.dataset.name,
    g.dataset.state, g.dataset.restarts])"""
LIVE_JS = """(() => { const img = document.getElementById('live');
    if (!img || !img.naturalWidth) return null;
    const r = img.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height, img.naturalWidth, devicePixelRatio]; })()"""


def red_square(picture: np.ndarray) -> tuple[float, float] | None:
    """Where testsrc's red square is in a screenshot, or None."""
    b, g, r = (picture[..., i].astype(int) for i in range(3))
    ys, xs = np.nonzero((r > 200) & (g < 60) & (b < 60))
    if len(xs) < 200:
        return None
    return float(xs.mean()), float(ys.mean())


def test_the_page_draws_the_demo_live_and_shows_a_restart(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    with web_daemon(demo_graph(free_port(), tmp_path / "rec")) as (d, url):
        browser = Browser()
        try:
            asyncio.run(scenario(d, url, browser, tmp_path))
        finally:
            browser.close()
    left = {e for e in set(os.listdir("/dev/shm")) - shm_before if "chromium" in e.lower()}
    for entry in left:  # Chromium's own segments, if a helper was killed before it cleaned up
        (Path("/dev/shm") / entry).unlink(missing_ok=True)


async def scenario(d, url: str, browser: Browser, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        await browser.connect(session)
        await browser.call("Page.enable")
        # The daemon's printed link: the token becomes a session cookie and leaves the
        # address bar; the page, its JSON and its live views then go by the cookie.
        await log_in(browser, url)
        await browser.call("Page.navigate", url=f"{url}/#camera")  # camera selected
        blocks = await browser.until(
            f"(b => b.length === {len(DEMO_BLOCKS)} && b.every(x => x[1] === 'RUNNING')"
            f" && b)({BLOCKS_JS})",
            30,
            "every demo block RUNNING",
        )
        assert [name for name, _, _ in blocks] == DEMO_BLOCKS
        drawn = await browser.js("document.querySelectorAll('path.wire').length")
        assert drawn == 6  # camera -> red, edges, recorder, preview; red, edges -> preview

        # The live view of the camera's wire: a frame, and then another one.
        box = await browser.until(LIVE_JS, 30, "a live frame")
        assert box[4] == 640
        shots = []
        for _ in range(2):
            picture = await browser.screenshot()
            left, top, width, height, _, scale = box
            crop = picture[
                int(top * scale) : int((top + height) * scale),
                int(left * scale) : int((left + width) * scale),
            ]
            shots.append(crop)
            await asyncio.sleep(0.7)
        cv2.imwrite(str(tmp_path / "page.png"), picture)
        first, second = (red_square(s) for s in shots)
        assert first is not None, f"no camera frame in the live view ({tmp_path / 'page.png'})"
        assert second is not None and first != second, "the live view does not move"

        # A worker killed: the page shows its restart.
        pid = d.block("edges")["pid"]
        os.kill(pid, signal.SIGKILL)
        await browser.until(
            "document.querySelector('.block[data-name=\"edges\"]').dataset.restarts === '1'"
            " && document.querySelector('.block[data-name=\"edges\"] .stats')"
            ".textContent.includes('↻ 1')",
            30,
            "edges restarted once",
        )
        await browser.until(
            "document.querySelector('.block[data-name=\"edges\"]').dataset.state === 'RUNNING'",
            30,
            "edges RUNNING again",
        )
        # The panel's buttons go through pipectl's commands: stop the recorder from the page.
        await browser.js(
            "document.querySelector('.block[data-name=\"recorder\"]')"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
        )
        await browser.js("document.querySelector('button[data-action=\"stop\"]').click()")
        await browser.until(
            "document.querySelector('.block[data-name=\"recorder\"]').dataset.state === 'STOPPED'",
            30,
            "the recorder STOPPED",
        )
        assert d.block("recorder")["state"] == "STOPPED"
        assert await browser.js("document.getElementById('message').textContent") == ("stop: done")


PLOTTED_JS = """(blocks => blocks.length === 5 && blocks.every(g =>
    [...g.querySelectorAll('.plot')].every(p => Number(p.dataset.points) >= 2))
)([...document.querySelectorAll('.block')])"""
AGREES_JS = """(async () => {
    const s = (await (await fetch('/api/status', {cache: 'no-store'})).json()).result;
    const b = s.blocks.find(x => x.name === 'recorder');
    const text = document.querySelector('.block[data-name="recorder"] .stats')?.textContent;
    const rates = `${b.fps_in.toFixed(1)} → ${b.fps.toFixed(1)} fps`;
    return !!text && text.startsWith(rates) && b.fps > 0;
})()"""
STREAMS_JS = """(() => { const imgs = [...document.querySelectorAll('.streams img')];
    if (imgs.length === 0 || !imgs.every(i => i.naturalWidth > 0)) return null;
    return imgs.map(i => { const r = i.getBoundingClientRect();
        return [i.alt, r.left, r.top, r.right, r.bottom]; }); })()"""


def test_the_page_plots_the_last_hour_and_the_preview_page_shows_every_stream(tmp_path):
    """Screenshots at 1280x900: the daemon's page with each block's fps and CPU plotted,
    the same figures as status; the preview's page in the same look, every stream in view."""
    shm_before = set(os.listdir("/dev/shm"))
    preview_port = free_port()
    with web_daemon(demo_graph(preview_port, tmp_path / "rec")) as (_, url):
        browser = Browser()
        try:
            asyncio.run(screenshots(url, f"http://127.0.0.1:{preview_port}", browser))
        finally:
            browser.close()
    left = {e for e in set(os.listdir("/dev/shm")) - shm_before if "chromium" in e.lower()}
    for entry in left:
        (Path("/dev/shm") / entry).unlink(missing_ok=True)


async def log_in(browser: Browser, url: str) -> None:
    """Open ``url`` as the daemon prints it: the token becomes the server's session cookie."""
    await browser.call("Page.navigate", url=f"{url}/?token={TOKEN}")
    await browser.until("location.pathname === '/' && !location.search", 30, "the login")


async def screenshots(url: str, preview: str, browser: Browser) -> None:
    async with aiohttp.ClientSession() as session:
        await browser.connect(session)
        await browser.call("Page.enable")
        await browser.window(1280, 900)
        await log_in(browser, url)
        await browser.call("Page.navigate", url=f"{url}/#camera")  # its live view, too
        await browser.until(PLOTTED_JS, 60, "a line of the last hour in every block's plots")
        await browser.until(AGREES_JS, 30, "the recorder's rates as status has them")
        await browser.until(
            "document.querySelectorAll('#sel-plots polyline').length === 3", 30, "panel plots"
        )
        await asyncio.sleep(1.5)  # a few frames in the live view, for the eye
        page = await browser.screenshot("page.png")
        assert page.shape[:2] == (900, 1280)
        assert tuple(int(v) for v in page[890, 5]) == BACKGROUND  # the page's own look

        await log_in(browser, preview)  # its streams and look.css then go by the cookie
        shown = await browser.until(STREAMS_JS, 30, "every stream of the preview")
        assert [alt for alt, *_ in shown] == ["camera, live", "red, live", "edges, live"]
        for alt, left, top, right, bottom in shown:
            assert min(left, top) >= 0 and right <= 1280 and bottom <= 900, (alt, bottom)
        await asyncio.sleep(0.5)
        picture = await browser.screenshot("preview.png")
        assert tuple(int(v) for v in picture[890, 5]) == BACKGROUND  # the daemon page's look
        _, _, right, bottom = shown[0][1:]
        camera = picture[int(shown[0][2]) : int(bottom), int(shown[0][1]) : int(right)]
        assert red_square(camera) is not None, "no camera picture on the preview's page"


MOTION_GRAPH = """
[blocks.camera]
type = "camera"
source = "testsrc"
size = [160, 120]
fps = 10

[blocks.motion]
type = "motion"
input = "camera"
region = [0.8, 0.2, 0.2, 0.3]  # testsrc's square passes through: events come and go
end_after = 0.3
"""
EVENTS_JS = """[...document.querySelectorAll('#ev-list li')].map(li => [li.dataset.id,
    li.querySelector('.what').textContent, li.classList.contains('active')])"""


def test_the_page_lists_events_live_beside_the_graph_and_shows_a_snapshot(tmp_path):
    with web_daemon(MOTION_GRAPH) as (d, url):
        browser = Browser()
        try:
            asyncio.run(events_scenario(d, url, browser))
        finally:
            browser.close()


async def events_scenario(d, url: str, browser: Browser) -> None:
    async with aiohttp.ClientSession() as session:
        await browser.connect(session)
        await browser.call("Page.enable")
        await log_in(browser, url)
        first = await browser.until(
            f"(l => l.length >= 1 && l)({EVENTS_JS})", 60, "a motion event in the list"
        )
        assert all(what == "motion · motion" for _, what, _ in first)
        known = {event_id for event_id, _, _ in first}
        # Live: events the block raises later come without a reload.
        await browser.until(
            f"{EVENTS_JS}.some(e => !{json.dumps(sorted(known))}.includes(e[0]))",
            60,
            "a newer event, without a reload",
        )
        listed = d.call("events", blocks=["motion"], limit=1000)["events"]
        shown = await browser.js(EVENTS_JS)
        assert {e[0] for e in shown} <= {e["id"] for e in listed}
        # A click shows the event's snapshot, as the store has it.
        await browser.js("document.querySelector('#ev-list li').click()")
        width = await browser.until(
            "(i => !document.getElementById('ev-view').hidden && i.complete && i.naturalWidth)"
            "(document.getElementById('ev-snapshot'))",
            30,
            "the event's snapshot",
        )
        assert width == 160
        caption = await browser.js("document.getElementById('ev-caption').textContent")
        assert caption.startswith("motion · motion · ") and "score" in caption


REMOTE_GRAPH = """
[zenoh]
listen = ["tcp/127.0.0.1:{port}"]

[blocks.camera]
type = "camera"
source = "testsrc"
size = [320, 240]
fps = 10
publish = "site1/door/cam"

[blocks.door]
type = "remote"
source = "zenoh:site1/door/cam"
encoding = "jpeg"
size = [320, 240]
"""
REMOTE_KEYS_JS = """[...document.querySelectorAll('.remote-key')].map(g => [g.dataset.remote,
    g.querySelector('.name').textContent, g.querySelector('.type').textContent,
    g.querySelector('.stats').textContent])"""


def test_the_page_draws_remote_wires_as_edges_that_leave_the_box() -> None:
    """A box that publishes its camera and reads the same key back (Zenoh delivers a
    session's own samples): the key it sends leaves the box from the link, the key it
    reads comes in to the remote block, each a dashed node outside the graph."""
    with web_daemon(REMOTE_GRAPH.format(port=free_port())) as (_, url):
        browser = Browser()
        try:
            asyncio.run(remote_scenario(url, browser))
        finally:
            browser.close()


async def remote_scenario(url: str, browser: Browser) -> None:
    async with aiohttp.ClientSession() as session:
        await browser.connect(session)
        await browser.call("Page.enable")
        await log_in(browser, url)
        keys = await browser.until(
            f"(k => k.length === 2 && k.every(x => x[3].includes('fps')) && k)({REMOTE_KEYS_JS})",
            60,
            "two remote keys with their rates",
        )
        assert sorted(keys)[0][:3] == [
            "zenoh:in:site1/door/cam", "zenoh:site1/door/cam", "from another box · jpeg",
        ]  # fmt: skip
        assert sorted(keys)[1][:3] == [
            "zenoh:out:site1/door/cam", "zenoh:site1/door/cam", "leaves the box · jpeg",
        ]  # fmt: skip
        # camera -> zenoh (the link reads it) is a wire of the box; the two that cross its
        # edge are dashed: zenoh -> the key it sends, the key read -> door
        assert await browser.js("document.querySelectorAll('path.wire.remote').length") == 2
        assert await browser.js("document.querySelectorAll('path.wire').length") == 3
        names = await browser.js(BLOCKS_JS)
        assert sorted(n for n, _, _ in names) == ["camera", "door", "zenoh"]
        # frames went round: the remote block has some, and the page says so
        await browser.until(
            "(k => k.some(x => x[0].startsWith('zenoh:in') && /[1-9][0-9.]* fps/.test(x[3])))"
            f"({REMOTE_KEYS_JS})",
            60,
            "frames on the key read",
        )
