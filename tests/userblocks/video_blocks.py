"""User blocks for the video tests, loaded as ``userblocks.video_blocks:…``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from pipelined.workers.block import Block, Param

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
        self.out = open(self.p["path"], "ab")  # noqa: SIM115 - closed in close()
        self.seen: set[int] = set()

    def process_packet(self, packet, codec) -> None:
        if packet.generation not in self.seen:
            self.seen.add(packet.generation)
            fields = json.loads(codec.to_bytes())
            Path(f"{self.p['path']}.g{packet.generation}.json").write_text(json.dumps(fields))
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
