"""A packet writer and a packet reader in their own processes, for tests/test_packets.py.

Every packet's bytes say which packet they are: a header of its number, its size and a
CRC-32 of the rest, then pseudo-random bytes from its number. A reader that finds a
packet whose bytes disagree with its header has been handed a torn packet. Each
``gop``-th packet is a keyframe. Roles print one JSON line when ready and one at the end.

    python packet_standins.py writer INSTANCE RUN BLOCK --packets N [--gop G] [--max-size B]
    python packet_standins.py reader INSTANCE RUN BLOCK INDEX [--sleep S] [--idle S]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import zlib

from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.packets import CodecParams, PacketReader, PacketWriter

HEADER = struct.Struct("<QII")  # number, size, crc32 of the body
PARAMS = CodecParams("h264", 64, 48, (1, 90000), extradata=b"\x01sps-pps")


def body(number: int, size: int) -> bytes:
    """The packet's bytes, made from its number alone."""
    rest = random.Random(number).randbytes(max(0, size - HEADER.size))
    return HEADER.pack(number, size, zlib.crc32(rest)) + rest


def intact(data: bytes, number: int) -> bool:
    if len(data) < HEADER.size:
        return False
    said, size, crc = HEADER.unpack_from(data)
    return said == number and size == len(data) and crc == zlib.crc32(data[HEADER.size :])


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def writer(names: RunNames, block: str, opts: argparse.Namespace) -> None:
    w = PacketWriter(names, block)
    w.set_params(PARAMS)
    say(ready=True)
    sizes = random.Random(7)
    for _ in range(opts.packets):
        n = w.packets + 1
        w.write(body(n, sizes.randint(HEADER.size, opts.max_size)), pts=n, dts=n,
                keyframe=n % opts.gop == 1)  # fmt: skip
    say(done=True, last=w.packets)
    w.close()


def reader(names: RunNames, block: str, opts: argparse.Namespace) -> None:
    r = PacketReader(names, block, opts.index)
    say(ready=True)
    numbers: list[int] = []
    torn = 0
    after_gap_not_key = 0
    previous = 0
    gaps = 0
    while True:
        packet = r.read(timeout=opts.idle)
        if packet is None:
            break
        torn += not intact(packet.data, packet.number)
        if previous and packet.number != previous + 1:
            gaps += 1
            after_gap_not_key += not packet.keyframe
        if not previous and not packet.keyframe:
            after_gap_not_key += 1  # the first packet must be a keyframe too
        previous = packet.number
        numbers.append(packet.number)
        if opts.sleep:
            import time

            time.sleep(opts.sleep)
    say(numbers=numbers, torn=torn, after_gap_not_key=after_gap_not_key, gaps=gaps,
        dropped=r.dropped, counted_gaps=r.gaps)  # fmt: skip
    r.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "reader"])
    parser.add_argument("instance")
    parser.add_argument("run")
    parser.add_argument("block")
    parser.add_argument("index", nargs="?", type=int, default=0)
    parser.add_argument("--packets", type=int, default=1000)
    parser.add_argument("--gop", type=int, default=10)
    parser.add_argument("--max-size", type=int, default=4000)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=3.0)
    opts = parser.parse_args()
    names = RunNames(opts.instance, opts.run)
    {"writer": writer, "reader": reader}[opts.role](names, opts.block, opts)


if __name__ == "__main__":
    sys.exit(main())
