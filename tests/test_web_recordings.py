"""The page's recordings: listed by time, served with Range requests behind the page's
access rules, and played by headless Chromium (a screenshot shows the picture)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import cv2
import pytest
from harness.daemon import TOKEN, wait_for
from harness.graphs import graph
from test_web_browser import CHROMIUM, Browser, red_square
from test_web_support import get, web_daemon

from pipelined.workers.video.segments import Namer

VIDEO = "userblocks.video_blocks"


def camera_graph(folder: Path) -> str:
    return graph(
        f'[blocks.cam]\ntype = "{VIDEO}:H264Camera"\nfps = 25\ngop = 25\n',
        f'[blocks.rec]\ntype = "recorder"\ninput = "cam"\ndirectory = "{folder}"\n'
        "segment_seconds = 2\nmin_free_bytes = 0\n",
    )


def closed_segments(folder: Path) -> list:
    return Namer("rec").scan(folder)[:-1]  # the newest is still being written


def test_recordings_are_listed_and_served_in_ranges_to_the_page_only(tmp_path):
    folder = tmp_path / "rec"
    (tmp_path / "secret.mp4").write_bytes(b"not a recording")
    with web_daemon(camera_graph(folder)) as (_, url):
        wait_for(lambda: len(closed_segments(folder)) >= 2, 60, "two closed segments")
        status, _, body = get(f"{url}/api/recordings?block=rec&order=newest&limit=50")
        listing = json.loads(body)["result"]
        segment = closed_segments(folder)[0]
        data = segment.path.read_bytes()
        whole = get(f"{url}/recordings/rec/{segment.name}")
        part = get(f"{url}/recordings/rec/{segment.name}", {"Range": "bytes=100-1099"})
        refused = [
            get(f"{url}/recordings/rec/{name}")[0]
            for name in ("..%2Fsecret.mp4", "latest.jpg", "rec-latest.mp4",
                         "rec-20200101T000000.000Z.mp4")
        ]  # fmt: skip
        not_a_recorder = get(f"{url}/recordings/cam/{segment.name}")[0]
        bad_since = get(f"{url}/api/recordings?since=yesterday")
        other_host = get(f"{url}/recordings/rec/{segment.name}", {"Host": "example.com"})[0]
    assert status == 200 and listing["recorders"] == [{"block": "rec", "directory": str(folder)}]
    files = [e["file"] for e in listing["recordings"]]
    assert segment.name in files and files == sorted(files, reverse=True)
    assert whole[0] == 200 and whole[2] == data and whole[1]["Content-Type"] == "video/mp4"
    assert whole[1].get("Accept-Ranges") == "bytes"
    assert part[0] == 206 and part[2] == data[100:1100]
    assert part[1]["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert refused == [404, 404, 404, 404] and not_a_recorder == 404
    assert bad_since[0] == 400 and "not a number" in bad_since[2].decode()
    assert other_host == 403  # the page's rules (loopback names only) hold for videos too


PLAYER_JS = """(() => { const v = document.getElementById('player');
    if (!v || v.readyState < 2 || v.currentTime < 0.3 || !v.videoWidth) return null;
    v.pause();
    const r = v.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height, v.videoWidth, devicePixelRatio,
            v.currentSrc]; })()"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_the_page_plays_a_recording(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    folder = tmp_path / "rec"
    browser = Browser()
    try:
        with web_daemon(camera_graph(folder)) as (_, url):
            wait_for(lambda: len(closed_segments(folder)) >= 2, 60, "two closed segments")
            asyncio.run(play_one(url, browser, tmp_path))
    finally:
        browser.close()
        for entry in {e for e in set(os.listdir("/dev/shm")) - shm_before if "chromium" in e}:
            (Path("/dev/shm") / entry).unlink(missing_ok=True)


async def play_one(url: str, browser: Browser, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        await browser.connect(session)
        await browser.call("Page.enable")
        await browser.call("Page.navigate", url=f"{url}/?token={TOKEN}")  # the printed link
        await browser.until("location.pathname === '/' && !location.search", 30, "the login")
        await browser.call("Page.navigate", url=f"{url}/#rec")
        rows = await browser.until(
            "(r => r.length >= 2 && r.map(x => x.dataset.url))"
            "([...document.querySelectorAll('#rec-list tr.segment')])",
            30,
            "the recordings listed",
        )
        assert all(r.startswith("/recordings/rec/rec-") for r in rows)
        assert await browser.js("document.getElementById('rec-block').value") == "rec"
        await browser.js("document.querySelectorAll('#rec-list tr.segment')[1].click()")
        box = await browser.until(PLAYER_JS, 30, "the recording playing")
        assert box[4] == 320 and box[6].endswith(rows[1])
        picture = await browser.screenshot()
        cv2.imwrite(str(tmp_path / "playing.png"), picture)
        left, top, width, height, _, scale = box[:6]
        video = picture[
            int(top * scale) : int((top + height) * scale),
            int(left * scale) : int((left + width) * scale),
        ]
        assert red_square(video) is not None, f"no picture in the player ({tmp_path}/playing.png)"
