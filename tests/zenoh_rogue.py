"""A peer that sends what a box must refuse, for the remote-wire tests.

    python tests/zenoh_rogue.py ENDPOINT SECONDS KEY_H264 KEY_RAW

connects to ENDPOINT (a box's listening endpoint) as a plain Zenoh peer and, for
SECONDS, keeps putting under the box's keys: samples with no header, a header that is
not ours, the wrong kind, a raw frame whose bytes do not match its shape, a frame larger
than the block's, a frame of numpy objects, a second publisher's stream, and a
sample on a wildcard key that matches them. It also sends junk bytes straight to the
endpoint's TCP port first. It prints "sent N" at the end.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time

import zenoh

from pipelined.workers.net.header import _FIXED, MAGIC, Header


def junk(endpoint: str) -> None:
    """Two connections of junk, each refused by Zenoh in words of its own: one whose
    first batch is cut short ("Read error on TCP link"), one whose batch is no Zenoh
    message ("Decode error on link"). A TCP stream's first two bytes are a batch length:
    random junk is cut short or not by chance, which made the test flaky."""
    host, port = endpoint.split("/", 1)[1].rsplit(":", 1)
    short = (8192).to_bytes(2, "little") + secrets.token_bytes(4096)  # then the end
    undecodable = (64).to_bytes(2, "little") + b"\xff" * 64  # message id 31: none
    for data in (short, undecodable):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(data)
            time.sleep(0.2)


def bad_samples(h264: str, raw: str) -> list[tuple[str, bytes, bytes | None]]:
    now = time.time_ns()
    stream = secrets.randbits(62) + 1
    wrong_kind = Header(kind="jpeg", stream=stream, seq=1, time_ns=now, shape=(240, 320, 3))
    short = Header(kind="raw", stream=stream, seq=1, time_ns=now, shape=(240, 320, 3))
    large = Header(kind="raw", stream=stream, seq=2, time_ns=now, shape=(300, 320, 3))
    objects = bytearray(Header(kind="raw", stream=stream, seq=3, time_ns=now, shape=(4,)).pack())
    objects[_FIXED.size - 4 - 16 - 8 : _FIXED.size - 4 - 16] = b"|O".ljust(8, b"\0")
    second = Header(kind="raw", stream=stream + 1, seq=1, time_ns=now, shape=(240, 320, 3))
    version = bytearray(short.pack())
    version[4] = 99
    return [
        (h264, b"\x00\x00\x00\x01junk", None),
        (h264, b"frame", b"not a pipelined header at all"),
        (h264, b"\xff\xd8jpeg", wrong_kind.pack()),
        (raw, b"\x00" * 1000, short.pack()),
        (raw, b"\x00" * (300 * 320 * 3), large.pack()),
        (raw, b"\x00" * 32, bytes(objects)),
        (raw, b"\x00" * (240 * 320 * 3), second.pack()),
        (raw, b"\x00" * 100, bytes(version)),
        (h264.rsplit("/", 1)[0] + "/*", b"wild", short.pack()),
        (raw, json.dumps({"not": "a frame"}).encode(), MAGIC),
    ]


def main() -> None:
    endpoint, seconds, h264, raw = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    junk(endpoint)
    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("connect/endpoints", json.dumps([endpoint]))
    config.insert_json5("listen/endpoints", "[]")
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("transport/shared_memory/enabled", "false")
    sent = 0
    with zenoh.open(config) as session:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key, payload, attachment in bad_samples(h264, raw):
                session.put(key, payload, attachment=attachment)
                sent += 1
            time.sleep(0.2)
    print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
