"""The camera block: frames from testsrc, a V4L2 device, a video file or a network stream.

A camera box must survive its camera: one still booting after a power cut, a USB camera
unplugged, an RTSP server down. None of those is a crash. The block keeps running,
says what it waits for (``context.waiting``), and reconnects with a backoff that
doubles from 0.5 s up to ``retry_max``, forever, sleeping through ``context.sleep`` so
a stop request is answered at once. Only a source that can never work (a malformed URL,
an unknown scheme) is refused, when the graph is loaded.

Frames are written straight into the output wire (``process_into``): testsrc draws into
it, and a source that delivers the asked size decodes into it. Any other size is
resized into it. testsrc and files are paced to ``fps``; live sources pace themselves,
and frames that come faster than ``fps`` are skipped before they are converted.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import cv2
import numpy as np

from ..block import Block, Param, in_range, int_list
from .sources import Source, parse_source, why_unavailable
from .testsrc import TestScene

_T = TypeVar("_T")

RETRY_FIRST = 0.5  # seconds before the first reconnect; doubles up to retry_max
MEASURE_SECONDS = 2.0  # how long a live source is watched to report its frame rate


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"

    return check


def _fourcc(value: Any) -> str | None:
    if len(value) in (0, 4):
        return None
    return f"must be 4 characters (e.g. MJPG) or empty, not {value!r}"


class Pacer:
    """Keeps frames to a rate, without a burst of catch-up frames after a stall."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next: float | None = None

    def wait(self, sleep: Callable[[float], bool]) -> bool:
        """Sleep until the next frame is due; False if asked to stop meanwhile."""
        now = time.monotonic()
        if self.next is None:
            self.next = now
        if self.next > now and not sleep(self.next - now):
            return False
        self._advance(time.monotonic())
        return True

    def due(self) -> bool:
        """For a live source: is this frame due, or is it one too many for the rate?"""
        now = time.monotonic()
        if self.next is not None and now < self.next - 0.25 * self.period:  # allow jitter
            return False
        self._advance(now)
        return True

    def _advance(self, now: float) -> None:
        base = now if self.next is None else self.next
        self.next = max(base + self.period, now - self.period)


class Camera(Block):
    """A source: testsrc, a V4L2 device, a video file, or an rtsp:// or http:// stream."""

    min_inputs = 0
    max_inputs = 0
    params = {
        "source": Param(
            (str, int),
            default="testsrc",
            doc="testsrc | device index | /dev/videoN or /dev/v4l/by-id/… | video file"
            " | rtsp://… | http://…",
        ),
        "size": Param(
            list,
            default=[640, 480],
            doc="[width, height] of the output",
            check=int_list(2, 16, 8192),
        ),
        "fps": Param(
            float, default=30.0, doc="frames per second, at most", check=in_range(0.1, 240)
        ),
        "loop": Param(bool, default=True, doc="replay a video file when it ends"),
        "timeout": Param(
            float,
            default=3.0,
            check=in_range(0.5, 60),
            doc="seconds a network source may take to connect or send a frame;"
            " keep it below the supervisor's watchdog",
        ),
        "retry_max": Param(
            float,
            default=10.0,
            check=in_range(RETRY_FIRST, 600),
            doc="longest wait between reconnects (from 0.5 s, doubling)",
        ),
        "rtsp_transport": Param(
            str,
            default="tcp",
            check=_one_of("tcp", "udp", "auto"),
            doc="tcp survives lossy Wi-Fi; auto lets FFmpeg try UDP first",
        ),
        "fourcc": Param(
            str,
            default="",
            check=_fourcc,
            doc="pixel format asked of a V4L2 device (MJPG for HD at 30 fps);"
            " empty: the device's own",
        ),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> list[str]:
        try:
            parse_source(params.get("source", "testsrc"))
        except ValueError as exc:
            return [str(exc)]
        return []

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        width, height = params["size"]
        return width * height * 3

    # -- run time ---------------------------------------------------------------------

    def setup(self) -> None:
        self.source: Source = parse_source(self.p["source"])
        width, height = self.p["size"]
        self.size = (width, height)
        self.fps = float(self.p["fps"])
        self.delivered_size: tuple[int, int] | None = None
        self.delivered_fps: float | None = None
        self._pacer = Pacer(self.fps)
        self._cap: cv2.VideoCapture | None = None
        self._scratch: np.ndarray | None = None
        self._backoff = RETRY_FIRST
        self._reason: str | None = None
        self._finished = False
        self._frames = 0  # frames delivered since the source was (re)opened
        self._measure_from = 0.0
        self._scene: TestScene | None = None
        if self.source.kind == "testsrc":
            self._scene = TestScene(*self.size, fps=self.fps)
            self.delivered_size, self.delivered_fps = self.size, self.fps
            self._report_delivery()
        else:
            _prepare_opencv(self.p["timeout"])

    def output_like(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], np.dtype]:
        width, height = self.size
        return (height, width, 3), np.dtype(np.uint8)

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        shape, dtype = self.output_like(frames)
        out = np.empty(shape, dtype)
        return out if self.process_into(frames, out) else None

    def process_into(self, frames: list[np.ndarray], out: np.ndarray) -> bool:
        if self._scene is not None:
            if not self._pacer.wait(self.context.sleep):
                return False
            self._scene.render_into(out, self._frames)
            self._frames += 1
            return True
        if self._finished:
            self.context.sleep(1.0)
            return False
        if self._cap is None and not self._connect():
            return False
        if self.source.live:
            return self._next_live_frame(out)
        return self._pacer.wait(self.context.sleep) and self._next_file_frame(out)

    def close(self) -> None:
        self._release()

    # -- reading ------------------------------------------------------------------------

    def _next_live_frame(self, out: np.ndarray) -> bool:
        """Take every frame the source sends (so none queue up), convert only the due ones."""
        assert self._cap is not None
        if not self._cap.grab():
            return self._lost("the source stopped sending frames")
        self._count_delivery()
        return self._pacer.due() and self._retrieve_into(out)

    def _next_file_frame(self, out: np.ndarray) -> bool:
        assert self._cap is not None
        if not self._cap.grab() and not self._rewind():
            return False
        self._count_delivery()
        return self._retrieve_into(out)

    def _rewind(self) -> bool:
        """At the end of a file: start it again (loop = true), or say it has finished."""
        assert self._cap is not None
        if self._frames == 0:
            return self._lost("the file has no frames that can be decoded")
        if not self.p["loop"]:
            self._finished = True
            self._release()
            self._set_reason(f"finished: {self.source.show()} played to its end (loop = false)")
            return False
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if self._cap.grab():
            return True
        self._release()  # a stream that cannot seek: open the file again
        return False

    def _retrieve_into(self, out: np.ndarray) -> bool:
        """Decode into ``out`` when the source has the asked size, else resize into it."""
        assert self._cap is not None
        same_size = self.delivered_size in (None, self.size)
        ok, image = self._cap.retrieve(image=out if same_size else self._scratch)
        if not ok or image is None:
            return self._lost("a frame could not be decoded")
        self._note_size(image)
        if image is out:
            return True
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.shape == out.shape:
            np.copyto(out, image)
        else:
            shrink = image.shape[1] > out.shape[1]
            cv2.resize(
                image,
                self.size,
                dst=out,
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
        self._scratch = image
        return True

    def _note_size(self, image: np.ndarray) -> None:
        if self._frames == 1:  # first frame since (re)connecting
            self.delivered_size = (image.shape[1], image.shape[0])
            if self._reason is not None:
                self.context.log.info("source %s is back", self.source.show())
            self._set_reason(None)
            self._backoff = RETRY_FIRST
            if not self.source.live:
                self._report_delivery()

    def _count_delivery(self) -> None:
        """Count frames from the source, and measure a live source's rate once."""
        self._frames += 1
        if not self.source.live or self.delivered_fps is not None:
            return
        now = time.monotonic()
        if self._frames == 1:
            self._measure_from = now
        elif now - self._measure_from >= MEASURE_SECONDS:
            self.delivered_fps = (self._frames - 1) / (now - self._measure_from)
            self._report_delivery()

    def _report_delivery(self) -> None:
        size = self.delivered_size or (0, 0)
        fps = self.delivered_fps or 0.0
        resize = "" if size == self.size else ", resizing"
        self.context.detail(
            f"{size[0]}x{size[1]} at {fps:.3g} fps (asked {self.size[0]}x{self.size[1]}"
            f" at {self.fps:g}{resize})"
        )
        self.context.log.info(
            "%s delivers %dx%d at %.3g fps (asked %dx%d at %g fps%s)",
            self.source.show(),
            *size,
            fps,
            *self.size,
            self.fps,
            resize,
        )

    # -- connecting -----------------------------------------------------------------------

    def _connect(self) -> bool:
        attempt = self._in_background(self._try_to_open)
        if attempt is None:
            return False  # stopping
        cap, why = attempt
        if cap is None:
            self._wait_for_source(why)
            return False
        self._cap = cap
        self._frames = 0
        self._scratch = None
        self._pacer = Pacer(self.fps)
        if self.source.live:
            self.delivered_fps = None
        else:
            self.delivered_fps = cap.get(cv2.CAP_PROP_FPS) or None
        return True

    def _try_to_open(self) -> tuple[cv2.VideoCapture | None, str]:
        """The opened source, or None and why not."""
        cap = self._new_capture()
        if cap.isOpened():
            return cap, ""
        cap.release()
        return None, why_unavailable(self.source, self.p["timeout"])

    def _in_background(self, work: Callable[[], _T]) -> _T | None:
        """Run ``work`` in a helper thread while the heartbeat goes on: an RTSP handshake or
        a DNS look-up on a box that just booted can take longer than the watchdog allows.
        None if the block is asked to stop first (the thread is abandoned with the process).
        """
        result: list[_T] = []
        helper = threading.Thread(target=lambda: result.append(work()), daemon=True)
        helper.start()
        while helper.is_alive():
            if not self.context.sleep(0.02):
                return None
        if not result:
            raise RuntimeError(f"opening {self.source.show()} failed unexpectedly")
        return result[0]

    def _new_capture(self) -> cv2.VideoCapture:
        target = self.source.target
        if self.source.kind == "device":
            return self._new_device_capture()
        if self.source.kind == "file":
            return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG)
        transport = self.p["rtsp_transport"]
        if transport == "auto":
            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
        ms = int(self.p["timeout"] * 1000)
        options = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, options)

    def _new_device_capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.source.target, cv2.CAP_V4L2)
        if cap.isOpened():
            if self.p["fourcc"]:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.p["fourcc"]))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        return cap

    def _lost(self, why: str) -> bool:
        self._release()
        self._wait_for_source(why)
        return False

    def _wait_for_source(self, why: str) -> None:
        self._set_reason(f"waiting for source {self.source.show()}: {why}")
        self.context.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self.p["retry_max"])

    def _set_reason(self, reason: str | None) -> None:
        if reason != self._reason:
            if reason is not None:
                self.context.log.warning("%s", reason)
            self.context.waiting(reason)
            self._reason = reason

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _prepare_opencv(timeout: float) -> None:
    """Process-wide OpenCV settings for a camera worker (one block per process).

    The block reports its own reasons; FFmpeg's and OpenCV's warnings would only bury the
    real error in the worker's stderr tail, and FFmpeg's could show a stream's URL. V4L2
    waits 10 s for a frame of a stalled camera unless told otherwise, longer than the
    watchdog; OpenCV reads that setting on the first frame, so it is set before.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(math.ceil(timeout)))
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
