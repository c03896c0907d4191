"""A handshake through a framed path: two nodes with no direct route meet through a relay.

Both endpoints are registered at an in-memory relay; the direct link between them drops
everything (two symmetric NATs). The client dials with ``connect_path`` (the handshake, its
RETRY answer and every later packet are wrapped in relay frames); the server takes the new
connection through ``accept_paths`` (a path back to the frame's sender) and pins its node ID.
Seeded, on the virtual clock.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aetherflow_sdk._errors import HandshakeFailed, LocalProtocolError
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._endpoint_core import EndpointCore
from aetherflow_sdk.quantum._states import ConnectionState
from aetherflow_sdk.quantum._wire import PacketType
from tests.quantum._relay import (
    FROM_PEER,
    RELAY_FRAME,
    RELAY_MAGIC,
    InMemoryRelay,
    RelayPath,
    relay_path_for,
)
from tests.quantum._vnet import LinkProfile, VirtualNetwork

Address = tuple[str, int]
A = ("10.0.1.1", 4000)
B = ("10.0.2.2", 5000)
R = ("10.0.5.5", 3478)
MTU = 1300


def _blocked(data: bytes, source: Address, destination: Address) -> bool:
    return True


def _setup(seed: int, loss: float = 0.0) -> tuple[VirtualNetwork, InMemoryRelay, EndpointCore, EndpointCore]:
    net = VirtualNetwork(seed, LinkProfile(delay=0.010, loss=loss, jitter=0.002))
    relay = InMemoryRelay(net, R, mtu=MTU)
    client_ep = net.add_endpoint(A, accept=False)
    server_ep = net.add_endpoint(B)
    relay.register(client_ep.identity.node_id, A)
    relay.register(server_ep.identity.node_id, B)
    net.links[(A, B)] = net.links[(B, A)] = LinkProfile(drop_if=_blocked)  # no direct route
    server_ep.accept_paths(R, relay_path_for(R, MTU))
    return net, relay, client_ep, server_ep


def _relayed(seed: int, loss: float = 0.0):
    net, relay, client_ep, server_ep = _setup(seed, loss)
    server_id = server_ep.identity.node_id
    to_server = RelayPath(R, server_id, MTU)
    client = client_ep.connect_path(to_server, net.now, peer_id=server_id)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    server = server_ep.accepted.popleft()
    return net, relay, client_ep, server_ep, client, server


def _exchange(net, sender_ep, sender, receiver_ep, receiver, messages: list[bytes], max_time: float = 120):
    for message in messages:
        sender.send_message(message)
    sender_ep.mark_dirty(sender)
    got: list[bytes] = []

    def all_there() -> bool:
        while (message := receiver.receive_message()) is not None:
            got.append(message)
            receiver_ep.mark_dirty(receiver)
        return len(got) == len(messages)

    net.run_until(all_there, max_time=max_time)
    return got


@pytest.mark.parametrize("seed", [401, 402, 403])
def test_a_handshake_through_the_relay_with_loss_then_messages_both_ways(seed: int) -> None:
    net, relay, client_ep, server_ep, client, server = _relayed(seed, loss=0.05)
    server_ep_id, client_id = server_ep.identity.node_id, client_ep.identity.node_id
    assert client.peer_id == server_ep_id and server.peer_id == client_id, f"seed={seed}"
    assert isinstance(server.path, RelayPath) and server.path.peer_id == client_id
    assert not client.path.is_direct and client.peer_address == server.peer_address == R
    assert client.max_packet_size == server.max_packet_size == MTU - RELAY_FRAME
    # Nothing went directly (the link dropped it all), nothing was over the relay's MTU.
    assert relay.oversized == 0 and relay.forwarded > 0
    up = [f"up {i} ".encode() * 300 for i in range(40)]
    down = [f"down {i} ".encode() * 200 for i in range(40)]
    assert _exchange(net, client_ep, client, server_ep, server, up) == up, f"seed={seed}"
    assert _exchange(net, server_ep, server, client_ep, client, down) == down, f"seed={seed}"
    assert relay.oversized == 0
    stats = server_ep.statistics()
    assert stats.framed_datagrams_received > 40 and stats.peer_id_mismatches == 0
    assert stats.retries_sent >= 1  # the RETRY went through the relay (there was no other way)
    # The path is the connection's: forgotten with it, on both sides.
    client.close(net.now)
    client_ep.mark_dirty(client)
    net.run_until(lambda: not client_ep.connections and not server_ep.connections, max_time=120)
    assert not client_ep._framed_paths and not server_ep._framed_paths
    assert not client_ep._path_users and not server_ep._path_users


def test_the_retry_answer_goes_back_through_the_path_wrapped() -> None:
    net, relay, client_ep, server_ep = _setup(410)
    server_id = server_ep.identity.node_id
    seen: list[tuple[bytes, Address]] = []
    relay_receive = relay.receive_datagram

    def spy(data: bytes, source: Address, now: float) -> None:
        seen.append((data, source))
        relay_receive(data, source, now)

    relay.receive_datagram = spy  # type: ignore[method-assign]
    client = client_ep.connect_path(RelayPath(R, server_id, MTU), net.now, peer_id=server_id)
    net.run_until(lambda: client.is_established, max_time=10)
    from_server = [data for data, source in seen if source == B]
    from_client = [data for data, source in seen if source == A]
    # INITIAL, RETRY, INITIAL + cookie, SERVER_HELLO, CLIENT_FINISH: each one a relay frame.
    assert len(from_client[0]) == RELAY_FRAME + 1200  # the padded INITIAL fits the relay's MTU
    assert from_server[0][RELAY_FRAME + 1] == PacketType.RETRY and len(from_server[0]) < 200  # wrapped
    assert all(data[0] == RELAY_MAGIC for data, _ in seen)
    assert server_ep.statistics().retries_sent == 1 and server_ep.statistics().invalid_cookies == 0


def test_a_forged_sender_is_refused_by_the_server_and_a_forged_server_by_the_client() -> None:
    net, relay, client_ep, server_ep = _setup(420)
    server_id = server_ep.identity.node_id
    # A node registered as P at the relay proves another identity in the handshake.
    forger_at = ("10.0.3.3", 6000)
    forger_ep = net.add_endpoint(forger_at, accept=False)
    pretended = Identity.generate().node_id
    relay.register(pretended, forger_at)
    forged = forger_ep.connect_path(RelayPath(R, server_id, MTU), net.now, peer_id=server_id)
    net.run_until(lambda: forged.state is ConnectionState.CLOSED or forged.is_closed, max_time=30)
    stats = server_ep.statistics()
    assert stats.peer_id_mismatches == 1 and not server_ep.accepted
    assert forged.error is not None and "refused" in str(forged.error.reason)
    assert pretended.hex()[:16] in str(forged.error.reason)
    net.run_until(lambda: not server_ep.connections, max_time=30)

    # The relay routes "node X" to another node, C: the client pinned X, so C's proof fails it.
    impostor_at = ("10.0.4.4", 7000)
    impostor_ep = net.add_endpoint(impostor_at)
    impostor_ep.accept_paths(R, relay_path_for(R, MTU))
    impostor_target = Identity.generate().node_id
    relay.register(impostor_target, impostor_at)
    client = client_ep.connect_path(RelayPath(R, impostor_target, MTU), net.now, peer_id=impostor_target)
    net.run_until(lambda: client.is_closed, max_time=30)
    assert isinstance(client.error, HandshakeFailed), client.error
    # An honest client still gets in afterwards.
    honest = client_ep.connect_path(RelayPath(R, server_id, MTU), net.now, peer_id=server_id)
    net.run_until(lambda: honest.is_established and bool(server_ep.accepted), max_time=30)
    assert server_ep.accepted.popleft().peer_id == client_ep.identity.node_id


def test_connect_path_checks_its_arguments() -> None:
    endpoint = EndpointCore(identity=Identity.generate(), config=QuantumConfig(), accept_connections=False)
    peer = Identity.generate().node_id
    with pytest.raises(LocalProtocolError, match="needs peer_id"):
        endpoint.connect_path(RelayPath(R, peer, MTU), 0.0)
    with pytest.raises(LocalProtocolError, match="is not the node"):
        endpoint.connect_path(RelayPath(R, peer, MTU), 0.0, peer_id=Identity.generate().node_id)
    with pytest.raises(LocalProtocolError, match="the handshake needs 1200"):
        endpoint.connect_path(RelayPath(R, peer, 1200), 0.0, peer_id=peer)
    with pytest.raises(LocalProtocolError, match=r"quantum\.Path"):
        endpoint.connect_path(R, 0.0, peer_id=peer)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="plain function"):
        endpoint.accept_paths(R, "not callable")  # type: ignore[arg-type]
    assert not endpoint.connections and not endpoint._framed_paths


@pytest.mark.parametrize("seed", [431, 432])
def test_a_connection_that_began_relayed_moves_to_direct_and_back_keeping_its_messages(seed: int) -> None:
    net, relay, client_ep, server_ep, client, server = _relayed(seed, loss=0.01)
    del net.links[(A, B)], net.links[(B, A)]  # the punch found a route
    to_server = client.path
    client.channels.open(b"doc")
    client_ep.mark_dirty(client)
    messages = [f"message {i:04d} ".encode() * 100 for i in range(300)]
    got = _exchange(net, client_ep, client, server_ep, server, messages[:100])
    assert server.channels.open_count == 1
    # Move to direct with messages in flight.
    for message in messages[100:200]:
        client.send_message(message)
    client_ep.migrate(client, B, net.now)
    got += _drain(net, server_ep, server, 100)
    net.run_until(lambda: not client.migrating and server.peer_address == A, max_time=20)
    assert client.path.is_direct and server.path.is_direct, f"seed={seed}"
    # And back to the relay (as when the NAT forgets the route), again mid-stream.
    for message in messages[200:]:
        client.send_message(message)
    client_ep.migrate(client, to_server, net.now)
    got += _drain(net, server_ep, server, 100)
    assert got == messages, f"seed={seed}: lost, duplicated or reordered across the moves"
    net.run_until(lambda: not client.migrating and server.peer_address == R, max_time=20)
    assert client.path is to_server and client.statistics().path_migrations == 2
    # The channel opened before the moves is still open on both sides.
    assert client.channels.open_count == server.channels.open_count == 1
    # Direct for good: the relay carries nothing more.
    client_ep.migrate(client, B, net.now)
    net.run_until(lambda: server.peer_address == A and client.peer_address == B, max_time=20)
    forwarded = relay.forwarded
    assert _exchange(net, server_ep, server, client_ep, client, [b"direct now"]) == [b"direct now"]
    assert relay.forwarded == forwarded


def _drain(net, receiver_ep, receiver, count: int) -> list[bytes]:
    got: list[bytes] = []

    def enough() -> bool:
        while (message := receiver.receive_message()) is not None:
            got.append(message)
            receiver_ep.mark_dirty(receiver)
        return len(got) >= count

    net.run_until(enough, max_time=120)
    return got


def _frame_from(sender: bytes, packet: bytes) -> bytes:
    return bytes((RELAY_MAGIC, FROM_PEER, 0, 0)) + sender + bytes(24) + packet


def test_bad_datagrams_through_a_relay_are_dropped_and_counted_and_no_path_is_kept() -> None:
    net, _relay, client_ep, server_ep, client, server = _relayed(440)
    kept = list(server_ep._framed_paths[R])
    stranger = Identity.generate().node_id
    before = server_ep.statistics()
    header_like = bytes((9, 4)) + bytes(40)  # an unknown version: not a Quantum header
    net.inject(_frame_from(stranger, b"\x00" * 10), R, B)  # too short for a header
    net.inject(_frame_from(stranger, header_like), R, B)
    # A well-formed DATA header for a connection that does not exist: not an INITIAL, dropped.
    data_packet = client_ep.datagrams_to_send(net.now)  # (nothing pending: an empty list)
    assert data_packet == []
    client.send_message(b"probe")
    client_ep.mark_dirty(client)
    framed = client_ep.datagrams_to_send(net.now)[0][0]
    quantum_packet = bytearray(framed[RELAY_FRAME:])
    quantum_packet[4:20] = bytes(16)  # another destination connection ID
    net.inject(_frame_from(stranger, bytes(quantum_packet)), R, B)
    # A corrupted packet for the real connection, from its real peer: the connection drops it.
    corrupted = bytearray(framed[RELAY_FRAME:])
    corrupted[-1] ^= 0xFF
    net.inject(_frame_from(client_ep.identity.node_id, bytes(corrupted)), R, B)
    net.run_until(lambda: server.statistics().bad_packets >= 1, max_time=5)
    after = server_ep.statistics()
    assert after.framed_datagrams_dropped == before.framed_datagrams_dropped + 3
    assert after.unknown_connection == before.unknown_connection + 1
    assert server.statistics().bad_packets >= 1
    assert server_ep._framed_paths[R] == kept  # nothing from the stranger was kept
    assert not server.is_closed and server.peer_id == client_ep.identity.node_id


def test_a_flood_of_initials_through_the_relay_keeps_no_state() -> None:
    net, _relay, _client_ep, server_ep = _setup(450)
    server_id = server_ep.identity.node_id
    maker = EndpointCore(identity=Identity.generate(), config=QuantumConfig(), accept_connections=False)
    offered = 0
    path_for = relay_path_for(R, MTU)

    def counting(datagram: bytes) -> RelayPath | None:
        nonlocal offered
        offered += 1
        return path_for(datagram)

    server_ep.accept_paths(R, counting)
    for _ in range(400):
        maker.connect_path(RelayPath(R, server_id, MTU), net.now, peer_id=server_id)
    initials = [data for data, _ in maker.datagrams_to_send(net.now)]
    assert len(initials) == 400
    for i, data in enumerate(initials):
        sender = i.to_bytes(2, "big") * 16  # 400 different "nodes" behind the relay
        server_ep.receive_datagram(_frame_from(sender, data[RELAY_FRAME:]), R, net.now)
    stats = server_ep.statistics()
    assert offered == 400 and stats.retries_sent == 400
    assert not server_ep.connections and not server_ep._framed_paths and not server_ep._path_users
    assert len(server_ep._stateless_out) == 400  # bounded by MAX_STATELESS_QUEUE, drained per send
    # A forged cookie opens nothing either.
    server_ep.datagrams_to_send(net.now)
    assert stats.active_connections == 0
    # And stopping: accept_paths(None) hands the relay's frames to the raw handler again.
    server_ep.accept_paths(R, None)
    server_ep.receive_datagram(_frame_from(b"\x01" * 32, initials[0][RELAY_FRAME:]), R, net.now)
    assert offered == 400 and server_ep.statistics().raw_datagrams_dropped == 1


def test_a_peer_that_moves_onto_the_relay_is_followed_through_an_offered_path() -> None:
    net, _relay, client_ep, server_ep = _setup(460)
    del net.links[(A, B)], net.links[(B, A)]
    client = client_ep.connect(B, net.now, peer_id=server_ep.identity.node_id)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=10)
    server = server_ep.accepted.popleft()
    # A forged packet "from the client" with the connection's CID but no valid seal: not kept.
    client.send_message(b"sealed")
    client_ep.mark_dirty(client)
    real = bytearray(client_ep.datagrams_to_send(net.now)[0][0])
    real[-1] ^= 0xFF
    server_ep.receive_datagram(_frame_from(client_ep.identity.node_id, bytes(real)), R, net.now)
    assert R not in server_ep._framed_paths and server.statistics().bad_packets == 1
    assert _drain(net, server_ep, server, 1) == [b"sealed"]  # the real one, resent directly
    # The client moves onto the relay; the server registered no path for it, accept_paths offers one.
    client_ep.migrate(client, RelayPath(R, server_ep.identity.node_id, MTU), net.now)
    net.run_until(lambda: not client.migrating, max_time=10)
    moved = [b"through the relay"]
    assert _exchange(net, client_ep, client, server_ep, server, moved) == moved
    net.run_until(lambda: server.peer_address == R and server.path_validated, max_time=10)
    assert isinstance(server.path, RelayPath) and server.path.peer_id == client_ep.identity.node_id
    assert len(server_ep._framed_paths[R]) == 1  # kept once, for this connection
    client.close(net.now)
    client_ep.mark_dirty(client)
    net.run_until(lambda: not server_ep.connections, max_time=60)
    assert not server_ep._framed_paths


@pytest.fixture(scope="module")
def relayed_pair():
    return _relayed(470)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=1400), sender=st.sampled_from(["peer", "stranger"]), mutate=st.booleans())
def test_any_bytes_through_the_relay_are_taken_or_dropped_never_raise(
    relayed_pair, payload, sender, mutate
) -> None:
    net, _relay, client_ep, server_ep, _client, server = relayed_pair
    source = client_ep.identity.node_id if sender == "peer" else bytes(32)
    if mutate and len(payload) >= 2:  # a Quantum-looking start: version 1 and a real packet type
        payload = bytes((1, 1 + payload[1] % 6)) + payload[2:]
    before = server_ep.statistics()
    server_ep.receive_datagram(_frame_from(source, payload), R, net.now)
    server_ep.datagrams_to_send(net.now)
    after = server_ep.statistics()
    assert after.internal_errors == before.internal_errors
    assert server.is_established and server.path.peer_id == client_ep.identity.node_id
    assert len(server_ep.connections) == 1 and len(server_ep._framed_paths[R]) == 1
