"""User blocks that raise events, loaded as ``userblocks.event_blocks:…`` by the event tests
and the events benchmark."""

from __future__ import annotations

import time

from pipelined.workers.block import Block, Param, in_range


class Every(Block):
    """A filter that passes its frames on and raises a ``tick`` moment every ``every``-th
    frame (the frame as its snapshot when ``snapshot``), and, with ``per_frame``, that many
    more: a block that raises as often as asked."""

    event_kinds = ("tick",)
    params = {
        "every": Param(int, default=10, check=in_range(1, 10**6)),
        "per_frame": Param(int, default=1, check=in_range(1, 10**6)),
        "snapshot": Param(bool, default=False),
        "kind": Param(str, default="tick"),
    }

    def setup(self) -> None:
        self.n = 0
        self.raised = self.dropped = 0

    def process(self, frames):
        self.n += 1
        if self.n % self.p["every"] == 0:
            for i in range(self.p["per_frame"]):
                frame = frames[0] if self.p["snapshot"] and i == 0 else None
                event_id = self.context.event(
                    self.p["kind"], "moment", score=float(self.n), frame=frame,
                    data={"frame": self.n, "i": i, "raised_at": time.time()},
                )  # fmt: skip
                if event_id is None:
                    self.dropped += 1
                else:
                    self.raised += 1
        return frames[0]


class Holds(Block):
    """A filter that starts a ``hold`` event at its first frame and never ends it: the
    daemon ends it for the block when its worker goes."""

    event_kinds = ("hold",)

    def setup(self) -> None:
        self.started = False

    def process(self, frames):
        if not self.started:
            self.started = bool(self.context.event("hold", "start", score=1.0))
        return frames[0]


class Garbage(Block):
    """A filter that writes lines that are no events straight onto its event pipe, as a
    block that meddles with the runtime might: counted, and never more than the rate."""

    params = {"per_frame": Param(int, default=100, check=in_range(1, 10**6))}

    def setup(self) -> None:
        import os

        sender = self.context._worker.events
        self.fd = sender.fd if sender is not None else None
        self.os = os

    def process(self, frames):
        if self.fd is not None:
            try:
                self.os.write(self.fd, b'{"t": "nonsense"}\n' * self.p["per_frame"])
            except BlockingIOError:
                pass
        return frames[0]
