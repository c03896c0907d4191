"""Prometheus metrics and a health endpoint for a relay: ``/metrics`` and ``/healthz``.

The collector reads only :class:`RelayStatistics`, always on the relay's event loop (the HTTP
server runs in a thread and asks the loop for a snapshot).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aetherflow_relay._core import RelayStatistics
from aetherflow_sdk._errors import LocalProtocolError

if TYPE_CHECKING:
    from aetherflow_relay._shell import Relay

logger = logging.getLogger("aetherflow.relay.metrics")


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


class _LoopGone(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: Callable[[], Any]
    ) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(
                    200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.server.registry)
                )
            elif path == "/healthz":
                self._send(200, "application/json", json.dumps(self.server.health()).encode() + b"\n")
            else:
                self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")
        except _LoopGone:
            self._send(503, "text/plain", b"the relay's event loop did not answer\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics " + format, *args)


@contextlib.asynccontextmanager
async def serve_relay_metrics(
    relay: Relay, host: str = "127.0.0.1", port: int = 9465
) -> AsyncIterator[tuple[str, int]]:
    """Serve the relay's ``/metrics`` and ``/healthz`` until the block ends; yields the bound address."""
    token = anyio.lowlevel.current_token()
    loop_thread = threading.get_ident()

    def on_loop(fn: Callable[[], Any]) -> Any:
        if threading.get_ident() == loop_thread:
            return fn()
        try:
            return anyio.from_thread.run_sync(fn, token=token)
        except anyio.RunFinishedError as exc:
            raise _LoopGone from exc

    def health() -> dict[str, Any]:
        s: RelayStatistics = on_loop(relay.statistics)
        return {"status": "ok", "uptime_seconds": round(time.monotonic() - relay.started, 3),
                "clients": s.clients, "pending": s.pending}  # fmt: skip

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(lambda: on_loop(relay.statistics)))
    if relay.host is not None:  # the persistence peer's documents and storage
        from aetherflow_relay._serve import ServeCollector

        registry.register(ServeCollector(lambda: on_loop(relay.host.statistics)))  # type: ignore[union-attr]
    try:
        server = _Server((host, port), registry, health)
    except OSError as exc:
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise LocalProtocolError(f"cannot serve metrics on {host}:{port}: {why}") from None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, lambda: server.serve_forever(poll_interval=0.5))
            try:
                bound = server.server_address
                yield str(bound[0]), int(bound[1])
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(server.shutdown)
    finally:
        server.server_close()
