"""Prometheus metrics and health over loopback HTTP, from real nodes; structured log formats."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aetherflow_node import open_node
from aetherflow_node._logging import configure_logging
from aetherflow_node._metrics import health_record, node_registry, parse_metrics_address, serve_metrics
from aetherflow_node._stats import DocumentStatistics, NodeStatistics
from aetherflow_sdk import LocalProtocolError

from ._helpers import loopback, wait_until


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def _scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A blocking HTTP client in a worker thread: the node's loop stays free to answer the scrape.
    status, content_type, body = await anyio.to_thread.run_sync(
        _get, f"http://{address[0]}:{address[1]}/metrics"
    )
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str
) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


async def test_scrape_over_http_counters_move_after_traffic(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="bob", **loopback()) as bob,  # type: ignore[arg-type]
        serve_metrics(alice.statistics, "127.0.0.1", 0) as metrics_a,
        serve_metrics(bob.statistics, "127.0.0.1", 0) as metrics_b,
    ):
        before = await _scrape(metrics_a.address)
        assert _value(before, "aetherflow_node_info", node_id=alice.node_id, name="alice") == 1
        assert _value(before, "aetherflow_node_running") == 1
        assert _value(before, "aetherflow_connections") == 0
        assert _value(before, "aetherflow_documents") == 0
        assert {_value(before, "aetherflow_peers", path=p) for p in ("lan", "direct", "relayed")} == {0}

        doc_a = await alice.open_document("notes")
        doc_a.insert(0, "hello")
        doc_b = await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
        await wait_until(lambda: doc_b.text == "hello", 10, "bob has alice's text", alice, bob)
        for i in range(20):
            doc_b.insert(len(doc_b.text), f" {i}")
        await wait_until(lambda: doc_a.text == doc_b.text, 10, "alice has bob's edits", alice, bob)
        await doc_a.flush()

        after = await _scrape(metrics_a.address)
        for counter in ("bytes_sent", "bytes_received", "datagrams_sent", "datagrams_received"):
            name = f"aetherflow_{counter}_total"
            assert _value(after, name) > _value(before, name), name
        assert _value(after, "aetherflow_connections") == 1
        assert _value(after, "aetherflow_connections_opened_total") >= 1
        assert _value(after, "aetherflow_documents") == 1
        assert _value(after, "aetherflow_document_updates_received_total", document="notes") >= 1
        assert _value(after, "aetherflow_document_storage_bytes", document="notes") > 0
        assert _value(after, "aetherflow_document_quota_refusals_total", document="notes") == 0
        peer = alice.peers[0]
        labels = {"peer": bob.node_id, "path": peer.path}
        assert _value(after, "aetherflow_peers", path=peer.path) == 1
        assert _value(after, "aetherflow_peer_rtt_seconds", **labels) > 0
        assert _value(after, "aetherflow_peer_bytes_received_total", **labels) > 0
        assert _value(after, "aetherflow_peer_documents", **labels) == 1
        assert ("aetherflow_peer_retransmits_total", tuple(sorted(labels.items()))) in after
        assert ("aetherflow_peer_fec_recoveries_total", tuple(sorted(labels.items()))) in after

        # Each node has its own registry: bob's endpoint shows bob, never alice.
        samples_b = await _scrape(metrics_b.address)
        assert _value(samples_b, "aetherflow_node_info", node_id=bob.node_id, name="bob") == 1
        assert ("aetherflow_node_info", (("name", "alice"), ("node_id", alice.node_id))) not in samples_b
        assert b"aetherflow_bytes_sent_total" in generate_latest(metrics_a.registry)


def test_metrics_and_health_on_asyncio(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice,  # type: ignore[arg-type]
            serve_metrics(alice.statistics, "127.0.0.1", 0) as metrics,
        ):
            await alice.open_document("notes")
            samples = await _scrape(metrics.address)
            assert _value(samples, "aetherflow_documents") == 1
            host, port = metrics.address
            status, content_type, body = await anyio.to_thread.run_sync(_get, f"http://{host}:{port}/healthz")
            assert status == 200 and content_type == "application/json"
            assert json.loads(body)["status"] == "ok"

    anyio.run(scenario, backend="asyncio")


async def test_health_is_json_200_while_running_503_when_stopping_404_elsewhere(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice:  # type: ignore[arg-type]
        running = True

        def statistics() -> NodeStatistics:
            import attrs

            return attrs.evolve(alice.statistics(), running=running)

        async with serve_metrics(statistics, "127.0.0.1", 0) as metrics:
            base = f"http://{metrics.address[0]}:{metrics.address[1]}"
            status, content_type, body = await anyio.to_thread.run_sync(_get, base + "/healthz")
            record = json.loads(body)
            assert (status, content_type) == (200, "application/json")
            assert (
                record["status"] == "ok" and record["node_id"] == alice.node_id and record["name"] == "alice"
            )
            assert record["connections"] == 0 and record["discovery"] is False
            running = False
            status, _, body = await anyio.to_thread.run_sync(_get, base + "/healthz")
            assert status == 503 and json.loads(body)["status"] == "stopping"
            status, _, body = await anyio.to_thread.run_sync(_get, base + "/nothing")
            assert status == 404 and "/metrics" in body
    assert health_record(None)[0] == 503


async def test_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as node,  # type: ignore[arg-type]
        serve_metrics(node.statistics, "127.0.0.1", 0) as first,
    ):
        with pytest.raises(
            LocalProtocolError, match=r"cannot serve metrics on 127\.0\.0\.1:\d+: the port is in use"
        ):
            async with serve_metrics(node.statistics, "127.0.0.1", first.address[1]):
                pass


def test_duplicate_document_names_get_distinct_labels() -> None:
    def document(name: str) -> DocumentStatistics:
        return DocumentStatistics(
            name=name,
            peers=0,
            pending_updates=2,
            sync_lag=0.5,
            updates_sent=0,
            updates_received=0,
            bad_messages=0,
            writes_denied=0,
        )

    stats = NodeStatistics(
        node_id="n",
        name="x",
        running=True,
        uptime=1.0,
        connections=0,
        connections_opened=0,
        connections_closed=0,
        reconnects=0,
        bytes_sent=0,
        bytes_received=0,
        datagrams_sent=0,
        datagrams_received=0,
        bad_packets=0,
        peers_dropped=0,
        messages_throttled=0,
        discovery_available=False,
        discovered_peers=0,
        documents=(document("notes"), document("notes")),
    )
    text = generate_latest(node_registry(lambda: stats)).decode()
    assert 'aetherflow_document_pending_updates{document="notes"} 2.0' in text
    assert 'aetherflow_document_pending_updates{document="notes#2"} 2.0' in text
    assert "aetherflow_sync_lag_seconds 0.5" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80))],
)
def test_parse_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:port", "host:70000"])
def test_parse_metrics_address_refuses(text: str) -> None:
    with pytest.raises(LocalProtocolError, match="expected HOST:PORT"):
        parse_metrics_address(text)


def _log_once(log_format: str, level: str = "info") -> list[str]:
    stream = io.StringIO()
    handler = configure_logging(log_format, level, stream=stream, logger_name="aetherflow.test_logs")
    log = logging.getLogger("aetherflow.test_logs.node")
    try:
        log.debug("not shown at info")
        log.info(
            'peer "bob" connected', extra={"peer": "abc def", "path": "lan", "rtt_ms": 1.5, "id": b"\x01"}
        )
        try:
            raise ValueError("boom")
        except ValueError:
            log.error("it failed", exc_info=True)
    finally:
        logging.getLogger("aetherflow.test_logs").removeHandler(handler)
    return stream.getvalue().splitlines()


def test_json_logs_one_object_per_line_with_fields() -> None:
    lines = _log_once("json")
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "info" and first["logger"] == "aetherflow.test_logs.node"
    assert first["msg"] == 'peer "bob" connected'
    assert (first["peer"], first["path"], first["rtt_ms"], first["id"]) == ("abc def", "lan", 1.5, "01")
    assert first["ts"].endswith("Z")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_kv_logs_quote_what_needs_it() -> None:
    lines = _log_once("kv")
    assert len(lines) == 2
    assert ' level=info logger=aetherflow.test_logs.node msg="peer \\"bob\\" connected" ' in lines[0]
    assert lines[0].endswith('peer="abc def" path=lan rtt_ms=1.5 id=01')
    assert lines[1].startswith("ts=") and "level=error" in lines[1] and 'exc="Traceback' in lines[1]
    assert "\\nValueError: boom" in lines[1]


def test_text_logs_and_levels() -> None:
    lines = _log_once("text", "info")
    assert len(lines) == 2
    assert lines[0].endswith(
        ' INFO aetherflow.test_logs.node: peer "bob" connected peer="abc def" path=lan rtt_ms=1.5 id=01'
    )
    assert len(_log_once("text", "debug")) == 3
    assert len(_log_once("json", "error")) == 1
    with pytest.raises(LocalProtocolError, match="unknown log format 'xml'; choose one of text, json, kv"):
        configure_logging("xml")
    with pytest.raises(LocalProtocolError, match="unknown log level"):
        configure_logging("json", "loud")
