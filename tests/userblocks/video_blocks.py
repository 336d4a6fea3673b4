"""Cameras in miniature for the recorder's tests, loaded as ``userblocks.video_blocks:…``.

``H264Camera`` encodes testsrc's scene with libx264 (or libx265) as a camera would send
it (Annex B, SPS/PPS as extradata, a keyframe every ``gop`` frames) and publishes the
packets on a real packet wire, and the pictures on its frame wire. Every packet it
publishes is appended to ``log`` (if set), so a test can check that the recording holds
exactly those bytes. ``ClipCamera`` publishes an MP4 file's packets as they are in the
file (avcC extradata, length-prefixed NAL units), in a loop, in real time.
``PacketDump`` is a sink that writes every packet it takes to a file, for ``read_dump``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipelined.workers.block import Block, Param, in_range, int_list
from pipelined.workers.blocks.testsrc import TestScene
from pipelined.workers.ipc.packets import CodecParams

TIME_BASE = Fraction(1, 90000)
RING = 4 * 1024 * 1024


class H264Camera(Block):
    """A source: testsrc, encoded; optionally a new size after ``switch_after`` frames,
    and a pause of ``pause_seconds`` after ``pause_after`` frames (a reconnect)."""

    params = {
        "fps": Param(float, default=25.0, check=in_range(1, 120)),
        "size": Param(list, default=[320, 240], check=int_list(2, 16, 4096)),
        "gop": Param(int, default=25, check=in_range(1, 1000)),
        "encoder": Param(str, default="libx264"),
        "switch_after": Param(int, default=0, doc="frames before the size changes; 0 never"),
        "switch_size": Param(list, default=[256, 192], check=int_list(2, 16, 4096)),
        "pause_after": Param(int, default=0, doc="frames before a pause; 0 never"),
        "pause_seconds": Param(float, default=0.0),
        "log": Param(str, default="", doc="a file to append each packet to (JSON lines)"),
    }
    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        sizes = [params["size"], params["switch_size"]]
        return max(w * h * 3 for w, h in sizes)

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int:
        return RING

    def setup(self) -> None:
        self.n = 0
        self.next_at = time.monotonic()
        self.log = open(self.config["log"], "a") if self.config["log"] else None  # noqa: SIM115
        self._open(*self.config["size"])

    def _open(self, width: int, height: int) -> None:
        context = av.CodecContext.create(self.config["encoder"], "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = TIME_BASE
        context.framerate = Fraction(self.config["fps"]).limit_denominator(1000)
        context.flags |= av.codec.context.Flags.global_header
        gop = self.config["gop"]
        keys = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        if self.config["encoder"] == "libx265":
            context.options = {"x265-params": keys + ":log-level=error"}
        else:
            context.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": keys}
        context.open()
        self.encoder, self.scene, self.frame_index = context, TestScene(width, height), 0
        codec = "hevc" if self.config["encoder"] == "libx265" else "h264"
        params = CodecParams(codec, width, height, (1, 90000), bytes(context.extradata))
        self.generation = self.context.packets.set_params(params)

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        self.next_at += 1.0 / self.config["fps"]
        if not self.context.sleep(max(0.0, self.next_at - time.monotonic())):
            return None
        self.n += 1
        if self.n == self.config["switch_after"]:
            self._flush()
            self._open(*self.config["switch_size"])
        if self.n == self.config["pause_after"] and self.config["pause_seconds"]:
            self.context.sleep(self.config["pause_seconds"])
            self.next_at = time.monotonic()
        picture = self.scene.render(self.n)
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = round(self.frame_index * 90000 / self.config["fps"])
        frame.time_base = TIME_BASE
        self.frame_index += 1
        for packet in self.encoder.encode(frame):
            self._publish(packet)
        return picture

    def _flush(self) -> None:
        for packet in self.encoder.encode(None):
            self._publish(packet)

    def _publish(self, packet: av.Packet) -> None:
        data, now = bytes(packet), time.time_ns()
        number = self.context.packets.write(
            data, pts=packet.pts, dts=packet.dts, duration=packet.duration or 0,
            keyframe=packet.is_keyframe, time_ns=now,
        )  # fmt: skip
        if self.log is not None:
            line = {"number": number, "generation": self.generation, "data": data.hex(),
                    "keyframe": packet.is_keyframe, "pts": packet.pts, "time_ns": now}  # fmt: skip
            self.log.write(json.dumps(line) + "\n")
            self.log.flush()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class ClipCamera(Block):
    """A source: an MP4 file's packets as they are in it, in a loop, paced by their dts."""

    params = {"clip": Param(str, doc="an MP4 file with one video stream")}
    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        return 16

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int:
        return RING

    def setup(self) -> None:
        with av.open(self.config["clip"]) as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            tb = stream.time_base
            self.params = CodecParams(
                context.name, context.width, context.height, (tb.numerator, tb.denominator),
                bytes(context.extradata or b""),
            )  # fmt: skip
            self.packets = [
                (bytes(p), p.pts, p.dts, p.duration, p.is_keyframe)
                for p in container.demux(stream)
                if p.size
            ]
        self.tb = tb
        self.span = self.packets[-1][2] - self.packets[0][2] + (self.packets[-1][3] or 1)
        self.context.packets.set_params(self.params)
        self.loop, self.i, self.started = 0, 0, time.monotonic()

    def process(self, frames: list[np.ndarray]) -> np.ndarray | None:
        data, pts, dts, duration, key = self.packets[self.i]
        offset = self.loop * self.span
        due = self.started + float((dts + offset - self.packets[0][2]) * self.tb)
        if not self.context.sleep(max(0.0, due - time.monotonic())):
            return None
        self.context.packets.write(data, pts=pts + offset, dts=dts + offset,
                                   duration=duration or 0, keyframe=key)  # fmt: skip
        self.i += 1
        if self.i == len(self.packets):
            self.i, self.loop = 0, self.loop + 1
        return None


RECORD = struct.Struct("<IqqBIQ")  # size, pts, dts, keyframe, generation, wall-clock ns


class PacketDump(Block):
    """A sink of packets: appends each to ``path`` (a record, then its bytes), and writes
    each generation's codec parameters to ``path``.gN.json, for a test to read back."""

    params = {"path": Param(str, doc="where the packets go")}
    has_output = False

    @classmethod
    def input_kinds(cls, params, offered):
        return ["packets"]

    def setup(self) -> None:
        self.out = open(self.config["path"], "ab")  # noqa: SIM115 - closed in close()
        self.seen: set[int] = set()

    def process_packet(self, packet, codec) -> None:
        if packet.generation not in self.seen:
            self.seen.add(packet.generation)
            fields = json.loads(codec.to_bytes())
            Path(f"{self.config['path']}.g{packet.generation}.json").write_text(json.dumps(fields))
        head = RECORD.pack(
            len(packet.data), packet.pts, packet.dts, packet.keyframe, packet.generation,
            packet.time_ns,
        )  # fmt: skip
        self.out.write(head + packet.data)
        self.out.flush()

    def close(self) -> None:
        self.out.close()


def read_dump(path: str | Path) -> list[dict]:
    """The packets a PacketDump wrote: data, pts, dts, keyframe, generation, time_ns."""
    raw, at, packets = Path(path).read_bytes() if Path(path).exists() else b"", 0, []
    while at + RECORD.size <= len(raw):
        size, pts, dts, key, generation, time_ns = RECORD.unpack_from(raw, at)
        at += RECORD.size
        if at + size > len(raw):
            break  # being written
        data = raw[at : at + size]
        at += size
        packets.append(
            {"data": data, "pts": pts, "dts": dts, "keyframe": bool(key),
             "generation": generation, "time_ns": time_ns}
        )  # fmt: skip
    return packets
