"""Hostile bytes: every datagram is either accepted or dropped and counted, nothing else.

Rule (as h11's fuzzers state it): any bytes fed to a live endpoint are parsed or
dropped; nothing raises, and nothing but the drop counters changes.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aetherflow_sdk._errors import BadPacket
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum._crypto import PacketProtection
from aetherflow_sdk.quantum._handshake import ClientHandshake, TransportParameters
from aetherflow_sdk.quantum._wire import HEADER_SIZE, Header, PacketType, parse_frames_untrusted
from tests.quantum._vnet import LinkProfile, VirtualNetwork

A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 5000)
ATTACKER = ("10.6.6.6", 666)

# Counters that may move when a datagram is dropped; everything else must stay put.
DROP_COUNTERS = {
    "bad_packets",
    "replayed_packets",
    "dropped_packets",
    "duplicate_packets",
    "datagrams_received",
    "bytes_received",
}


def _established(seed: int):
    net = VirtualNetwork(seed, LinkProfile(delay=0.005))
    client_ep = net.add_endpoint(A)
    server_ep = net.add_endpoint(B)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted))
    server = server_ep.accepted.popleft()
    captured: list[bytes] = []

    def capture(data: bytes, source: object, destination: object) -> bool:
        if source == A and data[1] == PacketType.DATA:
            captured.append(data)
        return False

    net.profile.drop_if = capture
    client.send_message(b"hello" * 100)
    client_ep.mark_dirty(client)
    net.run_until(lambda: server.receive_message() == b"hello" * 100)
    net.profile.drop_if = None
    return net, client_ep, server_ep, client, server, captured


def _snapshot(connection) -> dict[str, object]:
    return {k: v for k, v in attrs.asdict(connection.statistics()).items() if k not in DROP_COUNTERS}


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Any, ...]]:
    """One established pair shared by the fuzzing examples; it must still work afterwards."""
    net, client_ep, _server_ep, client, server, _captured = established = _established(99)
    yield established
    client.send_message(b"still alive")
    client_ep.mark_dirty(client)
    net.run_until(lambda: server.receive_message() == b"still alive", max_time=10)


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=1500),  # random
        st.builds(
            lambda i, b: valid[:i] + bytes([b]) + valid[i + 1 :],
            st.integers(0, len(valid) - 1),
            st.integers(0, 255),
        ),  # one byte changed
        st.builds(lambda n: valid[:n], st.integers(0, len(valid))),  # truncated
        st.just(valid),  # replayed verbatim
        st.builds(lambda extra: valid + extra, st.binary(min_size=1, max_size=64)),  # extended
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), from_attacker=st.booleans())
def test_random_and_mutated_datagrams_only_move_drop_counters(
    live: tuple[Any, ...], data: st.DataObject, from_attacker: bool
) -> None:
    net, _client_ep, server_ep, _client, server, captured = live
    datagram = data.draw(_mutations(captured[0]), label="datagram")
    before = _snapshot(server)
    source = ATTACKER if from_attacker else A
    server_ep.receive_datagram(datagram, source, net.now)
    assert _snapshot(server) == before
    assert server.receive_message() is None
    assert server.peer_address == A  # a forged packet never moves the path


def test_each_kind_of_bad_packet_is_dropped_and_counted() -> None:
    net, client_ep, server_ep, client, server, _ = _established(7)
    held: list[bytes] = []

    def hold_back(data: bytes, source: object, destination: object) -> bool:
        if source == A and data[1] == PacketType.DATA and not held:
            held.append(data)
            return True
        return False

    net.profile.drop_if = hold_back
    client.send_message(b"the real one")
    client_ep.mark_dirty(client)
    net.run_until(lambda: bool(held))
    net.profile.drop_if = None
    valid = held[0]  # a genuine packet the server has not seen yet
    stats = server.statistics()
    # Tampered: one ciphertext bit flipped.
    server_ep.receive_datagram(valid[:-1] + bytes([valid[-1] ^ 1]), A, net.now)
    # Tampered header (authenticated as associated data): the flags byte changed.
    server_ep.receive_datagram(valid[:2] + b"\x80" + valid[3:], A, net.now)
    # Truncated below the AEAD tag.
    server_ep.receive_datagram(valid[: HEADER_SIZE + 10], A, net.now)
    # Wrong key: a well-formed packet for this connection sealed under another key.
    header = Header(packet_type=PacketType.DATA, destination_cid=server.local_cid, packet_number=10**6).pack()
    server_ep.receive_datagram(
        PacketProtection(bytes(32), bytes(12)).seal(header, 10**6, b"\x01"), A, net.now
    )
    assert server.statistics().bad_packets == stats.bad_packets + 4
    assert server.receive_message() is None
    # The genuine packet is still accepted after all that, once; its replay is refused.
    server_ep.receive_datagram(valid, A, net.now)
    assert server.receive_message() == b"the real one"
    server_ep.receive_datagram(valid, A, net.now)
    assert server.statistics().replayed_packets == stats.replayed_packets + 1
    assert server.receive_message() is None
    client.send_message(b"and on it goes")
    client_ep.mark_dirty(client)
    net.run_until(lambda: server.receive_message() == b"and on it goes", max_time=10)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_frame_parser_raises_only_bad_packet(payload: bytes) -> None:
    with contextlib.suppress(BadPacket):
        parse_frames_untrusted(payload)


def test_initial_flood_from_spoofed_addresses_keeps_no_state_and_respects_3x() -> None:
    """10,000 INITIALs from 1,000 spoofed addresses: no connection, bounded memory, <= 3x bytes."""
    net = VirtualNetwork(42)
    server_ep = net.add_endpoint(B)
    params = TransportParameters(max_message_size=1 << 24, receive_window=1 << 24, max_datagram_size=1400)
    identity = Identity.generate()
    initials = [
        ClientHandshake(
            identity=identity, client_cid=i.to_bytes(16, "big"), params=params, pinned_peer_id=None
        ).initial_packet()
        for i in range(100)
    ]
    received = sent = 0
    tracemalloc.start()
    baseline = tracemalloc.take_snapshot()
    for n in range(10_000):
        packet = initials[n % 100]
        if n % 10 == 9:  # some carry forged cookies
            packet = (
                packet[: HEADER_SIZE + 16 + 32 + 11] + bytes([24]) + bytes(24) + packet[HEADER_SIZE + 84 :]
            )
        source = (f"192.0.2.{n % 250}", 1000 + n % 4)
        server_ep.receive_datagram(packet, source, net.now)
        received += len(packet)
        out = server_ep.datagrams_to_send(net.now)
        sent += sum(len(d) for d, _ in out)
        assert all(d[1] == PacketType.RETRY for d, _ in out)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(baseline, "filename"))
    tracemalloc.stop()
    stats = server_ep.statistics()
    assert stats.active_connections == 0 and not server_ep.connections
    assert stats.retries_sent == 9000 and stats.invalid_cookies == 1000
    assert sent <= 3 * received
    assert grown < 512 * 1024, f"endpoint memory grew by {grown} bytes under the flood"


def test_a_cookie_for_another_address_is_refused() -> None:
    net = VirtualNetwork(43)
    client_ep = net.add_endpoint(A)
    server_ep = net.add_endpoint(B)
    client = client_ep.connect(B, net.now)
    initial = client_ep.datagrams_to_send(net.now)[0][0]
    server_ep.receive_datagram(initial, A, net.now)
    retry = server_ep.datagrams_to_send(net.now)[0][0]
    client_ep.receive_datagram(retry, B, net.now)
    with_cookie = client_ep.datagrams_to_send(net.now)[0][0]
    server_ep.receive_datagram(with_cookie, ("10.9.9.9", 4000), net.now)  # replayed from elsewhere
    assert server_ep.statistics().invalid_cookies == 1 and not server_ep.connections
    server_ep.receive_datagram(with_cookie, A, net.now)
    assert len(server_ep.connections) == 1
    assert client.state.value == "initial_sent"
