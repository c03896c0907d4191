"""Prometheus metrics and a health endpoint for a relay: ``/metrics`` and ``/healthz``.

The collector reads only :class:`RelayStatistics`, always on the relay's event loop (the HTTP
server runs in a thread and asks the loop for a snapshot). The server is the node's
(:mod:`aetherflow_node._metrics`); only the collectors and the health answer are the relay's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aetherflow_node._metrics import caller_on_loop, serve_registry
from aetherflow_relay._core import RelayStatistics

if TYPE_CHECKING:
    from aetherflow_relay._shell import Relay


class RelayCollector(Collector):
    """Every field of :class:`RelayStatistics` as a Prometheus metric (``aetherflow_relay_*``)."""

    def __init__(self, statistics: Callable[[], RelayStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        yield GaugeMetricFamily("aetherflow_relay_clients", "Registered clients", value=s.clients)
        yield GaugeMetricFamily("aetherflow_relay_pending", "Connected, not yet registered", value=s.pending)
        yield GaugeMetricFamily("aetherflow_relay_queued_packets", "Packets waiting in client queues",
                                value=s.queued)  # fmt: skip
        yield CounterMetricFamily(
            "aetherflow_relay_registrations", "Registrations accepted", value=s.registrations
        )
        yield CounterMetricFamily("aetherflow_relay_relayed_packets", "Packets forwarded",
                                  value=s.forwarded_packets)  # fmt: skip
        yield CounterMetricFamily(
            "aetherflow_relay_relayed_bytes", "Bytes forwarded", value=s.forwarded_bytes
        )
        yield CounterMetricFamily("aetherflow_relay_punch_attempts", "Hole punches coordinated",
                                  value=s.punch_requests)  # fmt: skip
        yield CounterMetricFamily("aetherflow_relay_punch_successes", "Punches reported direct",
                                  value=s.punch_successes)  # fmt: skip
        yield CounterMetricFamily("aetherflow_relay_address_changes", "Client address changes seen",
                                  value=s.address_changes)  # fmt: skip
        drops = CounterMetricFamily(
            "aetherflow_relay_drops", "Datagrams and messages dropped", labels=["reason"]
        )
        for reason, count in sorted(s.drops.items()):
            drops.add_metric([reason], count)
        yield drops
        refused = CounterMetricFamily("aetherflow_relay_refused", "Requests refused", labels=["code"])
        for code, count in sorted(s.refused.items()):
            refused.add_metric([code.lower()], count)
        yield refused


def relay_health(relay: Relay, statistics: RelayStatistics) -> tuple[int, dict[str, Any]]:
    """The relay's ``/healthz`` answer: (HTTP status, JSON body)."""
    return 200, {"status": "ok", "uptime_seconds": round(time.monotonic() - relay.started, 3),
                 "clients": statistics.clients, "pending": statistics.pending}  # fmt: skip


@contextlib.asynccontextmanager
async def serve_relay_metrics(
    relay: Relay, host: str = "127.0.0.1", port: int = 9465
) -> AsyncIterator[tuple[str, int]]:
    """Serve the relay's ``/metrics`` and ``/healthz`` until the block ends; yields the bound address.

    The node's metrics server (:func:`aetherflow_node._metrics.serve_registry`) with the relay's
    collectors: the same HTTP endpoints, content negotiation and 503 when the loop is gone.
    """
    on_loop = caller_on_loop()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(lambda: on_loop(relay.statistics)))
    if relay.host is not None:  # the persistence peer's documents and storage
        from aetherflow_relay._serve import ServeCollector

        registry.register(ServeCollector(lambda: on_loop(relay.host.statistics)))  # type: ignore[union-attr]
    health = lambda: relay_health(relay, on_loop(relay.statistics))  # noqa: E731
    async with serve_registry(registry, health, host, port, owner="relay") as server:
        yield server.address
