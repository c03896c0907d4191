"""send_raw's validated-address check is an index, kept in step with the connections' paths.

The rule it keeps: a raw datagram goes without limit to an address that is the validated
active path of a live connection here. The index must agree with that rule (checked against
a scan of every connection) through handshakes, migrations, NAT rebinding and closes, and a
thousand connections must not make one check look at a thousand connections.
"""

from __future__ import annotations

import pytest

from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._connection import QuantumConnection
from aetherflow_sdk.quantum._endpoint_core import RAW_UNSOLICITED_ALLOWANCE, EndpointCore
from tests.quantum._relay import InMemoryRelay, RelayPath
from tests.quantum._vnet import LinkProfile, VirtualNetwork

Address = tuple[str, int]
A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 5000)


def _scan(endpoint: EndpointCore, address: Address) -> bool:
    """The rule, by brute force (what the index replaces)."""
    return any(
        c.path_validated and c.peer_address == address and not c.is_closed
        for c in endpoint.connections.values()
    )


def _agrees(endpoint: EndpointCore, addresses: list[Address]) -> None:
    for address in addresses[::-1] + addresses:  # (a new address first: no stale entry repairs it)
        assert endpoint._validated_address(address) == _scan(endpoint, address), address


def test_a_thousand_connections_do_not_make_one_check_scan_them(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = EndpointCore(identity=Identity.generate(), config=QuantumConfig(), accept_connections=False)
    peers = [(f"10.1.{i // 250}.{i % 250 + 1}", 9000 + i) for i in range(1000)]
    for peer in peers:
        endpoint.connect(peer, 1000.0)
    endpoint.datagrams_to_send(1000.0)  # the INITIALs
    looked_at = 0
    real = QuantumConnection.path_validated

    def counting(self: QuantumConnection) -> bool:
        nonlocal looked_at
        looked_at += 1
        return bool(real.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(QuantumConnection, "path_validated", property(counting))
    # A raw datagram to each peer goes without limit (the client's first path is the address it dialled).
    for peer in peers:
        for _ in range(3):
            assert endpoint.send_raw(b"\x80" + bytes(999), peer)
    # One to an address no connection uses is limited, and looks at no connection at all.
    stranger = ("10.9.9.9", 9)
    assert endpoint.send_raw(b"\x80" + bytes(RAW_UNSOLICITED_ALLOWANCE - 1), stranger)
    assert not endpoint.send_raw(b"\x80", stranger)
    # 3,002 checks: each looked at the one connection behind its address, never at all 1,000.
    assert looked_at == 3 * len(peers)
    monkeypatch.undo()
    # A connection that closes leaves the index with it.
    closing = endpoint.connections[next(iter(endpoint.connections))]
    address = closing.peer_address
    closing.close(1001.0)  # before the handshake: CLOSED at once
    endpoint.mark_dirty(closing)
    endpoint.datagrams_to_send(1001.0)
    assert not endpoint._validated_address(address) and not _scan(endpoint, address)
    assert len(endpoint._validated) == len(endpoint._validated_at) == len(peers) - 1
    _agrees(endpoint, peers[:50])


@pytest.mark.parametrize("seed", [301, 302])
def test_the_index_follows_migration_rebinding_relays_and_closes(seed: int) -> None:
    net = VirtualNetwork(seed, LinkProfile(delay=0.010, loss=0.02))
    relay_address = ("10.0.5.5", 3478)
    relay = InMemoryRelay(net, relay_address, mtu=1300)
    client_ep = net.add_endpoint(A)
    server_ep = net.add_endpoint(B)
    relay.register(client_ep.identity.node_id, A)
    relay.register(server_ep.identity.node_id, B)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    server = server_ep.accepted.popleft()
    rebound = ("10.0.0.1", 41999)
    watched = [A, B, rebound, relay_address]
    _agrees(client_ep, watched)
    _agrees(server_ep, watched)
    assert server_ep._validated_address(A) and client_ep._validated_address(B)

    # To the relay and back: while relayed, the relay's address is the validated one.
    server_ep.add_path(RelayPath(relay_address, client_ep.identity.node_id, relay.mtu))
    client_ep.migrate(client, RelayPath(relay_address, server_ep.identity.node_id, relay.mtu), net.now)
    net.run_until(lambda: server.peer_address == relay_address and server.path_validated, max_time=20)
    net.run_until(lambda: not client.migrating, max_time=20)
    _agrees(client_ep, watched)
    _agrees(server_ep, watched)
    assert server_ep._validated_address(relay_address) and not server_ep._validated_address(A)
    client_ep.migrate(client, B, net.now)
    net.run_until(lambda: server.peer_address == A and server.path_validated, max_time=20)
    _agrees(server_ep, watched)
    assert not server_ep._validated_address(relay_address)

    # A NAT rebinding: the new address is not validated until it answers a challenge.
    net.endpoints[rebound] = net.endpoints.pop(A)
    client.send_message(b"after the rebinding")
    client_ep.mark_dirty(client)
    net.run_until(lambda: server.peer_address == rebound, max_time=10)
    _agrees(server_ep, watched)
    net.run_until(lambda: server.path_validated, max_time=10)
    _agrees(server_ep, watched)
    assert server_ep._validated_address(rebound) and not server_ep._validated_address(A)

    # A close: once the connections are gone, nothing is validated any more.
    client.close(net.now)
    client_ep.mark_dirty(client)
    net.run_until(lambda: not client_ep.connections and not server_ep.connections, max_time=60)
    for endpoint in (client_ep, server_ep):
        _agrees(endpoint, watched)
        assert not endpoint._validated and not endpoint._validated_at
