"""An idle connection through a real Linux NAT (iptables MASQUERADE in a network namespace)
whose mapping changes: the next message still gets through, both ways (root only).

    client ns 10.79.1.2 ── 10.79.1.1  nat ns  10.79.2.1 ── 10.79.2.2 server ns
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_sdk.testing import netns_available, network_namespace, veth_pair

_reason = netns_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

PEER = Path(__file__).with_name("_nat_peer.py")
PORT = 4433


def test_an_idle_connection_survives_a_nat_rebinding_through_real_iptables_nat() -> None:
    with (
        network_namespace("qcl") as client_ns,
        network_namespace("qnat") as nat_ns,
        network_namespace("qsv") as server_ns,
        veth_pair(client_ns, nat_ns, address_a="10.79.1.2", address_b="10.79.1.1"),
        veth_pair(nat_ns, server_ns, address_a="10.79.2.1", address_b="10.79.2.2") as outer,
    ):
        client_ns.ip("route", "add", "default", "via", "10.79.1.1")
        nat_ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        nat_ns.run(
            ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", outer.name_a, "-p", "udp",
             "-j", "MASQUERADE", "--to-ports", "40000-40099"]
        )  # fmt: skip
        server = server_ns.popen(
            [sys.executable, str(PEER), "server", "10.79.2.2", str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        result = client_ns.run(
            [sys.executable, str(PEER), "client", "10.79.2.2", str(PORT), nat_ns.name], timeout=60
        )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        before_port = int(report["before"].rsplit(":", 1)[1])
        after_port = int(report["after"].rsplit(":", 1)[1])
        assert report["before"].startswith("before from 10.79.2.1:") and 40000 <= before_port < 40100
        # The server saw the new mapping, and its echo came back through it.
        assert report["after"].startswith("after from 10.79.2.1:") and 41000 <= after_port < 41100
