"""What leaves the box besides pictures: the MQTT bridge and the webhooks, as the graph says.

The daemon starts them after the store is open and before the blocks start (so the
first events have somewhere to go), gives them to the hub as sinks, and at a reload
replaces the ones whose table changed; the others carry on with their connections and
queues.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import commands
from ..graph import Graph

if TYPE_CHECKING:
    from ..app import Daemon
    from .hub import Sink


class Outlets:
    """The sinks of one daemon, by the graph's ``[mqtt]`` and ``[webhooks]``."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.mqtt: Sink | None = None
        self.webhooks: Sink | None = None
        self.graph: Graph | None = None

    def start(self, graph: Graph) -> None:
        self.graph = graph
        if graph.mqtt is not None:
            self.mqtt = self._bridge(graph)
        if graph.webhooks is not None:
            from .webhooks import Webhooks

            self.webhooks = self._add(Webhooks(graph.webhooks))

    def _bridge(self, graph: Graph) -> Sink:
        from .mqtt import MqttBridge

        assert graph.mqtt is not None  # asked for
        table = commands.table(self.daemon)

        async def command(verb: str, block: str) -> Any:
            return await table[verb]({"blocks": [block]})

        supervisor = self.daemon.supervisor
        bridge = MqttBridge(
            graph.mqtt, supervisor.names.instance, supervisor, self.daemon.hub, command
        )
        return self._add(bridge)

    def _add(self, sink: Any) -> Any:
        self.daemon.hub.sinks.append(sink)
        sink.start()
        return sink

    async def _drop(self, sink: Sink | None) -> None:
        if sink is not None:
            self.daemon.hub.sinks.remove(sink)
            await sink.close()

    async def reload(self, graph: Graph) -> None:
        """Replace what the new graph configures differently; keep the rest."""
        old = self.graph
        self.graph = graph
        if old is None or old.mqtt != graph.mqtt:
            await self._drop(self.mqtt)
            self.mqtt = self._bridge(graph) if graph.mqtt is not None else None
        if old is None or old.webhooks != graph.webhooks:
            await self._drop(self.webhooks)
            self.webhooks = None
            if graph.webhooks is not None:
                from .webhooks import Webhooks

                self.webhooks = self._add(Webhooks(graph.webhooks))
