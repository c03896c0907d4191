"""The relay through real Linux NAT (network namespaces): a real `aetherflow relay` process in
the public namespace, two SDK nodes each behind its own NAT.

Cone-like NAT: both learn their public address, punch to a direct path (the relay forwards
nothing), survive a conntrack flush, move onto the relay (its counters grow) and back (they
stop). Symmetric NAT: the punch fails and the relay counts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_sdk.testing import NatTopology, nat_available, nat_topology
from aetherflow_sdk.testing._nat import PUBLIC_ADDRESS

pytestmark = [pytest.mark.netns, pytest.mark.skipif(nat_available() is not None, reason=str(nat_available()))]

PEER = str(Path(__file__).with_name("_peer.py"))
AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))
RELAY_PORT = 3340
METRICS = "127.0.0.1:9465"


class Peer:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        hello = self.read()
        self.node_id: str = hello["node_id"]
        self.observed: tuple[str, int] = tuple(hello["observed"])

    def read(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the peer ended: {self.process.stderr.read() if self.process.stderr else ''}"
        return json.loads(line)

    def ask(self, **command: object) -> dict[str, object]:
        self.send(**command)
        answer = self.read()
        assert "error" not in answer, (command, answer)
        return answer

    def send(self, **command: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()


def _start(topo: NatTopology, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    relay = topo.public.popen(
        [AETHERFLOW, "relay", "--listen", f"{PUBLIC_ADDRESS}:{RELAY_PORT}", "--identity",
         str(tmp_path / "relay.key"), "--metrics", METRICS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert relay.stdout is not None
    line = relay.stdout.readline()
    assert line.startswith("relay "), line + (relay.stderr.read() if relay.stderr else "")
    from aetherflow_sdk._identity import parse_node_id

    relay_id = parse_node_id(line.split()[1]).hex()
    relay.stdout.readline()  # the metrics line
    return relay, relay_id


def _peer(side, relay_id: str) -> Peer:
    return Peer(
        side.host.popen(
            [sys.executable, PEER, PUBLIC_ADDRESS, str(RELAY_PORT), relay_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    )  # fmt: skip


def _metric(topo: NatTopology, name: str) -> float:
    url = f"http://{METRICS}/metrics"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    text = topo.public.run([sys.executable, "-c", code]).stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_cone_nat_punches_to_direct_survives_a_flush_and_moves_over_the_relay(tmp_path: Path) -> None:
    with nat_topology("cone", "cone") as topo:
        _, relay_id = _start(topo, tmp_path)
        a, b = _peer(topo.a, relay_id), _peer(topo.b, relay_id)
        assert a.observed[0] == topo.a.public_address and b.observed[0] == topo.b.public_address
        assert _metric(topo, "aetherflow_relay_clients") == 2
        punched = a.ask(cmd="punch", peer=b.node_id)
        assert punched["address"] == list(b.observed)  # B's public mapping, proven by its probe
        b.send(cmd="accept")
        a.ask(cmd="connect", address=punched["address"], peer=b.node_id)
        assert b.read()["peer"] == a.node_id
        a.ask(cmd="exchange", n=20)
        assert _metric(topo, "aetherflow_relay_relayed_packets_total") == 0  # direct: nothing relayed
        assert _metric(topo, "aetherflow_relay_punch_successes_total") == 1
        # NAT rebinding: both NATs forget every mapping mid-session; the connection carries on.
        topo.a.flush_conntrack()
        topo.b.flush_conntrack()
        a.ask(cmd="exchange", n=10)
        # Onto the relay: the same connection, the same session, through the relay's forwarding.
        b.ask(cmd="listen_relayed", peer=a.node_id)
        a.ask(cmd="to_relay")
        answer = a.ask(cmd="exchange", n=20)
        assert "RelayPath" in str(answer["path"])
        relayed = _metric(topo, "aetherflow_relay_relayed_packets_total")
        assert relayed >= 40
        # Back to the direct path: the relay's counters stop growing.
        a.ask(cmd="to_direct", address=list(b.observed))
        a.ask(cmd="exchange", n=20)
        after = _metric(topo, "aetherflow_relay_relayed_packets_total")
        assert after - relayed <= 4, (relayed, after)


def test_symmetric_nat_punching_fails_and_is_counted(tmp_path: Path) -> None:
    with nat_topology("symmetric", "symmetric") as topo:
        _, relay_id = _start(topo, tmp_path)
        a, b = _peer(topo.a, relay_id), _peer(topo.b, relay_id)
        assert a.observed[0] == topo.a.public_address and b.observed[0] == topo.b.public_address
        assert a.ask(cmd="punch", peer=b.node_id)["address"] is None
        assert _metric(topo, "aetherflow_relay_punch_attempts_total") == 1
        assert _metric(topo, "aetherflow_relay_punch_successes_total") == 0
