"""``aetherflow bench relay``: each scenario runs in small form and writes sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_node._cli import main

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))


def test_forwarding_runs_and_counts_every_frame(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    argv = [AETHERFLOW, "bench", "relay", "--peers", "4,6", "--processes", "2", "--duration", "1"]
    result = subprocess.run(
        [*argv, "--json", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["scenario"] == "forwarding"
    assert [run["peers"] for run in report["runs"]] == [4, 6]
    for run in report["runs"]:
        assert run["processes"] == 2 and run["clients_closed"] == 0
        assert run["sent"] > 0 and run["received"] + run["lost"] == run["sent"]
        # What arrived went through the relay, and the relay counted it (and any drop it made).
        assert 0 < run["received"] <= run["relay_forwarded"] <= run["sent"]
        assert run["relay_forwarded"] + sum(run["relay_drops"].values()) <= run["sent"]
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        assert run["relay_cpu_us_per_packet"] > 0 and run["relay_rss_mb"] > 0
    assert "p99 ms" in result.stdout and len(result.stdout.splitlines()) == 5  # title, header, 2 rows, goal


@pytest.mark.parametrize("peers", ["3", "2,x", "", "0"])
def test_bad_peer_counts_are_one_line_and_status_2(peers: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "relay", "--peers", peers]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--peers" in err


netns = pytest.mark.netns


def _nat_reason() -> str | None:
    from aetherflow_sdk.testing import nat_available

    return nat_available()


@netns
@pytest.mark.skipif(_nat_reason() is not None, reason=str(_nat_reason()))
def test_direct_scenario_times_a_start_to_a_direct_path(tmp_path: Path) -> None:
    out = tmp_path / "direct.json"
    argv = [AETHERFLOW, "bench", "relay", "--scenario", "direct", "--runs", "1", "--json", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["scenario"] == "direct"
    assert [run["method"] for run in report["runs"]] == ["punch", "upgrade", "node"]
    for run in report["runs"][:2]:  # the SDK's two ways
        assert run["direct"] and run["messages_received"] == 20
        assert run["relayed_packets_meanwhile"] == 0  # the messages went direct: the relay forwarded none
        parts = run["startup_s"] + run["registration_s"] + run["connect_s"] + run["to_direct_s"]
        assert 0 < parts == pytest.approx(run["start_to_direct_s"])
        assert run["start_to_connected_s"] <= run["start_to_direct_s"]
    node = report["runs"][2]  # an aetherflow node process that joined by ticket and logged its upgrade
    assert 0 < node["start_to_registered_s"] < node["start_to_direct_s"]
    assert node["ticket_direct_addresses"] >= 1


@netns
@pytest.mark.skipif(_nat_reason() is not None, reason=str(_nat_reason()))
def test_paths_scenario_compares_relayed_and_direct_latency(tmp_path: Path) -> None:
    out = tmp_path / "paths.json"
    argv = [AETHERFLOW, "bench", "relay", "--scenario", "paths", "--messages", "20", "--delay", "5",
            "--loss", "0", "--json", str(out)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["scenario"] == "paths"
    direct, relayed = report["direct"], report["relayed"]
    assert direct["received"] == relayed["received"] == 20  # no loss configured: every message arrives
    assert relayed["relayed_packets"] >= 20 and direct["relayed_packets"] <= 4  # which path carried it
    for path in (direct, relayed):
        assert 5 <= path["p50_ms"] <= path["p99_ms"] <= path["max_ms"]  # the link's 5 ms one way at least
    assert report["ratio"]["p50"] == pytest.approx(relayed["p50_ms"] / direct["p50_ms"])
