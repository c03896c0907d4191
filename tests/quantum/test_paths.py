"""Paths on a virtual network and a virtual clock: NAT rebinding, active migration, per-path
datagram sizes, and a relayed path through an in-memory relay.

Every random choice takes a seed; a failure message names it.
"""

from __future__ import annotations

import pytest

from aetherflow_sdk._errors import LocalProtocolError, MessageTooLarge
from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._connection import PathMigrated, PathMigrationFailed
from tests.quantum._relay import RELAY_FRAME, InMemoryRelay, RelayPath
from tests.quantum._vnet import LinkProfile, VirtualNetwork

Address = tuple[str, int]

A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 5000)


def _pair(
    net: VirtualNetwork,
    client_config: QuantumConfig | None = None,
    server_config: QuantumConfig | None = None,
):
    client_ep = net.add_endpoint(A, config=client_config)
    server_ep = net.add_endpoint(B, config=server_config)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    return client_ep, server_ep, client, server_ep.accepted.popleft()


def _deliver(net, sender_ep, sender, receiver_ep, receiver, data: bytes, max_time: float) -> float:
    """Send one message and run until it arrives; the virtual time it took."""
    sender.send_message(data)
    sender_ep.mark_dirty(sender)
    start = net.now
    got: list[bytes] = []

    def arrived() -> bool:
        message = receiver.receive_message()
        if message is not None:
            got.append(message)
            receiver_ep.mark_dirty(receiver)
        return bool(got)

    net.run_until(arrived, max_time=max_time)
    assert got == [data], f"seed={net.seed}"
    return net.now - start


@pytest.mark.parametrize("seed", [81, 82, 83])
def test_an_idle_connection_whose_nat_rebinds_delivers_the_next_message_both_ways_within_a_second(
    seed: int,
) -> None:
    net = VirtualNetwork(seed, LinkProfile(delay=0.015))
    client_ep, server_ep, client, server = _pair(net)
    _deliver(net, client_ep, client, server_ep, server, b"before", max_time=5)
    # 20 s of silence (keepalives only), then the NAT hands the client a new source port.
    start = net.now
    net.run_until(lambda: net.now >= start + 20.0, max_time=21)
    assert not client.is_closed and not server.is_closed
    rebound = ("10.0.0.1", 41999)
    net.endpoints[rebound] = net.endpoints.pop(A)

    client.send_message(b"up")
    client_ep.mark_dirty(client)
    server.send_message(b"down")
    server_ep.mark_dirty(server)
    begin = net.now
    got_up: list[bytes] = []
    got_down: list[bytes] = []

    def both() -> bool:
        if (m := server.receive_message()) is not None:
            got_up.append(m)
        if (m := client.receive_message()) is not None:
            got_down.append(m)
        return bool(got_up) and bool(got_down)

    net.run_until(both, max_time=1.0)
    assert got_up == [b"up"] and got_down == [b"down"], f"seed={seed}"
    assert net.now - begin <= 1.0, f"seed={seed}: took {net.now - begin:.3f} s"
    assert server.peer_address == rebound
    net.run_until(lambda: server.statistics().path_migrations == 1 and server.path_validated, max_time=2)


# ---------------------------------------------------------------------------- middleboxes


class Forwarder:
    """A port forward: what reaches ``public`` goes on to ``target`` from ``inside``, and back.

    It gives a server a second address, so that a client can migrate between two paths to it.
    """

    def __init__(self, net: VirtualNetwork, *, public: Address, inside: Address, target: Address) -> None:
        self.public, self.inside, self.target = public, inside, target
        self._client: Address | None = None
        self._out: list[tuple[bytes, Address, Address]] = []
        net.endpoints[public] = self
        net.endpoints[inside] = self

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if source == self.target:
            if self._client is not None:
                self._out.append((data, self._client, self.public))
        else:
            self._client = source
            self._out.append((data, self.target, self.inside))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address, Address]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def _numbered(count: int, size: int) -> list[bytes]:
    return [index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4) for index in range(count)]


def _stream(net, sender_ep, sender, receiver_ep, receiver, messages, *, at=None, action=None, max_time=600.0):
    """Send ``messages`` in order; call ``action()`` once ``at`` of them arrived. The arrivals."""
    pending = list(messages)
    got: list[bytes] = []
    done = [False]

    def pump() -> bool:
        while pending and sender.can_send_message(len(pending[0])):
            sender.send_message(pending.pop(0))
        sender_ep.mark_dirty(sender)
        while (message := receiver.receive_message()) is not None:
            got.append(message)
            receiver_ep.mark_dirty(receiver)
        if action is not None and not done[0] and len(got) >= at:
            done[0] = True
            action()
        return len(got) == len(messages)

    net.run_until(pump, max_time=max_time)
    return got


# ---------------------------------------------------------------------------- tests


def test_each_side_sends_no_datagram_larger_than_the_peer_accepts() -> None:
    sizes: dict[Address, int] = {A: 0, B: 0}

    def record(data: bytes, source: Address, destination: Address) -> bool:
        if data[1] == 5:  # DATA packets (handshake packets have sizes of their own)
            sizes[source] = max(sizes[source], len(data))
        return False

    net = VirtualNetwork(84, LinkProfile(delay=0.01, drop_if=record))
    client_ep, server_ep, client, server = _pair(
        net, QuantumConfig(max_datagram_size=1400), QuantumConfig(max_datagram_size=1252)
    )
    assert client.max_packet_size == server.max_packet_size == 1252
    payload = bytes(200_000)
    _deliver(net, client_ep, client, server_ep, server, payload, max_time=30)
    _deliver(net, server_ep, server, client_ep, client, payload, max_time=30)
    assert sizes == {A: 1252, B: 1252}
    with pytest.raises(MessageTooLarge, match="1201-byte limit"):
        client.send_datagram(bytes(1202))


@pytest.mark.parametrize("seed", [91, 92])
def test_active_migration_mid_transfer_with_loss_on_both_paths(seed: int) -> None:
    net = VirtualNetwork(seed, LinkProfile(delay=0.010, loss=0.02, jitter=0.002, rate_bytes_per_s=10e6))
    second, inside = ("10.0.9.9", 7000), ("10.0.0.2", 5001)
    Forwarder(net, public=second, inside=inside, target=B)
    slow = LinkProfile(delay=0.030, loss=0.05, jitter=0.002, rate_bytes_per_s=5e6)
    net.links[(A, second)] = net.links[(second, A)] = slow
    client_ep, server_ep, client, server = _pair(net)
    messages = _numbered(3000, 1500)
    events: list[object] = []

    def move() -> None:
        client_ep.migrate(client, second, net.now)

    got = _stream(net, client_ep, client, server_ep, server, messages, at=1000, action=move)
    assert got == messages, f"seed={seed}: lost, duplicated or reordered"
    while (event := client.next_event()) is not None:
        events.append(event)
    assert PathMigrated(address=second, validated=True) in events, f"seed={seed}"
    assert client.peer_address == second and server.peer_address == inside
    assert not client.migrating
    net.run_until(lambda: server.path_validated, max_time=2)  # its PATH_CHALLENGE was answered
    # RFC 9000 §9.4: the new path's RTT was measured afresh (30 ms each way, not 10).
    assert client.statistics().min_rtt > 0.055, f"seed={seed}"
    # ... and the server sent the second half back the same way.
    back = _stream(net, server_ep, server, client_ep, client, messages[:300])
    assert back == messages[:300]


def test_migration_to_a_dead_address_gives_up_and_stays_on_the_old_path() -> None:
    net = VirtualNetwork(93, LinkProfile(delay=0.01))
    client_ep, server_ep, client, server = _pair(net)
    client_ep.migrate(client, ("10.9.9.9", 9), net.now)
    assert client.migrating
    net.run_until(lambda: not client.migrating, max_time=120)
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    assert PathMigrationFailed(address=("10.9.9.9", 9)) in events
    assert client.peer_address == B
    _deliver(net, client_ep, client, server_ep, server, b"still here", max_time=5)
    with pytest.raises(LocalProtocolError, match=r"1\.\.65535"):
        client_ep.migrate(client, ("10.0.0.2", 0), net.now)


def test_a_relayed_path_carries_ten_megabytes_then_the_connection_moves_to_direct() -> None:
    net = VirtualNetwork(94, LinkProfile(delay=0.010, loss=0.01, rate_bytes_per_s=20e6))
    relay_address = ("10.0.5.5", 3478)
    relay = InMemoryRelay(net, relay_address, mtu=1300)
    client_ep, server_ep, client, server = _pair(net)
    relay.register(client_ep.identity.node_id, A)
    relay.register(server_ep.identity.node_id, B)
    # The server side learns (from its relay client, later) that this peer may come through the relay.
    server_ep.add_path(RelayPath(relay_address, client_ep.identity.node_id, relay.mtu))
    to_server = RelayPath(relay_address, server_ep.identity.node_id, relay.mtu)
    client_ep.migrate(client, to_server, net.now)
    net.run_until(lambda: not client.migrating and server.peer_address == relay_address, max_time=10)
    assert client.path is to_server and client.max_packet_size == 1300 - RELAY_FRAME
    assert server.path_validated and server.max_packet_size == 1300 - RELAY_FRAME
    stats = client.statistics()
    assert (stats.path_address, stats.path_direct, stats.path_validated, stats.max_packet_size) == (
        relay_address,
        False,
        True,
        1300 - RELAY_FRAME,
    )

    messages = _numbered(1000, 10_000)  # 10 MB
    start_forwarded = relay.forwarded
    got = _stream(net, client_ep, client, server_ep, server, messages[:700])
    assert relay.forwarded - start_forwarded > 5000 and relay.oversized == 0
    assert server_ep.statistics().framed_datagrams_received > 5000

    def go_direct() -> None:
        client_ep.migrate(client, B, net.now)

    got += _stream(net, client_ep, client, server_ep, server, messages[700:], at=50, action=go_direct)
    assert got == messages, "a message was lost or duplicated across the move"
    assert client.peer_address == B and server.peer_address == A
    assert client.max_packet_size == server.max_packet_size == QuantumConfig().max_datagram_size
    forwarded = relay.forwarded
    _deliver(net, server_ep, server, client_ep, client, b"direct now", max_time=5)
    assert relay.forwarded == forwarded  # nothing goes through the relay any more


def test_raw_datagrams_share_the_socket_under_the_amplification_limit() -> None:
    net = VirtualNetwork(95, LinkProfile(delay=0.01))
    client_ep, server_ep, client, server = _pair(net)
    stranger = ("10.0.7.7", 7777)
    got: list[tuple[bytes, Address]] = []
    server_ep.receive_datagram(b"\x80 hello", stranger, net.now)  # no handler yet: dropped
    assert server_ep.statistics().raw_datagrams_dropped == 1
    server_ep.set_raw_handler(lambda data, address: got.append((data, address)))
    server_ep.receive_datagram(b"\x80" + bytes(99), stranger, net.now)
    assert got == [(b"\x80" + bytes(99), stranger)]
    # 1200 bytes unasked, plus 3x the 100 + 8 bytes the stranger sent.
    assert server_ep.send_raw(b"\x81" * 1000, stranger)
    assert server_ep.send_raw(b"\x81" * 500, stranger)
    assert not server_ep.send_raw(b"\x81" * 100, stranger)
    # The client's address is the proven path of a live connection: no limit.
    client_ep.set_raw_handler(lambda data, address: got.append((data, address)))
    for _ in range(10):
        assert server_ep.send_raw(b"\x82" * 1000, A)
    net.run_until(lambda: len(got) == 11, max_time=1)
    stats = server_ep.statistics()
    assert (stats.raw_datagrams_received, stats.raw_datagrams_sent, stats.raw_datagrams_refused) == (1, 12, 1)
    with pytest.raises(LocalProtocolError, match="first-byte rule"):
        server_ep.send_raw(b"\x01 looks like Quantum", A)
    with pytest.raises(LocalProtocolError, match="1 to 65507 bytes"):
        server_ep.send_raw(b"", A)
    # Quantum still flows, and a handler that raises costs only its datagram.
    server_ep.set_raw_handler(lambda data, address: 1 / 0)
    server_ep.receive_datagram(b"\x90", stranger, net.now)
    assert server_ep.statistics().raw_datagrams_dropped == 2
    _deliver(net, client_ep, client, server_ep, server, b"quantum", max_time=2)
