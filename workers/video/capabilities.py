"""What this box's FFmpeg can do, asked by name: decoders, encoders, hardware.

The graph is checked in the daemon before anything starts, and a name that FFmpeg does
not know (``hwaccel = "h264_v4l2m2n"``) is refused there, with the names it does know.
A name FFmpeg knows may still not work on this box (no /dev/video10 for the Pi's
decoder): that is found when the worker opens it, and it falls back to software.

FFmpeg is imported only when a name has to be checked, so that loading a graph with no
such names does not load it into the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Literal, TypeVar

log = logging.getLogger("pipelined.video")
C = TypeVar("C")

HWACCEL_CHOICES = ("auto", "off")
ENCODER_CHOICES = ("auto",)


@cache
def _codecs() -> frozenset[str]:
    import av

    return frozenset(av.codecs_available)


@cache
def device_types() -> tuple[str, ...]:
    """The hardware device types this FFmpeg build supports (cuda, drm, qsv, …)."""
    from av.codec.hwaccel import hwdevices_available

    return tuple(hwdevices_available())


def decoder_names(codec: str) -> list[str]:
    """Hardware decoders of ``codec`` built into FFmpeg (h264_v4l2m2m, h264_cuvid, …)."""
    return sorted(
        n
        for n in _codecs()
        if n.startswith(f"{codec}_") and _is_codec(n, "r") and n != f"{codec}_mediacodec"
    )


def encoder_names(codec: str) -> list[str]:
    """Encoders of ``codec`` built into FFmpeg (libx264, h264_v4l2m2m, h264_nvenc, …)."""
    return sorted(n for n in _codecs() if n != codec and _is_codec(n, "w") and _encodes(n, codec))


def hardware_decoders(codec: str) -> list[str]:
    """What ``hwaccel = "auto"`` tries for ``codec``, in order: the V4L2 memory-to-memory
    decoder (the Raspberry Pi's), then each hardware device type the decoder supports."""
    import av

    tries = [n for n in (f"{codec}_v4l2m2m",) if n in _codecs()]
    try:
        configs = av.codec.Codec(codec, "r").hardware_configs or ()
    except (av.error.FFmpegError, ValueError):
        configs = ()
    available = set(device_types())
    tries += [c.device_type.name for c in configs if c.device_type.name in available]
    return tries


def hardware_encoders(codec: str) -> list[str]:
    """What ``encoder = "auto"`` tries before the software encoder: the Pi's V4L2 one."""
    return [n for n in (f"{codec}_v4l2m2m",) if n in _codecs()]


def hwaccel_problem(name: str) -> str | None:
    """What is wrong with ``hwaccel = name``, or None."""
    if name in HWACCEL_CHOICES or name in device_types():
        return None
    decoders = [n for c in ("h264", "hevc", "mjpeg") for n in decoder_names(c)]
    if name in decoders:
        return None
    return (
        f"must be auto, off, a hardware device type ({', '.join(device_types())}) or a"
        f" hardware decoder ({', '.join(decoders)}), not {name!r}"
    )


def encoder_problem(codec: str, name: str) -> str | None:
    """What is wrong with encoding ``codec`` with encoder ``name``, or None."""
    if name in ENCODER_CHOICES:
        return None
    names = encoder_names(codec)
    if name in names:
        return None
    return f"must be auto or an encoder of {codec} ({', '.join(names)}), not {name!r}"


def _is_codec(name: str, mode: Literal["r", "w"]) -> bool:
    import av

    try:
        return av.codec.Codec(name, mode).type == "video"
    except (av.error.FFmpegError, ValueError):
        return False


def _encodes(name: str, codec: str) -> bool:
    import av

    return av.codec.Codec(name, "w").id == av.codec.Codec(codec, "r").id


def open_first(
    tries: list[str],
    create: Callable[[str], C],
    software: str,
    errors: tuple[type[BaseException], ...],
    what: str,
    auto: bool,
) -> tuple[C, str | None, str]:
    """Open the first of the hardware codecs ``tries`` that works on this box, else the
    ``software`` one: (context, the hardware name or None, how, for the status line).

    A name FFmpeg knows may still fail here (no device, no driver): each failure is
    logged once and the first is said in ``how``, so a box that fell back says why.
    """
    failures = []
    for name in tries:
        try:
            return create(name), name, f"with {name} (hardware)"
        except errors as exc:
            failures.append(f"{name}: {reason(exc)}")
    if failures:
        log.info("no hardware %s for %s: %s", what, software, "; ".join(failures))
    context = create(software)
    label = "in software" if what == "decoder" else f"with {software}"
    if auto and failures:
        return context, None, f"{label} (no hardware {what} works here)"
    if failures:
        return context, None, f"{label} ({failures[0]})"
    return context, None, label


def reason(exc: BaseException) -> str:
    """What FFmpeg (or the OS) said, in a few words."""
    return str(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
