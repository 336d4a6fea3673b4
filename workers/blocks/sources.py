"""What a camera's ``source`` means, whether it can ever work, and why it is not there now.

A source is ``testsrc``, a V4L2 device (an index, ``/dev/videoN`` or a stable
``/dev/v4l/by-id/…`` link), a video file, or an ``rtsp://``/``http://`` URL. Only a
source that can never work (a malformed URL, an unknown scheme) is refused, at load time.
Everything else may simply not be there yet, and the camera waits for it.

Passwords in URLs never reach a message or a log: ``show()`` is the only way a source
is printed.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..contract import redact

SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")

Kind = Literal["testsrc", "device", "file", "url"]

FOURCC_FORMATS = {
    "MJPG": "mjpeg",
    "JPEG": "mjpeg",
    "H264": "h264",
    "HEVC": "hevc",
    "YUYV": "yuyv422",
    "YUY2": "yuyv422",
    "UYVY": "uyvy422",
    "NV12": "nv12",
    "YU12": "yuv420p",
    "GREY": "gray",
    "RGB3": "rgb24",
    "BGR3": "bgr24",
}
"""V4L2 pixel formats a camera may be asked for, as FFmpeg's ``input_format`` names them."""
ENCODED_FOURCCS = ("MJPG", "JPEG", "H264", "HEVC")
"""The V4L2 formats that are encoded video: a device asked for one publishes packets."""


@dataclass(frozen=True)
class Source:
    """A parsed source: its kind, and what FFmpeg is given to open it."""

    kind: Kind
    target: str | int

    @property
    def live(self) -> bool:
        """Live sources pace themselves; testsrc and files are paced by the camera."""
        return self.kind in ("device", "url")

    def sends_packets(self, fourcc: str = "") -> bool:
        """Whether it sends encoded video, whose packets the camera publishes as received:
        a stream or a file does; a V4L2 device when asked for MJPEG or H.264."""
        if self.kind == "device":
            return fourcc in ENCODED_FOURCCS
        return self.kind != "testsrc"

    def show(self) -> str:
        return redact(str(self.target))


def parse_source(value: str | int) -> Source:
    """Classify a source; ValueError, naming the source, if it can never work."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"source must be a string or a device index, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"source {value}: a device index is 0 or more")
        return Source("device", value)
    text = value.strip()
    if not text:
        raise ValueError("source is empty: use testsrc, a device, a file or a URL")
    if text == "testsrc":
        return Source("testsrc", text)
    if text.isdigit():
        return Source("device", int(text))
    if text.startswith("/dev/"):
        return Source("device", text)
    if _SCHEME_RE.match(text):
        _check_url(text)
        return Source("url", text)
    return Source("file", text)


def _check_url(url: str) -> None:
    shown = redact(url)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(
            f"source {shown!r}: unknown scheme {scheme!r}; use {known}, a device, a file or testsrc"
        )
    if not url[len(scheme) + 1 :].startswith("//"):
        raise ValueError(f"source {shown!r}: malformed URL, expected {scheme}://host/…")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(
            f"source {shown!r}: malformed URL, it contains spaces or control characters"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"source {shown!r}: malformed URL ({exc})") from None
    if not parts.hostname:
        raise ValueError(f"source {shown!r}: malformed URL, it names no host")
    if port == 0:
        raise ValueError(f"source {shown!r}: malformed URL, port 0")


def why_unavailable(source: Source, timeout: float) -> str:
    """A short reason why ``source`` did not open, found by looking at it directly.

    FFmpeg's errors are terse ("Input/output error") and quote the URL with its password;
    a person fixing a box needs "connection refused", "no such device" or "permission
    denied".
    """
    if source.kind == "url":
        return _why_url(str(source.target), timeout)
    path = f"/dev/video{source.target}" if isinstance(source.target, int) else source.target
    if not os.path.exists(path):
        return "no such device (not plugged in yet?)" if source.kind == "device" else "no such file"
    if not os.access(path, os.R_OK):
        hint = " (is the user in the video group?)" if source.kind == "device" else ""
        return f"permission denied{hint}"
    if source.kind == "device":
        return "the device did not open (busy, or not a capture device)"
    return "the file could not be decoded"


def _why_url(url: str, timeout: float) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return "connection refused"
        return exc.strerror.lower() if exc.strerror else str(exc)
    return "the server answered but sent no video (check the path and credentials)"
