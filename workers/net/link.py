"""The link: the box's one Zenoh session, in a worker process of its own.

The daemon adds it to a graph that publishes or reads remote wires, as a block named
``zenoh`` (``LINK_NAME``): supervised like any block (restarted if it crashes, stopped
with the graph), reading the published blocks' wires through reader slots of its own,
and writing the remote blocks' packet wires. It holds no user code and decodes nothing:
the remote blocks decode in their own processes, in parallel.

Every ``REPORT_EVERY`` seconds it writes a report (``ipc/report.py``) that status,
/metrics and the page show: the session's peers, and per remote wire its key, peer,
state, frames and bytes a second, drops and refusals. Its heartbeat counts samples in
(frames_in) and out (frames_out), and what was missed.

A link that goes down and comes back needs nothing from anyone: Zenoh reconnects (every
``connect`` endpoint is retried forever), the publishers resume at a keyframe, the
receivers wait for one. No block restarts. Control never travels here: pipectl reaches
another box through that box's own control socket (over ssh), never through Zenoh.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import zenoh

from ..ipc.heartbeat import Heartbeat
from ..ipc.packets import PacketReader, PacketWriter
from ..ipc.report import Report
from ..ipc.wire import WireReader
from ..runtime.worker import Worker
from .publish import Publisher, declare
from .settings import LinkPlan
from .subscribe import Receiver

log = logging.getLogger("pipelined.link")
LINK_NAME = "zenoh"
LINK_TYPE = "zenoh"
REPORT_EVERY = 0.5
THIS_BOX = "this box"
"""The peer of a remote wire whose other end is a block of this same graph (a box that
reads its own key): Zenoh delivers it within the session, over no link."""
REFUSING_FOR = 5.0
"""A remote wire whose last accepted sample is older than its last refusal, which is at
most this many seconds old, says it is refusing."""
ZENOH_LOG = (
    "warn,zenoh_transport::unicast::establishment=debug,"
    "zenoh_transport::unicast::establishment::open=info,zenoh_link_tls=info"
)
"""What of Zenoh's own log reaches the daemon's: warnings, and why a connection was refused
(junk on the port, a TLS peer without the right certificate), one line each. The accepting
side's debug also names each peer that connects (one long line a connection, beside the
refusals: Zenoh's filter cannot part them); the connecting side's says only that, again,
so it is left out."""


def open_session(plan: LinkPlan) -> zenoh.Session:
    """The box's Zenoh session, configured from the graph's ``[zenoh]`` table and its
    publications (``LinkPlan.config``)."""
    config = zenoh.Config()
    for path, value in plan.config().items():
        config.insert_json5(path, json.dumps(value))
    return zenoh.open(config)


def zid_bytes(zid: object) -> bytes:
    """A Zenoh id as the 16 bytes a header carries."""
    text = str(zid)
    return bytes.fromhex(text.zfill(32))[-16:]


def zid_text(raw: bytes) -> str:
    """Those 16 bytes as Zenoh prints the id (hex, no leading zeros)."""
    return raw.hex().lstrip("0") or "0"


class LinkWorker(Worker):
    """The link's process: the runtime's supervision, heartbeat and liveness, with a Zenoh
    session in place of a block."""

    def set_up(self) -> None:
        args = self.args
        self.heartbeat = Heartbeat.attach(self.names, args.block)
        self.beat(force=True)
        self.plan = LinkPlan.from_params(args.params)
        self.report = Report.attach(self.names, args.block)
        _zenoh_log_to_stderr()
        self.session = open_session(self.plan)
        sender = zid_bytes(self.session.zid())
        self.own_zid = zid_text(sender)
        # keys both published and read by this graph: their peer is this box itself
        self.keys_here = {s.key for s in self.plan.subscriptions} & {
            p.key for p in self.plan.publications.values()
        }
        self.publishers: list[Publisher] = []
        self.receivers: list[Receiver] = []
        self.link_readers: list[WireReader | PacketReader] = []
        self.packet_writers: list[PacketWriter] = []
        wires: list[tuple[str, WireReader | PacketReader]] = [
            (wire, WireReader(self.names, wire, index)) for wire, index in args.inputs
        ]
        wires += [
            (wire, PacketReader(self.names, wire, index)) for wire, index in args.packet_inputs
        ]
        for wire, reader in wires:
            self.link_readers.append(reader)
            publication = self.plan.publications[wire]
            publisher = Publisher(
                wire, publication, declare(self.session, publication), reader, sender
            )
            self.publishers.append(publisher)
        for subscription in self.plan.subscriptions:
            writer = PacketWriter(self.names, subscription.block)
            self.packet_writers.append(writer)
            receiver = Receiver(subscription, writer)
            receiver.declare(self.session)
            self.receivers.append(receiver)
        for publisher in self.publishers:
            publisher.start()
        self._next_report = 0.0
        self.detail = self._describe()

    def step(self) -> None:
        time.sleep(0.1)
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY
            self._write_report()

    def _write_report(self) -> None:
        peers = self._peers()
        wires = [self._publication(p, peers) for p in self.publishers]
        wires += [self._reception(r, peers) for r in self.receivers]
        self.report.publish(
            {
                "zid": str(self.session.zid()),
                "settings": self.plan.settings.describe(),
                "peers": [{"zid": z, "links": links} for z, links in peers.items()],
                "remote_wires": wires,
            }
        )
        self.frames_in = sum(r.stats.frames for r in self.receivers)
        self.frames_out = sum(p.stats.frames for p in self.publishers)
        self.stale = sum(p.stats.missed for p in self.publishers) + sum(
            r.stats.missed + r.stats.refused for r in self.receivers
        )
        if peers:
            self.set_waiting(None)
        else:
            self.set_waiting(self._lonely())

    def _peers(self) -> dict[str, list[str]]:
        """The connected peers' Zenoh ids, each with the addresses of its links."""
        peers: dict[str, list[str]] = {}
        for transport in self.session.info.transports():
            peers.setdefault(str(transport.zid), [])
        for link in self.session.info.links():
            peers.setdefault(str(link.zid), []).append(link.dst)
        return peers

    def _lonely(self) -> str:
        settings = self.plan.settings
        if settings.connect:
            return f"no peer connected yet: trying {', '.join(settings.connect)}"
        if settings.listen:
            return f"no peer connected yet: listening on {', '.join(settings.listen)}"
        return "no peer connected yet: scouting"

    def _publication(self, publisher: Publisher, peers: dict[str, list[str]]) -> dict[str, Any]:
        out = publisher.report()
        idle = publisher.stats.idle_for()
        here = publisher.publication.key in self.keys_here
        if not peers and not here:
            state = "no peer"  # before matching, which Zenoh may still say of a lost peer
        elif publisher.matched and idle is not None and idle < 2.0:
            state = "sending"
        elif not publisher.matched:
            state = "no subscriber"
        else:
            state = "idle"  # a subscriber, and nothing from the block to send
        addresses = sorted(a for links in peers.values() for a in links)
        if here:
            addresses.append(THIS_BOX)  # a remote block of this graph reads the key too
        out["state"] = state
        out["peer"] = ", ".join(addresses) if publisher.matched and addresses else None
        return out

    def _reception(self, receiver: Receiver, peers: dict[str, list[str]]) -> dict[str, Any]:
        sender = zid_text(receiver.sender) if receiver.sender else None
        links = peers.get(sender, []) if sender else []
        if sender is not None and sender == self.own_zid:
            links = [THIS_BOX]  # a block of this graph publishes the key
        out = receiver.report(", ".join(links) or sender)
        here = receiver.subscription.key in self.keys_here
        stats = receiver.stats
        idle = stats.idle_for()
        refused_ago = stats.refused_ago()
        stall = receiver.subscription.stall_timeout
        if (
            refused_ago is not None
            and refused_ago < REFUSING_FOR
            and (idle is None or idle > refused_ago)
        ):
            state = "refusing"
        elif idle is not None and idle < stall:
            state = "receiving"
        elif not peers and not here:
            state = "no peer"
        elif idle is None:
            state = "waiting for a publisher"
        else:
            state = f"stalled: nothing for {idle:.0f} s"
        out["state"] = state
        return out

    def _describe(self) -> str:
        plan = self.plan
        return (
            f"zenoh {plan.settings.describe()}; publishing {len(plan.publications)},"
            f" reading {len(plan.subscriptions)}"
        )

    def tear_down(self) -> None:
        for publisher in getattr(self, "publishers", []):
            publisher.stop()
        for receiver in getattr(self, "receivers", []):
            receiver.undeclare()
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
        for reader in getattr(self, "link_readers", []):
            reader.close()
        for writer in getattr(self, "packet_writers", []):
            writer.close()
        report = getattr(self, "report", None)
        if report is not None:
            report.close()
        super().tear_down()


def _zenoh_log_to_stderr() -> None:
    """Zenoh logs to stdout, which no one reads: make it stderr, the daemon's log."""
    os.environ.setdefault("NO_COLOR", "1")
    sys.stdout.flush()
    os.dup2(2, 1)
    zenoh.init_log_from_env_or(ZENOH_LOG)
