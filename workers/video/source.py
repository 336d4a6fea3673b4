"""Opening a camera's source with PyAV, and saying why one did not open.

One function per question: how to open a source (``open_source``: RTSP over TCP by
default, the V4L2 device's format, size and rate, FFmpeg's open and read timeouts),
which stream is its video (``video_stream``), what a muxer or decoder must know of it
(``stream_params``), and why an attempt failed, in words a person fixing a box can act
on (``why_not``). Nothing here shows a URL's password: errors are described from their
type, never by printing FFmpeg's message, which quotes the URL.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import av
import av.error

from ..blocks.sources import FOURCC_FORMATS, Source, why_unavailable
from ..ipc.packets import CodecParams


class NotVideo(Exception):
    """The source opened, but carries no video stream FFmpeg can use."""


@dataclass(frozen=True)
class OpenSettings:
    """How to open a source: the camera's parameters that concern FFmpeg."""

    open_timeout: float  # connect, handshake and first look at the stream
    read_timeout: float  # longest wait for the next packet: the stall timeout
    rtsp_transport: str = "tcp"  # tcp | udp | auto (FFmpeg tries UDP first)
    size: tuple[int, int] = (640, 480)  # asked of a V4L2 device
    fps: float = 30.0  # asked of a V4L2 device
    fourcc: str = ""  # asked of a V4L2 device; empty: its own


def open_source(source: Source, settings: OpenSettings) -> av.container.InputContainer:
    """The opened container; FFmpeg's error (an ``av.error.FFmpegError``) if it fails."""
    options: dict[str, str] = {}
    fmt = None
    target = str(source.target)
    if source.kind == "device":
        fmt, target, options = "video4linux2", device_path(source), device_options(settings)
    elif target.lower().startswith(("rtsp:", "rtsps:")) and settings.rtsp_transport != "auto":
        options["rtsp_transport"] = settings.rtsp_transport
    timeout = (settings.open_timeout, settings.read_timeout)
    return av.open(target, "r", format=fmt, options=options, timeout=timeout)


def device_options(settings: OpenSettings) -> dict[str, str]:
    """What FFmpeg's V4L2 input is asked for: the size, the rate, and a format if given."""
    width, height = settings.size
    options = {"video_size": f"{width}x{height}", "framerate": f"{settings.fps:g}"}
    if settings.fourcc:
        options["input_format"] = FOURCC_FORMATS[settings.fourcc]
    return options


def device_path(source: Source) -> str:
    """A device index as its /dev/videoN path; paths as they are."""
    target = source.target
    return f"/dev/video{target}" if isinstance(target, int) else str(target)


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The container's first video stream; NotVideo, saying what it has instead."""
    for stream in container.streams.video:
        if stream.codec_context is not None and stream.codec_context.name:
            return stream
    kinds = sorted({s.type for s in container.streams})
    has = f"it has {', '.join(kinds)} only" if kinds else "it has no streams at all"
    raise NotVideo(f"the source carries no video FFmpeg can read ({has})")


def stream_params(stream: av.video.stream.VideoStream) -> CodecParams:
    """What the stream's header says: codec, size, time base, extradata (SPS/PPS)."""
    context = stream.codec_context
    base = stream.time_base
    return CodecParams(
        codec=context.name,
        width=context.width,
        height=context.height,
        time_base=(base.numerator, base.denominator) if base else (1, 90000),
        extradata=bytes(context.extradata or b""),
        pix_fmt=context.pix_fmt or "",
        bit_rate=context.bit_rate or 0,
    )


def why_not(exc: BaseException, source: Source, settings: OpenSettings, elapsed: float) -> str:
    """A short reason why opening or reading ``source`` failed, without its password."""
    if isinstance(exc, NotVideo):
        return str(exc)
    if isinstance(exc, av.error.ExitError) or (
        isinstance(exc, av.error.FFmpegError) and elapsed >= settings.open_timeout * 0.95
    ):
        return f"no answer within {settings.open_timeout:g} s"
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return f"the server refused the credentials ({_status(exc)}): check the user and password"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "the server has no such stream (404 Not Found): check the path"
    if isinstance(exc, av.error.HTTPClientError | av.error.HTTPServerError | av.error.HTTPError):
        return f"the server answered {_status(exc)}"
    if isinstance(exc, av.error.InvalidDataError):
        what = "file" if source.kind == "file" else "source"
        return f"the {what} is not video FFmpeg can read ({_status(exc)})"
    code = getattr(exc, "errno", None)
    if source.kind == "device" and code == errno.EBUSY:
        return "the device is busy (another program is using it)"
    if code in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ECONNREFUSED, None, errno.EIO):
        return why_unavailable(source, settings.open_timeout)  # looks at it directly
    return _status(exc)


def _status(exc: BaseException) -> str:
    """FFmpeg's short message, without the file name (a URL with its password)."""
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text).removeprefix("Server returned ").strip()
