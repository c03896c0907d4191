"""Prometheus metrics and a health endpoint for one node (``--metrics HOST:PORT``).

Each node has its own ``CollectorRegistry`` (several nodes can live in one
process) holding one custom collector, :class:`NodeCollector`. It keeps no state
of its own: at every scrape it takes a fresh :class:`NodeStatistics` snapshot and
turns it into metric families, so what Prometheus sees is exactly what
``node.statistics()`` says. prometheus_client writes the exposition format.

The HTTP server is the standard library's threading server, run in an anyio
worker thread. A scrape never touches the node from that thread: it asks the
node's own event loop for the snapshot (``anyio.from_thread.run_sync`` with the
loop's token), because a node's documents (pycrdt) belong to its loop.

``GET /metrics``  the Prometheus text format (or OpenMetrics, by ``Accept``)
``GET /healthz``  JSON; 200 while the node runs, 503 while it shuts down or when
                  its loop no longer answers
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from aetherflow_node._stats import PATHS, NodeStatistics
from aetherflow_sdk._errors import LocalProtocolError

__all__ = [
    "LoopGone",
    "MetricsServer",
    "NodeCollector",
    "caller_on_loop",
    "health_record",
    "node_registry",
    "parse_metrics_address",
    "serve_metrics",
    "serve_registry",
]

logger = logging.getLogger("aetherflow.metrics")

T = TypeVar("T")

PREFIX = "aetherflow"


def _document_labels(names: Iterable[str]) -> list[str]:
    """Document names as label values, made unique (two documents may share a label)."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return labels


class NodeCollector(Collector):
    """Reads ``statistics()`` at scrape time and yields metric families from it alone."""

    def __init__(self, statistics: Callable[[], NodeStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        stats = self._statistics()
        yield from self._node(stats)
        yield from self._peers(stats)
        yield from self._documents(stats)

    def _node(self, s: NodeStatistics) -> Iterator[Metric]:
        info = InfoMetricFamily(f"{PREFIX}_node", "This node's identity.")
        info.add_metric([], {"node_id": s.node_id, "name": s.name})
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_node_running", "1 while the node runs.", value=int(s.running))
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the node started.", value=s.uptime)
        yield GaugeMetricFamily(f"{PREFIX}_connections", "Quantum connections open now.", value=s.connections)
        counters = [
            ("connections_opened", "Connections established (dialled or accepted).", s.connections_opened),
            ("connections_closed", "Connections that ended, for any reason.", s.connections_closed),
            ("reconnects", "Reconnection attempts to peers that went away.", s.reconnects),
            ("bytes_sent", "Bytes the node's socket sent.", s.bytes_sent),
            ("bytes_received", "Bytes the node's socket received.", s.bytes_received),
            ("datagrams_sent", "UDP datagrams sent.", s.datagrams_sent),
            ("datagrams_received", "UDP datagrams received.", s.datagrams_received),
            ("bad_packets", "Datagrams dropped as malformed, unauthenticated or unknown.", s.bad_packets),
            ("peers_dropped", "Peers disconnected for breaking the protocol.", s.peers_dropped),
            ("messages_throttled", "Messages delayed or dropped by per-peer limits.", s.messages_throttled),
            ("punch_attempts", "Hole punches asked of the home relay.", s.punch_attempts),
            ("punch_successes", "Hole punches that proved a direct route.", s.punch_successes),
            ("path_upgrades", "Relayed peer links moved to a direct path.", s.path_upgrades),
            ("relayed_connects", "Connections dialled through the home relay.", s.relayed_connects),
        ]
        for name, help_text, value in counters:
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            f"{PREFIX}_discovery_available", "1 when mDNS discovery runs.", value=int(s.discovery_available)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_discovered_peers", "Peers seen on the LAN by mDNS now.", value=s.discovered_peers
        )
        by_path = GaugeMetricFamily(f"{PREFIX}_peers", "Connected peers, by path.", labels=["path"])
        for path in (*PATHS, *sorted({p.path for p in s.peers} - set(PATHS))):
            by_path.add_metric([path], sum(1 for p in s.peers if p.path == path))
        yield by_path

    def _peers(self, s: NodeStatistics) -> Iterator[Metric]:
        labels = ["peer", "path"]

        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_peer_{name}", help_text, labels=labels)

        def counter(name: str, help_text: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_peer_{name}", help_text, labels=labels)

        rtt = gauge("rtt_seconds", "Smoothed round-trip time to the peer (RFC 6298).")
        loss = gauge("loss_ratio", "Fraction of packets to the peer declared lost.")
        documents = gauge("documents", "Documents synced with the peer now.")
        sent = counter("bytes_sent", "Bytes on the wire sent to the peer.")
        received = counter("bytes_received", "Bytes on the wire received from the peer.")
        packets = counter("packets_sent", "DATA packets sent to the peer.")
        lost = counter("packets_lost", "Packets to the peer declared lost.")
        retransmits = counter("retransmits", "Lost packets whose content went again.")
        fec = counter("fec_recoveries", "The peer's packets rebuilt from FEC parity.")
        for p in s.peers:
            key = [p.node_id, p.path]
            rtt.add_metric(key, p.smoothed_rtt)
            loss.add_metric(key, p.loss)
            documents.add_metric(key, p.documents)
            sent.add_metric(key, p.bytes_sent)
            received.add_metric(key, p.bytes_received)
            packets.add_metric(key, p.packets_sent)
            lost.add_metric(key, p.packets_lost)
            retransmits.add_metric(key, p.packets_retransmitted)
            fec.add_metric(key, p.fec_recovered_packets)
        yield from (rtt, loss, documents, sent, received, packets, lost, retransmits, fec)

    def _documents(self, s: NodeStatistics) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_documents", "Documents open now.", value=len(s.documents))
        yield GaugeMetricFamily(
            f"{PREFIX}_sync_lag_seconds",
            "The largest sync lag over all open documents (0 when all are in sync).",
            value=max((d.sync_lag for d in s.documents), default=0.0),
        )
        labels = ["document"]
        lag = GaugeMetricFamily(
            f"{PREFIX}_document_sync_lag_seconds", "Age of the oldest unacknowledged update.", labels=labels
        )
        pending = GaugeMetricFamily(
            f"{PREFIX}_document_pending_updates", "Local updates not yet acknowledged.", labels=labels
        )
        peers = GaugeMetricFamily(f"{PREFIX}_document_peers", "Peers the document syncs with.", labels=labels)
        sent = CounterMetricFamily(
            f"{PREFIX}_document_updates_sent", "Updates sent (per link).", labels=labels
        )
        applied = CounterMetricFamily(
            f"{PREFIX}_document_updates_received", "Updates received that changed it.", labels=labels
        )
        bad = CounterMetricFamily(
            f"{PREFIX}_document_bad_messages", "Messages dropped as malformed.", labels=labels
        )
        denied = CounterMetricFamily(
            f"{PREFIX}_document_writes_denied", "Writes from read-only peers dropped.", labels=labels
        )
        stored = GaugeMetricFamily(
            f"{PREFIX}_document_storage_bytes", "Bytes in the node's store (snapshot + log).", labels=labels
        )
        over_quota = CounterMetricFamily(
            f"{PREFIX}_document_quota_refusals", "Remote updates refused at the byte quota.", labels=labels
        )
        for label, d in zip(_document_labels(d.name for d in s.documents), s.documents, strict=True):
            lag.add_metric([label], d.sync_lag)
            pending.add_metric([label], d.pending_updates)
            peers.add_metric([label], d.peers)
            sent.add_metric([label], d.updates_sent)
            applied.add_metric([label], d.updates_received)
            bad.add_metric([label], d.bad_messages)
            denied.add_metric([label], d.writes_denied)
            stored.add_metric([label], d.storage_bytes)
            over_quota.add_metric([label], d.quota_refusals)
        yield from (lag, pending, peers, sent, applied, bad, denied, stored, over_quota)


def node_registry(statistics: Callable[[], NodeStatistics]) -> CollectorRegistry:
    """A registry of its own for one node, holding only that node's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(statistics))
    return registry


def health_record(stats: NodeStatistics | None) -> tuple[int, dict[str, Any]]:
    """The health answer: (HTTP status, JSON body). ``None``: the node's loop did not answer."""
    if stats is None:
        return 503, {"status": "unavailable", "reason": "the node's event loop did not answer"}
    body = {
        "status": "ok" if stats.running else "stopping",
        "node_id": stats.node_id,
        "name": stats.name,
        "uptime_seconds": round(stats.uptime, 3),
        "connections": stats.connections,
        "peers": len(stats.peers),
        "documents": len(stats.documents),
        "discovery": stats.discovery_available,
    }
    return (200 if stats.running else 503), body


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as given to ``--metrics``; raises LocalProtocolError."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise LocalProtocolError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port_text)


Health = Callable[[], tuple[int, dict[str, Any]]]
"""A health check: (HTTP status, JSON body); it may raise :class:`LoopGone`."""


class LoopGone(Exception):
    """The event loop that owns the statistics did not answer a snapshot request."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: Health, owner: str
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.health = health
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failing scrape is logged, never printed as a bare traceback on stderr.
        logger.exception("metrics request from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "aetherflow"
    timeout = 10  # a client that stops sending cannot hold a thread for long

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        gone = f"the {self.server.owner}'s event loop did not answer"
        if path == "/metrics":
            try:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(self.server.registry)
            except LoopGone:
                self._send(503, "text/plain; charset=utf-8", f"{gone}\n".encode())
                return
            self._send(200, content_type, body)
        elif path == "/healthz":
            try:
                status, record = self.server.health()
            except LoopGone:
                status, record = 503, {"status": "unavailable", "reason": gone}
            self._send(status, "application/json", json.dumps(record).encode() + b"\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics %s " + format, self.client_address[0], *args)


class MetricsServer:
    """A running metrics and health endpoint (see :func:`serve_metrics`)."""

    def __init__(self, server: _Server, registry: CollectorRegistry) -> None:
        self._server = server
        self.registry = registry
        """The node's own registry (scrape it in-process with ``generate_latest``)."""

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)


def caller_on_loop() -> Callable[[Callable[[], T]], T]:
    """Called on an event loop: a function that runs ``fn()`` on that loop from any thread.

    From another thread it waits for the loop (``anyio.from_thread.run_sync``) and raises
    :class:`LoopGone` once the loop has ended. A scrape reads a node's or a relay's state
    this way, never from the HTTP server's thread.
    """
    token = anyio.lowlevel.current_token()
    loop_thread = threading.get_ident()

    def on_loop(fn: Callable[[], T]) -> T:
        if threading.get_ident() == loop_thread:
            return fn()
        try:
            return anyio.from_thread.run_sync(fn, token=token)
        except anyio.RunFinishedError as exc:
            raise LoopGone from exc

    return on_loop


@contextlib.asynccontextmanager
async def serve_registry(
    registry: CollectorRegistry, health: Health, host: str, port: int, *, owner: str = "node"
) -> AsyncIterator[MetricsServer]:
    """Serve ``registry`` at ``/metrics`` and ``health`` at ``/healthz`` on HOST:PORT until the
    block ends (a node's, a relay's: ``owner`` names it in the 503 answers).

    A port in use or an address that cannot be bound raises LocalProtocolError with one clear line.
    """
    try:
        server = _Server((host, port), registry, health, owner)
    except OSError as exc:
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise LocalProtocolError(f"cannot serve metrics on {host}:{port}: {why}") from None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve, server)
            try:
                yield MetricsServer(server, registry)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(server.shutdown)
    finally:
        server.server_close()


@contextlib.asynccontextmanager
async def serve_metrics(
    statistics: Callable[[], NodeStatistics], host: str = "127.0.0.1", port: int = 9464
) -> AsyncIterator[MetricsServer]:
    """Serve ``/metrics`` and ``/healthz`` for one node on HOST:PORT until the block ends.

    ``statistics`` is the node's ``statistics`` method; it is always called on the
    caller's event loop. A port in use or an address that cannot be bound raises
    LocalProtocolError with one clear line.
    """
    on_loop = caller_on_loop()

    def snapshot() -> NodeStatistics:
        return on_loop(statistics)

    async with serve_registry(
        node_registry(snapshot), lambda: health_record(snapshot()), host, port, owner="node"
    ) as server:
        yield server


async def _serve(server: _Server) -> None:
    # serve_forever checks for shutdown every poll_interval: two wake-ups a second at idle.
    await anyio.to_thread.run_sync(lambda: server.serve_forever(poll_interval=0.5))
