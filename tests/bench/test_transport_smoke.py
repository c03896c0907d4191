"""Smoke test of ``aetherflow bench transport`` (root only): a tiny workload on the emulated link."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetherflow_node._cli import main
from aetherflow_node.bench._report import percentile
from aetherflow_sdk.testing import netns_available

_reason = netns_available()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7


def test_user_mistake_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "transport", "--contenders", "carrier-pigeon", "--loopback"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown contender 'carrier-pigeon'" in err


@pytest.mark.netns
@pytest.mark.skipif(_reason is not None, reason=_reason or "")
def test_tiny_run_on_the_emulated_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    status = main(
        [
            "bench", "transport",
            "--contenders", "tcp-cubic,tcp-bbr",
            "--delay-ms", "5", "--loss", "0.02", "--seed", "3",
            "--count", "20", "--msg-rate", "100", "--bulk-mb", "1",
            "--timeout", "60",
            "--json", str(out), "--plot", str(plot),
        ]
    )  # fmt: skip
    table = capsys.readouterr().out
    assert status == 0, table
    records = json.loads(out.read_text())
    assert [(r["contender"], r["condition"]["workload"]) for r in records] == [
        ("tcp-cubic", "messages"),
        ("tcp-bbr", "messages"),
        ("tcp-cubic", "bulk"),
        ("tcp-bbr", "bulk"),
    ]
    for record in records:
        assert record["error"] is None
        assert record["complete"] and record["received"] == record["sent"]
        assert record["condition"]["delay_ms"] == 5 and record["condition"]["loss"] == 0.02
        assert record["wire_ratio"] > 1.0  # headers and ACKs cost something
        assert isinstance(record["retransmits"], int)
        assert record["dropped_loss"] >= 0 and record["dropped_queue"] >= 0
    messages = [r for r in records if r["condition"]["workload"] == "messages"]
    for record in messages:
        assert record["sent"] == 20 and record["app_bytes"] == 20 * 200
        latency = record["latency_ms"]
        # One way can never beat the configured delay; p50 <= p90 <= p99 <= max.
        assert 5.0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    for record in (r for r in records if r["condition"]["workload"] == "bulk"):
        assert record["app_bytes"] >= 1_000_000 and record["goodput_mbit"] > 0
    assert "tcp-bbr" in table and "messages 5ms 2% loss" in table
    assert plot.stat().st_size > 0


def test_two_docs_needs_the_emulated_link(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "transport", "--workload", "two-docs", "--loopback"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "emulated link" in err


@pytest.mark.netns
@pytest.mark.skipif(_reason is not None, reason=_reason or "")
def test_tiny_two_documents_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two-docs.json"
    status = main(
        [
            "bench", "transport", "--workload", "two-docs",
            "--delay-ms", "5", "--loss", "0.02", "--rate-mbit", "20", "--seed", "3",
            "--count", "20", "--msg-rate", "50", "--step2-mb", "0.3", "--timeout", "60",
            "--json", str(out),
        ]
    )  # fmt: skip
    table = capsys.readouterr().out
    assert status == 0, table
    records = json.loads(out.read_text())
    assert [r["contender"] for r in records] == ["edits-alone", "two-channels", "one-channel"]
    for record in records:
        assert record["error"] is None and record["complete"] and record["received"] == 20
        assert 5.0 <= record["latency_ms"]["p50"] <= record["latency_ms"]["max"]
    alone, channels, one = records
    assert alone["goodput_mbit"] is None  # no step 2 in the baseline
    assert channels["goodput_mbit"] > 0 and one["goodput_mbit"] > 0
    assert "two-docs 5ms 2% loss 20Mbit/s" in table
