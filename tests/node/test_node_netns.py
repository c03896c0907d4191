"""Nodes in network namespaces (root only): found on the LAN by mDNS, or through a peer given
by address when there is no multicast. Each node is its own process (tests/node/_node_peer.py);
the joiner's ticket carries no address, so only discovery (or --peer) can bring them together.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aetherflow_sdk.testing import Namespace, netns_available, network_namespace, veth_pair

from .test_discovery_netns import Peer

_reason = netns_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

NODE = Path(__file__).with_name("_node_peer.py")
HOLDER_TEXT = "hello from the holder"
JOINER_TEXT = " and the joiner"


class NodeProcess(Peer):
    """A node process in a namespace, read line by line (the discovery peer's reader, reused)."""

    def __init__(self, ns: Namespace, backend: str, role: str, data: Path, host: str, port: int, *extra: str):
        argv = [sys.executable, str(NODE), backend, role, str(data), host, str(port), role, *extra]
        super().__init__(ns, backend, 0, port, role, argv=argv)


@pytest.fixture
def veth_namespaces() -> Iterator[tuple[Namespace, Namespace, Any]]:
    with (
        network_namespace("nda") as ns_a,
        network_namespace("ndb") as ns_b,
        veth_pair(ns_a, ns_b, address_a="10.78.10.1", address_b="10.78.10.2") as pair,
    ):
        yield ns_a, ns_b, pair


def _sync(holder: NodeProcess, joiner: NodeProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    holder.expect(lambda r: r["event"] == "ready", "ready")
    joiner.expect(lambda r: r["event"] == "ready", "ready")
    ticket = holder.expect(lambda r: r["event"] == "ticket", "a ticket")["ticket"]
    joiner.send({"ticket": ticket})
    joined = joiner.expect(lambda r: r["event"] == "joined", "the holder's text")
    print(f"joiner had the holder's text {joined['seconds']:.2f} s after opening the ticket")
    done_j = joiner.expect(lambda r: r["event"] == "synced", "synced")
    done_h = holder.expect(lambda r: r["event"] == "synced", "the joiner's edit")
    assert done_h["text"] == done_j["text"] == HOLDER_TEXT + JOINER_TEXT
    return done_h, done_j


def test_two_node_processes_find_each_other_over_veth_and_sync(
    veth_namespaces: tuple[Namespace, Namespace, Any], tmp_path: Path
) -> None:
    ns_a, ns_b, pair = veth_namespaces
    holder = NodeProcess(
        ns_a, "trio", "holder", tmp_path / "a", pair.address_a, 0, "--interface", pair.address_a
    )
    joiner = NodeProcess(
        ns_b, "asyncio", "joiner", tmp_path / "b", pair.address_b, 0, "--interface", pair.address_b
    )
    done_h, done_j = _sync(holder, joiner)
    assert done_h["discovery_available"] and done_j["discovery_available"]
    assert [path for _, path in done_j["peers"]] == ["lan"]
    for process in (holder, joiner):
        _, stderr = process.quit()
        assert "LAN discovery is off" not in stderr and "Traceback" not in stderr


def test_without_multicast_one_notice_and_sync_through_a_manual_peer(
    veth_namespaces: tuple[Namespace, Namespace, Any], tmp_path: Path
) -> None:
    ns_a, ns_b, pair = veth_namespaces
    for ns in (ns_a, ns_b):  # discovery bound to a loopback that is down and has no address: ENODEV
        ns.ip("link", "set", "lo", "down")
        ns.ip("addr", "flush", "dev", "lo")
    holder = NodeProcess(
        ns_a, "trio", "holder", tmp_path / "a", pair.address_a, 4600, "--interface", "127.0.0.1"
    )
    joiner = NodeProcess(
        ns_b,
        "asyncio",
        "joiner",
        tmp_path / "b",
        pair.address_b,
        0,
        "--interface",
        "127.0.0.1",
        "--peer",
        f"{pair.address_a}:4600",
    )
    done_h, done_j = _sync(holder, joiner)
    assert not done_h["discovery_available"] and not done_j["discovery_available"]
    for process in (holder, joiner):
        _, stderr = process.quit()
        notices = [line for line in stderr.splitlines() if "LAN discovery is off" in line]
        assert len(notices) == 1, stderr
        assert "Traceback" not in stderr
