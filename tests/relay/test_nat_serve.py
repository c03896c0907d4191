"""Offline catch-up through real Linux NATs: a real `aetherflow relay --data-dir` process in the
public namespace; the creator and the joiner, each in its own process behind its own symmetric NAT
(``MASQUERADE --random-fully``: they can never reach each other directly), are never online at the
same time. The joiner gets the creator's edits from the persistence peer, and the creator, back
later, gets the joiner's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_sdk.testing import nat_available, nat_topology
from aetherflow_sdk.testing._nat import PUBLIC_ADDRESS
from aetherflow_sdk.testing._netns import Namespace

pytestmark = [pytest.mark.netns, pytest.mark.skipif(nat_available() is not None, reason=str(nat_available()))]

CLI = [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())"]
HOLDER = str(Path(__file__).with_name("_holder.py"))
RELAY_PORT = 3340
METRICS = "127.0.0.1:9466"


def _holder(namespace: Namespace, *args: str) -> dict[str, str]:
    result = namespace.run(
        [sys.executable, HOLDER, *args], timeout=120, check=False,
        env={**os.environ, "HOLDER_LISTEN": "0.0.0.0:0"},
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    answer: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _metric(namespace: Namespace, name: str) -> float:
    url = f"http://{METRICS}/metrics"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    for line in namespace.run([sys.executable, "-c", code]).stdout.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the relay's /metrics")


def test_offline_catch_up_through_symmetric_nats(tmp_path: Path) -> None:
    with nat_topology("symmetric", "symmetric") as topo:
        relay = topo.public.popen(
            [*CLI, "relay", "--listen", f"{PUBLIC_ADDRESS}:{RELAY_PORT}",
             "--data-dir", str(tmp_path / "relay"), "--metrics", METRICS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert relay.stdout is not None
            first, second = relay.stdout.readline(), relay.stdout.readline()
            assert first.startswith("relay "), first
            assert f"on udp {PUBLIC_ADDRESS}:{RELAY_PORT + 1}" in second, second
            relay.stdout.readline()  # metrics
            where = f"{first.split()[1]}@{PUBLIC_ADDRESS}:{RELAY_PORT}"
            created = _holder(topo.a.host, str(tmp_path / "a"), where, "create", "notes", "from behind nat a")
            # The joiner has no relay of its own: it adopts the ticket's, and finds the persistence peer.
            joined = _holder(topo.b.host, str(tmp_path / "b"), "-", "open", created["ticket"],
                             "from behind nat a", "b: ")  # fmt: skip
            assert joined["text"] == "b: from behind nat a"
            back = _holder(topo.a.host, str(tmp_path / "a"), where, "open", created["doc_id"],
                           "b: from behind nat a")  # fmt: skip
            assert back["text"] == "b: from behind nat a"
            assert _metric(topo.public, "aetherflow_relay_documents_served") == 1
            # Neither holder was ever relayed to the other: no one else was online to forward to.
            assert _metric(topo.public, "aetherflow_relay_relayed_packets_total") == 0
        finally:
            relay.kill()
            relay.wait(timeout=10)
