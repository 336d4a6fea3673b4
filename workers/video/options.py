"""The ``encode`` key of a block: its frames encoded once, for every reader that wants video.

    [blocks.camera]
    type = "camera"
    source = "testsrc"
    encode = "h264"                       # or a table:
    # encode = { codec = "h264", bit_rate = 4_000_000, keyframe_interval = 1.0 }

A block that makes frames (a filter, the synthetic camera) gets a packet wire beside its
frame wire, which the worker's runtime fills with an encoder on its own thread
(``encode.EncoderThread``): a recorder copies those packets as it copies a real
camera's, a preview or a remote link could send them on. Parsed and checked here, in
the daemon, before anything starts; FFmpeg is only asked about an encoder's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..ipc.packets import stream_ring_bytes
from . import capabilities

CODECS = ("h264",)
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
KEYFRAME_ALLOWANCE = 1.0
"""Seconds of packets a wire holds beyond ``preroll`` and one keyframe interval."""


@dataclass(frozen=True)
class EncodeOptions:
    """How a block's frames are encoded; the defaults suit the demo and a 720p filter."""

    codec: str = "h264"
    encoder: str = "auto"  # auto: the hardware encoder where there is one, else libx264
    preset: str = "veryfast"  # libx264's speed for size trade-off
    bit_rate: int = 2_000_000  # bits a second at most (libx264 aims at CRF 23 below it)
    keyframe_interval: float = 2.0  # seconds between keyframes
    preroll: float = 5.0  # seconds of packets the packet wire keeps for a recorder

    def ring_bytes(self) -> int:
        """The packet wire for ``preroll`` seconds and the group of pictures it starts in."""
        seconds = self.preroll + self.keyframe_interval + KEYFRAME_ALLOWANCE
        return stream_ring_bytes(self.bit_rate, seconds)

    def describe(self) -> str:
        """One line for ``pipelined --check``."""
        encoder = "" if self.encoder == "auto" else f" with {self.encoder}"
        return (
            f"{self.codec}{encoder}, {self.bit_rate / 1e6:g} Mbit/s at most, a keyframe every"
            f" {self.keyframe_interval:g} s, {self.preroll:g} s kept ({self.preset})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncodeOptions:
        return cls(**values)


_KEYS = {f.name for f in fields(EncodeOptions)}


def parse_encode(value: Any) -> tuple[EncodeOptions | None, list[str]]:
    """The options an ``encode`` key asks for, or the problems with it (each a phrase
    that follows "encode ...")."""
    if isinstance(value, str):
        value = {"codec": value}
    if not isinstance(value, dict):
        return None, [
            'encode must be a codec name (encode = "h264") or a table'
            f' (encode = {{ codec = "h264", bit_rate = 4000000 }}), not {_show(value)}'
        ]
    problems = [
        f"encode has no key {key!r} (it takes {', '.join(sorted(_KEYS))})"
        for key in value
        if key not in _KEYS
    ]
    merged = {**EncodeOptions().to_dict(), **{k: v for k, v in value.items() if k in _KEYS}}
    for key, check in _CHECKS.items():
        problem = check(merged[key])
        if problem:
            problems.append(f"encode.{key} {problem}")
    if not problems and merged["encoder"] != "auto":
        problem = capabilities.encoder_problem(merged["codec"], merged["encoder"])
        if problem:
            problems.append(f"encode.encoder {problem}")
    if problems:
        return None, problems
    merged["keyframe_interval"] = float(merged["keyframe_interval"])
    merged["preroll"] = float(merged["preroll"])
    return EncodeOptions(**merged), []


def _choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, not {_show(value)}"

    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"must be a name, not {_show(value)}"


def _number(low: float, high: float, integer: bool = False) -> Any:
    def check(value: Any) -> str | None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            what = "an integer" if integer else "a number"
            return f"must be {what} from {low:g} to {high:g}, not {_show(value)}"
        return None

    return check


_CHECKS = {
    "codec": _choice(CODECS),
    "encoder": _string,
    "preset": _choice(PRESETS),
    "bit_rate": _number(100_000, 100_000_000, integer=True),
    "keyframe_interval": _number(0.1, 60),
    "preroll": _number(0, 60),
}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
