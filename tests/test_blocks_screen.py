"""The screen block in a real X server (Xvfb), checked from a screenshot; and without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelined.workers import block as block_api
from pipelined.workers.block import ConfigurationError
from pipelined.workers.blocks.screen import Screen

TITLE = "pipelined screen test"


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private X server on a display number it picks itself; killed at the end."""
    if shutil.which("Xvfb") is None or shutil.which("import") is None:
        pytest.skip("needs Debian's xvfb and imagemagick")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_end)
    try:
        with os.fdopen(read_end) as chosen:
            number = chosen.readline().strip()  # written once the server accepts clients
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


SHOW = textwrap.dedent(
    f"""
    import sys, time
    import numpy as np
    from pipelined.workers.blocks.screen import Screen

    red = np.zeros((150, 200, 3), np.uint8)
    red[:] = (0, 0, 255)
    blue = np.zeros((150, 200, 3), np.uint8)
    blue[:] = (255, 0, 0)
    grey = np.full((75, 100), 128, np.uint8)  # one channel, half the height
    screen = Screen("screen", {{"title": {TITLE!r}, "fullscreen": False}})
    screen.setup()
    for n in range(400):  # about 20 s at most; the test ends it sooner
        screen.process([red, blue, grey])
        if n == 5:
            print("shown", flush=True)
        time.sleep(0.05)
    screen.close()
    """
)


def box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Left, top, width and height of the True pixels."""
    ys, xs = np.nonzero(mask)
    assert len(xs), "colour not on the screen"
    return int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1


def test_screen_shows_its_inputs_side_by_side_in_a_window(xvfb: str, tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    env = dict(os.environ, DISPLAY=xvfb)
    shower = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert shower.stdout is not None and shower.stdout.readline().strip() == "shown", (
            shower.stderr.read() if shower.stderr else ""
        )
        time.sleep(0.3)
        shot = tmp_path / "shot.png"
        subprocess.run(["import", "-window", "root", "-display", xvfb, str(shot)],
                       check=True, timeout=30)  # fmt: skip
        window = None
        if shutil.which("xwininfo"):  # Debian's x11-utils
            window = subprocess.run(["xwininfo", "-display", xvfb, "-name", TITLE],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
    finally:
        shower.kill()
        shower.wait(timeout=10)

    image = cv2.imread(str(shot)).astype(int)
    b, g, r = image[..., 0], image[..., 1], image[..., 2]
    red = box((r > 200) & (g < 50) & (b < 50))
    blue = box((b > 200) & (g < 50) & (r < 50))
    grey = box((abs(b - 128) < 4) & (abs(g - 128) < 4) & (abs(r - 128) < 4))
    assert red[2:] == blue[2:] == grey[2:] == (200, 150)  # grey scaled up to the same height
    assert blue[0] == red[0] + 200 and grey[0] == blue[0] + 200  # left to right, touching
    assert red[1] == blue[1] == grey[1]
    if window is not None:
        assert window.returncode == 0, window.stderr  # a real window with the block's title
        assert "Width: 600" in window.stdout and "Height: 150" in window.stdout


def test_without_a_display_setup_says_why_and_what_to_use_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    screen = Screen("screen", {"title": "", "fullscreen": False})
    with pytest.raises(ConfigurationError) as raised:
        screen.setup()
    message = str(raised.value)
    assert "$DISPLAY is not set" in message
    assert "latest.jpg" in message and "preview" in message
    # The runtime ends the block FAILED on this very class instead of restarting it.
    assert isinstance(raised.value, block_api.ConfigurationError)
    screen.close()


def test_an_unreachable_display_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    number = next(n for n in range(4242, 4300) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    monkeypatch.setenv("DISPLAY", f":{number}")
    screen = Screen("screen", {"title": "", "fullscreen": False})
    with pytest.raises(ConfigurationError, match=f"cannot open display ':{number}'.*latest.jpg"):
        screen.setup()
