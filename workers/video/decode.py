"""Decoding a camera's packets: with which decoder, into which frame.

``Decoder`` opens one stream's decoder (what to decode is ``policy``'s question): with
``hwaccel = "auto"`` the box's hardware decoder where there is one (the Raspberry Pi's
``h264_v4l2m2m``, a CUDA device), else FFmpeg's software decoder. It says which
(``how``) for the camera's status line, and falls back to software if the hardware one
fails mid-stream.
"""

from __future__ import annotations

import logging
from typing import cast

import av
import av.error
import numpy as np
from av.codec.hwaccel import HWAccel

from ..ipc.packets import CodecParams
from . import capabilities

log = logging.getLogger("pipelined.video")


class NotHardware(Exception):
    """A hardware decoder that opened but would decode in software."""


class Decoder:
    """One generation of a stream's decoder; ``how`` says with what, for the status."""

    def __init__(self, params: CodecParams, hwaccel: str, keyframes_only: bool):
        self.params = params
        self.keyframes_only = keyframes_only
        self.hardware: str | None = None
        self.context, self.how = self._open(hwaccel)

    def decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The frames this packet completes (none, one, or more after a delay)."""
        try:
            return self.context.decode(packet)
        except av.error.FFmpegError as exc:
            if self.hardware is None:
                log.debug("decoding a %s packet failed: %s", self.params.codec, exc)
                return []
            log.warning("%s failed (%s): decoding in software from now", self.hardware, exc)
            self.context = self._create(self.params.codec)
            self.how = f"in software ({self.hardware} failed: {exc.strerror})"
            self.hardware = None
            return []

    def _open(self, hwaccel: str) -> tuple[av.VideoCodecContext, str]:
        codec = self.params.codec
        if hwaccel == "off":
            tries: list[str] = []
        elif hwaccel == "auto":
            tries = capabilities.hardware_decoders(codec)
        else:
            tries = [hwaccel]
        context, self.hardware, how = capabilities.open_first(
            tries,
            self._create,
            codec,
            (av.error.FFmpegError, OSError, ValueError, NotHardware),
            "decoder",
            auto=hwaccel == "auto",
        )
        return context, how

    def _create(self, name: str) -> av.VideoCodecContext:
        """An opened decoder: a codec, a codec's hardware decoder, or a hardware device."""
        codec = self.params.codec
        hwaccel, device = None, name
        if name in capabilities.device_types():
            hwaccel = HWAccel(name)
            name = codec
        elif av.codec.Codec(name, "r").id != av.codec.Codec(codec, "r").id:
            raise NotHardware(f"it decodes {av.codec.Codec(name, 'r').id}, not {codec}")
        context = cast(av.VideoCodecContext, av.CodecContext.create(name, "r", hwaccel=hwaccel))
        params = self.params
        if params.extradata:
            context.extradata = params.extradata
        context.width, context.height = params.width, params.height
        if codec == "rawvideo" and params.pix_fmt:
            context.pix_fmt = params.pix_fmt
        # Frame threads hold frames back until more packets come: fine for every frame,
        # but a keyframe would only come out when the next one arrives.
        context.thread_type = "SLICE" if self.keyframes_only else "AUTO"
        if self.keyframes_only:
            context.skip_frame = "NONKEY"
        context.open()
        if hwaccel is not None and not context.is_hwaccel:
            raise NotHardware(f"no {device} decoding of {codec} here")
        return context


def to_bgr(frame: av.VideoFrame, out: np.ndarray) -> None:
    """Convert (and scale, if the sizes differ) a decoded frame into ``out`` (h x w x 3)."""
    height, width = out.shape[:2]
    if (frame.width, frame.height) == (width, height):
        image = frame.to_ndarray(format="bgr24")
    else:
        shrink = frame.width > width
        image = frame.to_ndarray(
            width=width,
            height=height,
            format="bgr24",
            interpolation="AREA" if shrink else "BILINEAR",
        )
    np.copyto(out, image)
