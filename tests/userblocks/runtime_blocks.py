"""User blocks for the runtime and supervisor tests, loaded as ``userblocks.runtime_blocks:…``.

They do real work on real frames, small enough that a test graph of them runs on a busy
two-core machine.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelined.workers.block import Block, ConfigurationError, Param, in_range


class Counter(Block):
    """A source of small frames, each filled with its number modulo 251, paced to fps."""

    params = {
        "fps": Param(float, default=50.0, check=in_range(0.1, 10_000)),
        "side": Param(int, default=32, check=in_range(1, 4096)),
    }
    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params: dict[str, Any], input_bytes: Sequence[int]) -> int:
        return params["side"] ** 2 * 3

    def setup(self) -> None:
        self.n = 0
        self.next_at = time.monotonic()

    def output_like(self, frames):
        side = self.config["side"]
        return (side, side, 3), np.dtype(np.uint8)

    def process_into(self, frames, out) -> bool:
        self.next_at += 1.0 / self.config["fps"]
        if not self.context.sleep(max(0.0, self.next_at - time.monotonic())):
            return False
        self.n += 1
        out[...] = self.n % 251
        return True


class Invert(Block):
    """255 - frame: a filter with a result that can be checked."""

    def process(self, frames):
        return 255 - frames[0]


class Slow(Block):
    """Passes frames on, taking ``delay`` seconds over each: a block that cannot keep up."""

    params = {"delay": Param(float, default=0.05, check=in_range(0, 10))}

    def process(self, frames):
        time.sleep(self.config["delay"])
        return frames[0]


class Tally(Block):
    """A sink that writes how many frames it took, and the last value, to a file."""

    params = {"path": Param(str, doc="where to write 'count value'")}
    has_output = False
    max_inputs = None

    def setup(self) -> None:
        self.count = 0

    def process(self, frames):
        self.count += 1
        if self.count % 10 == 1:
            tmp = Path(self.config["path"] + ".tmp")
            tmp.write_text(f"{self.count} {int(frames[0].flat[0])} {os.getpid()}\n")
            tmp.replace(self.config["path"])
        return None


class _TinySource(Block):
    """A source of 16-byte frames that never gets to make one: its setup() fails."""

    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params, input_bytes):
        return 16


class CrashAtOnce(_TinySource):
    """A source that dies in set-up: the supervisor must give up on it."""

    def setup(self) -> None:
        raise RuntimeError("this block always crashes")


class Chatty(_TinySource):
    """A source that floods its stderr, then dies: a line of ``flood`` bytes without a
    newline, a progress bar drawn with carriage returns, and its last words."""

    params = {"flood": Param(int, default=32 << 20)}

    def setup(self) -> None:
        chunk = b"x" * 65536
        for _ in range(self.config["flood"] // len(chunk)):
            os.write(2, chunk)
        for i in range(1, 4):
            os.write(2, f"\rprogress {i}/3".encode())
        os.write(2, b"\r\nlast words\n")
        raise RuntimeError("flooded")


class NeedsHardware(_TinySource):
    """A source whose configuration cannot run here: FAILED at once, no restarts."""

    def setup(self) -> None:
        raise ConfigurationError("no frobnicator on this box; use a Counter instead")


class SecretProbe(Block):
    """Writes the password it was given to a file, so a test can see it arrived."""

    params = {
        "url": Param(str, doc="a URL with a password"),
        "password": Param(str, doc="a secret-named parameter"),
        "report": Param(str, doc="where to write what arrived"),
    }
    min_inputs = max_inputs = 0
    has_output = False

    def setup(self) -> None:
        Path(self.config["report"]).write_text(f"{self.config['url']}\n{self.config['password']}\n")

    def process(self, frames):
        self.context.sleep(0.2)
        return None


class Leaky(Block):
    """Says its secret parameters everywhere a block can: on stderr at start, in its
    waiting reason and its detail, and in its last words once ``crash_when`` exists."""

    params = {
        **{
            key: Param(str, doc="a secret, by its name")
            for key in ("password", "secret_key", "pwd", "passphrase", "auth", "credentials")
        },
        "apiKey": Param(str, doc="a secret, by its name"),
        "token": Param(str, doc="a secret, by its name"),
        "url": Param(str, doc="a URL with a password"),
        "crash_when": Param(str, doc="a file: the block crashes once it exists"),
    }
    min_inputs = max_inputs = 0
    has_output = False

    def _said(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "crash_when")

    def setup(self) -> None:
        print(f"my secrets: {self._said()}", file=sys.stderr, flush=True)
        self.context.detail(f"detail {self._said()}")
        self.context.waiting(f"waiting {self._said()}")

    def process(self, frames):
        if os.path.exists(self.config["crash_when"]):
            raise RuntimeError(f"dying with {self._said()}")
        self.context.sleep(0.1)
        return None


class PacketCounter(Counter):
    """A Counter that also publishes each frame's number as a packet, a keyframe every
    ``gop`` packets: encoded video in miniature, for the packet wire's plumbing."""

    params = {**Counter.params, "gop": Param(int, default=5, check=in_range(1, 1000))}

    @classmethod
    def packet_bytes(cls, params: dict[str, Any]) -> int:
        return 64 * 1024

    def setup(self) -> None:
        from pipelined.workers.ipc.packets import CodecParams

        super().setup()
        assert self.context.packets is not None, "the runtime gave no packet wire"
        self.context.packets.set_params(CodecParams("counter", 1, 1, (1, 1000)))

    def process_into(self, frames, out) -> bool:
        if not super().process_into(frames, out):
            return False
        packets = self.context.packets
        packets.write(self.n.to_bytes(8, "little"), pts=self.n, dts=self.n,
                      keyframe=self.n % self.config["gop"] == 1)  # fmt: skip
        return True


class PacketTally(Block):
    """A sink of packets: writes 'count first-number last-number gaps codec' to a file."""

    params = {"path": Param(str, doc="where to write the tally")}
    has_output = False

    @classmethod
    def input_kinds(cls, params, offered):
        return ["packets"]

    def setup(self) -> None:
        self.numbers: list[int] = []
        self.gaps = 0

    def process_packet(self, packet, codec) -> None:
        number = int.from_bytes(packet.data, "little")
        assert number == packet.pts, "a packet's bytes and its pts disagree"
        if self.numbers and number != self.numbers[-1] + 1:
            self.gaps += 1
        if not self.numbers:
            assert packet.keyframe, "the first packet a reader gets is a keyframe"
        self.numbers.append(number)
        if len(self.numbers) % 10 == 1:
            tmp = Path(self.config["path"] + ".tmp")
            line = f"{len(self.numbers)} {self.numbers[0]} {number} {self.gaps} {codec.codec}\n"
            tmp.write_text(line)
            tmp.replace(self.config["path"])


class Mirror(Block):
    """Returns a view of its input, flipped left to right: no copy of its own."""

    def process(self, frames):
        return frames[0][:, ::-1]


class Crop(Block):
    """Returns a view of a corner of its input: no copy of its own."""

    def process(self, frames):
        return frames[0][: frames[0].shape[0] // 2, : frames[0].shape[1] // 2]


class Uniform(Block):
    """A sink that counts frames in which not every byte is the same: torn frames, for a
    source that fills each frame with one value. Writes 'frames torn' to ``path``."""

    params = {"path": Param(str, doc="where to write the counts")}
    has_output = False

    def setup(self) -> None:
        self.frames = self.torn = 0

    def process(self, frames):
        frame = frames[0]
        whole = bool((frame == frame.flat[0]).all())
        if self.context.intact():  # a view the writer overwrote meanwhile: ours to drop
            self.frames += 1
            self.torn += not whole
            if self.frames % 20 == 1:
                tmp = Path(self.config["path"] + ".tmp")
                tmp.write_text(f"{self.frames} {self.torn}\n")
                tmp.replace(self.config["path"])
        return None
