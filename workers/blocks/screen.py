"""The screen block: shows its inputs side by side in one window, when the box has a display.

It uses tkinter from the standard library, not OpenCV's GUI: the server build of OpenCV
(opencv-python-headless, the one a box without libGL can import) has no ``imshow``.
Frames reach Tk as PPM bytes, which Tk reads natively, so no Pillow is needed.

Without a display the block cannot ever run, and restarting it would not help: ``setup``
raises ``ConfigurationError``, which the supervisor turns into FAILED with the message.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from ..block import Block, ConfigurationError, Param
from ..picture import fit_within, side_by_side_whole

INSTEAD = (
    "To see the frames on a headless box, use a recorder block and open its latest.jpg,"
    " or the daemon's preview (pipelined --http ADDR:PORT); or run the graph where an X"
    " display is available (DISPLAY=:0)."
)


class Screen(Block):
    """A sink: one window with every input side by side, at the first input's height."""

    min_inputs = 1
    max_inputs = None
    has_output = False
    params = {
        "title": Param(str, default="", doc="window title; empty: the block's name"),
        "fullscreen": Param(bool, default=False, doc="fill the whole screen"),
    }

    def setup(self) -> None:
        display = os.environ.get("DISPLAY", "")
        if not display:
            wayland = (
                " (Wayland alone is not enough: Tk needs X)"
                if os.environ.get("WAYLAND_DISPLAY")
                else ""
            )
            raise ConfigurationError(
                f"screen {self.name!r} needs a display, and $DISPLAY is not set{wayland}. "
                + INSTEAD
            )
        try:
            import tkinter
        except ImportError as exc:
            raise ConfigurationError(
                f"screen {self.name!r} needs tkinter ({exc}): install python3-tk. " + INSTEAD
            ) from exc
        self._tk = tkinter
        try:
            self._root = tkinter.Tk(className="pipelined")
        except tkinter.TclError as exc:
            raise ConfigurationError(
                f"screen {self.name!r} cannot open display {display!r}: {exc}. " + INSTEAD
            ) from exc
        self._root.title(self.config["title"] or self.name)
        self._root.configure(background="black")
        self._root.protocol("WM_DELETE_WINDOW", self._root.iconify)  # pipectl stops it
        if self.config["fullscreen"]:
            self._root.attributes("-fullscreen", True)
        self._label = tkinter.Label(self._root, borderwidth=0, background="black")
        self._label.pack()
        self._photo: Any = None
        self._photo_size: tuple[int, int] | None = None
        self._root.update()
        self._max_size = (self._root.winfo_screenwidth(), self._root.winfo_screenheight())

    def process(self, frames: list[np.ndarray]) -> None:
        picture = side_by_side_whole(frames, self.context.intact)
        if picture is None:
            return None  # overwritten while it was taken: never shown torn
        self._show(fit_within(picture, *self._max_size))
        self._root.update()  # draw, and answer the window system, once a frame
        self.context.delivered()  # shown
        return None

    def _show(self, picture: np.ndarray) -> None:
        height, width = picture.shape[:2]
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
        ppm = b"P6 %d %d 255\n" % (width, height) + rgb.tobytes()
        if self._photo_size != (width, height):
            self._photo = self._tk.PhotoImage(master=self._root, data=ppm, format="PPM")
            self._label.configure(image=self._photo)
            self._photo_size = (width, height)
        else:
            self._photo.configure(data=ppm, format="PPM")

    def close(self) -> None:
        root = getattr(self, "_root", None)
        if root is not None:
            try:
                root.destroy()
            except self._tk.TclError:
                pass  # the display went away first
            del self._root  # closed: no window left to touch
