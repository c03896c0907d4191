"""The relay serves the node's metrics server and logs in the node's formats (a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio
import pytest

from aetherflow_node._relay_client import open_relay_client
from aetherflow_sdk import quantum
from aetherflow_sdk._identity import parse_node_id

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))


def _get(url: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read().decode()


async def _register(address: tuple[str, int], relay_id: bytes, metrics: str) -> str:
    async with (
        quantum.open_endpoint(("127.0.0.1", 0)) as endpoint,
        open_relay_client(endpoint, address, relay_id=relay_id),
    ):
        return await anyio.to_thread.run_sync(lambda: _get(f"{metrics}/metrics")[2])


def test_metrics_health_and_kv_logs_of_a_relay_process() -> None:
    relay = subprocess.Popen(
        [AETHERFLOW, "relay", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--log-format", "kv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert relay.stdout is not None
        first = relay.stdout.readline().split()
        relay_id = parse_node_id(first[1])
        host, port = first[-1].rsplit(":", 1)
        metrics = relay.stdout.readline().split()[-1].removesuffix("/metrics")
        status, _, body = _get(f"{metrics}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["clients"] == 0
        text = anyio.run(_register, (host, int(port)), relay_id, metrics)
        assert "aetherflow_relay_clients 1.0" in text  # read while the client was registered
        # The node's server: OpenMetrics when asked for it, and a 404 that says where to look.
        status, content_type, body = _get(f"{metrics}/metrics", "application/openmetrics-text")
        assert content_type.startswith("application/openmetrics-text") and body.rstrip().endswith("# EOF")
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(f"{metrics}/nothing")
        assert missing.value.code == 404
    finally:
        relay.terminate()
        _, err = relay.communicate(timeout=20)
    lines = [line for line in err.splitlines() if "client connected" in line]
    assert lines and lines[0].startswith("ts=") and " level=info logger=aetherflow.relay " in lines[0], err
    assert 'msg="client connected"' in lines[0] and " node=" in lines[0]


@pytest.mark.parametrize("argv", [["--log-level", "loud"], ["--log-format", "xml"]])
def test_a_bad_log_setting_is_one_line_and_status_2(argv: list[str]) -> None:
    result = subprocess.run(
        [AETHERFLOW, "relay", "--listen", "127.0.0.1:0", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "log" in result.stderr, result.stderr
