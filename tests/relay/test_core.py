"""The relay core on a virtual clock: registration, tokens, forwarding, quotas, floods, punching."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_node._relay_wire import (
    Connect,
    Observed,
    Punch,
    PunchResult,
    RefusalCode,
    Refused,
    Register,
    Registered,
    encode_control,
    encode_deliver,
    encode_probe,
    encode_send,
    parse_control_untrusted,
    parse_frame_untrusted,
)
from aetherflow_relay import TRANSITIONS, ClientState, RelayConfig, RelayCore
from aetherflow_relay._core import InvalidRelayTransition, Trigger
from aetherflow_sdk._errors import BadPacket, LocalProtocolError
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import TokenVerifier, issue_token

UNIX = 1_900_000_000.0


def _node(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _register(core: RelayCore, node_id: bytes, address: tuple[str, int], now: float = 0.0,
              token: str | None = None, rtt: float | None = None) -> Registered | Refused:  # fmt: skip
    core.connected(node_id, address, now, rtt=rtt)
    core.receive_control(node_id, encode_control(Register(token=token, candidates=())), now, unix_time=UNIX)
    replies = [parse_control_untrusted(d) for n, d in core.control_to_send() if n == node_id]
    assert len(replies) == 1, replies
    reply = replies[0]
    assert isinstance(reply, (Registered, Refused))
    return reply


A, B, C = _node(1), _node(2), _node(3)
ADDR_A, ADDR_B, ADDR_C = ("198.51.100.1", 4001), ("203.0.113.2", 5002), ("192.0.2.3", 6003)


@pytest.fixture
def pair() -> tuple[RelayCore, bytes, bytes]:
    core = RelayCore(RelayConfig(rate=10_000, burst=3_000, queue_packets=4), rng=random.Random(1))
    ra, rb = _register(core, A, ADDR_A), _register(core, B, ADDR_B)
    assert isinstance(ra, Registered) and isinstance(rb, Registered)
    return core, ra.tag, rb.tag


def test_registration_reports_the_observed_address_and_files_the_authenticated_id() -> None:
    core = RelayCore(rng=random.Random(2))
    reply = _register(core, A, ADDR_A)
    assert isinstance(reply, Registered)
    assert reply.observed == ADDR_A and len(reply.tag) == 8 and reply.max_packet_size == 1400
    assert core.state_of(A) is ClientState.REGISTERED and core.address_of(A) == ADDR_A
    # A REGISTER has no node-ID field: the only ID the relay knows is the connection's.
    assert Register.__attrs_attrs__.__len__() == 2  # token, candidates  # type: ignore[attr-defined]
    assert core.statistics().clients == 1


def test_the_observed_address_is_reported_again_when_it_changes() -> None:
    core = RelayCore(rng=random.Random(3))
    _register(core, A, ADDR_A)
    core.path_changed(A, ("198.51.100.1", 4999), 1.0)
    assert [parse_control_untrusted(d) for _, d in core.control_to_send()] == [
        Observed(observed=("198.51.100.1", 4999))
    ]
    core.path_changed(A, ("198.51.100.1", 4999), 2.0)  # the same address: nothing new to say
    assert core.control_to_send() == []
    assert core.statistics().address_changes == 1


def test_forwarding_carries_the_packet_unread_and_names_the_authenticated_source(pair) -> None:
    core, tag_a, _ = pair
    packet = bytes(range(40)) * 10  # stands for a Quantum packet: ciphertext to the relay
    core.receive_frame(encode_send(tag_a, B, packet), ADDR_A, 0.1)
    assert core.datagrams_to_send() == [(encode_deliver(A, packet), ADDR_B)]
    stats = core.statistics()
    assert stats.forwarded_packets == 1 and stats.forwarded_bytes == len(packet)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ta: encode_send(b"\x00" * 8, B, b"x" * 50), "unregistered"),
        (lambda ta: encode_send(ta, C, b"x" * 50), "unknown_destination"),
        (lambda ta: encode_send(ta, B, b"x" * 1401), "too_large"),
        (lambda ta: encode_deliver(A, b"x" * 50), "unexpected"),
        (lambda ta: encode_probe(7, A), "unexpected"),
        (lambda ta: b"\x52\x01", "malformed"),
        (lambda ta: b"", "malformed"),
    ],
)
def test_bad_forwarding_is_dropped_and_counted(pair, make, reason) -> None:
    core, tag_a, _ = pair
    core.receive_frame(make(tag_a), ADDR_A, 0.1)
    assert core.datagrams_to_send() == []
    assert core.statistics().drops[reason] == 1
    assert sum(core.statistics().drops.values()) == 1


def test_a_live_tag_from_another_address_is_spoofed(pair) -> None:
    core, tag_a, _ = pair
    core.receive_frame(encode_send(tag_a, B, b"x" * 50), ("198.51.100.66", 4001), 0.1)
    assert core.datagrams_to_send() == [] and core.statistics().drops["spoofed"] == 1
    # After a NAT rebinding the connection's new address is the one frames must come from.
    core.path_changed(A, ("198.51.100.1", 4002), 0.2)
    core.receive_frame(encode_send(tag_a, B, b"x" * 50), ADDR_A, 0.3)
    assert core.statistics().drops["spoofed"] == 2
    core.receive_frame(encode_send(tag_a, B, b"x" * 50), ("198.51.100.1", 4002), 0.3)
    assert len(core.datagrams_to_send()) == 1


def test_an_unregistered_connection_gets_nothing_forwarded_either_way() -> None:
    core = RelayCore(rng=random.Random(4))
    _register(core, A, ADDR_A)
    core.connected(C, ADDR_C, 0.0)  # connected, never registered: no tag, no forwarding to it
    reply = _register(core, B, ADDR_B)
    assert isinstance(reply, Registered)
    core.receive_frame(encode_send(reply.tag, C, b"x" * 50), ADDR_B, 0.1)
    assert core.datagrams_to_send() == [] and core.statistics().drops["unknown_destination"] == 1
    core.receive_control(C, encode_control(Connect(peer=A, candidates=())), 0.1, unix_time=UNIX)
    (refusal,) = [parse_control_untrusted(d) for _, d in core.control_to_send()]
    assert isinstance(refusal, Refused) and refusal.code is RefusalCode.NOT_REGISTERED


def test_over_quota_a_client_is_queued_then_dropped_while_others_are_unaffected() -> None:
    seed = 5
    rng = random.Random(seed)
    core = RelayCore(RelayConfig(rate=10_000, burst=3_000, queue_packets=4), rng=rng)
    tags = {}
    for n, address in ((A, ADDR_A), (B, ADDR_B), (C, ADDR_C)):
        reply = _register(core, n, address)
        assert isinstance(reply, Registered)
        tags[n] = reply.tag
    # A floods 20 packets of 1000 bytes at once: 3 pass on the burst, 4 wait, 13 are dropped.
    for _ in range(20):
        core.receive_frame(encode_send(tags[A], B, b"a" * 1000), ADDR_A, 1.0)
    # C, well within its own quota at the same moment, is forwarded at once.
    core.receive_frame(encode_send(tags[C], B, b"c" * 1000), ADDR_C, 1.0)
    out = core.datagrams_to_send()
    assert sum(d.startswith(encode_deliver(A, b"")) for d, _ in out) == 3, seed
    assert sum(d.startswith(encode_deliver(C, b"")) for d, _ in out) == 1, seed
    stats = core.statistics()
    assert stats.drops["queue_full"] == 13 and stats.queued == 4
    # The queue drains at the bucket's rate, 1000 bytes per 0.1 s, on the timer.
    now, delivered = 1.0, 0
    for _ in range(10):  # bounded
        timer = core.get_timer()
        if timer is None:
            break
        assert timer > now
        now = timer
        core.handle_timer(now)
        delivered += len(core.datagrams_to_send())
    assert delivered == 4 and core.get_timer() is None
    assert now == pytest.approx(1.4)
    assert core.client_counters(A) == (7, 7000) and core.client_counters(C) == (1, 1000)


def test_memory_stays_bounded_under_a_registration_flood() -> None:
    config = RelayConfig(max_clients=100, max_pending=50, registration_timeout=5.0)
    core = RelayCore(config, rng=random.Random(6))
    # 5,000 connections that never register, then 5,000 that do.
    for n in range(5_000):
        core.connected(_node(10_000 + n), ("192.0.2.9", 1024 + n % 60_000), n * 0.001)
    assert core.statistics().pending == 50
    assert len(core.closes()) == 4_950
    for n in range(5_000):
        node_id = _node(20_000 + n)
        core.connected(node_id, ("192.0.2.10", 1024 + n), 10.0)
        core.receive_control(
            node_id, encode_control(Register(token=None, candidates=())), 10.0, unix_time=UNIX
        )
    stats = core.statistics()
    assert stats.clients == 100 and stats.refused["FULL"] == 4_900
    assert len(core._clients) <= config.max_clients + config.max_pending
    core.control_to_send()
    core.closes()
    # The leftover pending ones time out.
    core.handle_timer(100.0)
    assert core.statistics().pending == 0 and len(core._clients) == 100


def test_a_registration_must_come_in_time() -> None:
    core = RelayCore(RelayConfig(registration_timeout=2.0), rng=random.Random(7))
    core.connected(A, ADDR_A, 0.0)
    assert core.get_timer() == 2.0
    core.handle_timer(1.9)
    assert core.state_of(A) is ClientState.PENDING
    core.handle_timer(2.0)
    assert core.state_of(A) is ClientState.CLOSED
    assert [c.node_id for c in core.closes()] == [A]


def test_a_newer_connection_replaces_the_older_one() -> None:
    core = RelayCore(rng=random.Random(8))
    first = _register(core, A, ADDR_A)
    second = _register(core, A, ("198.51.100.1", 4444))
    assert isinstance(first, Registered) and isinstance(second, Registered)
    assert first.tag != second.tag and core.statistics().clients == 1
    assert core.closes() == []  # the shell closes the older connection: it knows which one it is
    core.receive_frame(encode_send(first.tag, A, b"x" * 20), ADDR_A, 0.1)
    assert core.statistics().drops["unregistered"] == 1


class TestTokens:
    def _core(self, issuer: Identity) -> RelayCore:
        return RelayCore(RelayConfig(require_token=True), verifier=TokenVerifier([issuer.node_id]),
                         rng=random.Random(9))  # fmt: skip

    def test_a_token_for_this_node_from_the_trusted_issuer_registers(self) -> None:
        issuer, node = Identity.generate(), Identity.generate()
        token = issue_token(issuer, user="alice", document="relay", permission="rw", expires_in=3600,
                            now=UNIX, holder=node.node_id)  # fmt: skip
        assert isinstance(_register(self._core(issuer), node.node_id, ADDR_A, token=token), Registered)

    @pytest.mark.parametrize("case", ["none", "other_issuer", "other_holder", "bearer", "expired", "garbage"])
    def test_anything_else_is_refused_and_closed(self, case: str) -> None:
        issuer, node, stranger = Identity.generate(), Identity.generate(), Identity.generate()
        signer, holder, expires = issuer, node.node_id, 3600.0
        if case == "other_issuer":
            signer = stranger
        elif case == "other_holder":
            holder = stranger.node_id  # a token someone else was given: useless on our connection
        elif case == "expired":
            expires = 1.0
        token: str | None = issue_token(signer, user="u", document="relay", permission="rw",
                                        expires_in=expires, now=UNIX - 10,
                                        holder=None if case == "bearer" else holder)  # fmt: skip
        token = {"none": None, "garbage": "a.b.c"}.get(case, token)
        core = self._core(issuer)
        reply = _register(core, node.node_id, ADDR_A, token=token)
        assert isinstance(reply, Refused) and reply.code is RefusalCode.AUTH, reply
        assert core.state_of(node.node_id) is ClientState.CLOSED
        assert core.statistics().refused["AUTH"] == 1 and core.statistics().clients == 0

    def test_require_token_needs_a_verifier(self) -> None:
        with pytest.raises(LocalProtocolError, match="TokenVerifier"):
            RelayCore(RelayConfig(require_token=True))


def test_punch_timing_lines_up_both_sides_from_their_rtts() -> None:
    core = RelayCore(RelayConfig(punch_margin=0.01), rng=random.Random(10))
    _register(core, A, ADDR_A, rtt=0.020)
    _register(core, B, ADDR_B, rtt=0.100)
    core.rtt_measured(B, 0.080)
    local = ("10.0.0.5", 4001)
    core.receive_control(A, encode_control(Connect(peer=B, candidates=(local,))), 1.0, unix_time=UNIX)
    messages = {n: parse_control_untrusted(d) for n, d in core.control_to_send()}
    pa, pb = messages[A], messages[B]
    assert isinstance(pa, Punch) and isinstance(pb, Punch)
    assert pa.peer == B and pb.peer == A and pa.punch_id == pb.punch_id
    assert pa.candidates == (ADDR_B,) and pb.candidates == (ADDR_A, local)
    # Each side's go moment: sent at 1.0, arrives after rtt/2, fires after its delay.
    go_a, go_b = 1.0 + 0.010 + pa.delay, 1.0 + 0.040 + pb.delay
    assert go_a == pytest.approx(go_b, abs=1e-6) and go_a == pytest.approx(1.05, abs=1e-6)
    core.receive_control(B, encode_control(PunchResult(punch_id=pa.punch_id, direct=True)), 2.0,
                         unix_time=UNIX)  # fmt: skip
    core.receive_control(A, encode_control(PunchResult(punch_id=pa.punch_id, direct=True)), 2.0,
                         unix_time=UNIX)  # fmt: skip
    stats = core.statistics()
    assert (stats.punch_requests, stats.punch_successes, stats.drops["bad_control"]) == (1, 1, 1)


def test_punching_to_an_unknown_node_is_refused_with_its_id() -> None:
    core = RelayCore(rng=random.Random(11))
    _register(core, A, ADDR_A)
    core.receive_control(A, encode_control(Connect(peer=C, candidates=())), 1.0, unix_time=UNIX)
    (reply,) = [parse_control_untrusted(d) for _, d in core.control_to_send()]
    assert isinstance(reply, Refused) and reply.code is RefusalCode.UNKNOWN_PEER and reply.subject == C


def test_control_messages_are_rate_limited() -> None:
    core = RelayCore(RelayConfig(control_rate=1, control_burst=5), rng=random.Random(12))
    _register(core, A, ADDR_A)  # one message of the burst
    for _ in range(10):
        core.receive_control(A, encode_control(Connect(peer=C, candidates=())), 0.0, unix_time=UNIX)
    assert core.statistics().drops["control_rate"] == 6
    assert core.statistics().refused["UNKNOWN_PEER"] == 4


def test_garbage_control_messages_are_counted() -> None:
    core = RelayCore(rng=random.Random(13))
    _register(core, A, ADDR_A)
    for data in (b"", b"\xff", b"\x01\x00", encode_control(Register(token=None, candidates=())) + b"x"):
        core.receive_control(A, data, 0.0, unix_time=UNIX)
    core.receive_control(C, b"\x01", 0.0, unix_time=UNIX)  # no such connection
    assert core.statistics().drops["bad_control"] == 5


def test_the_state_table_refuses_what_it_does_not_list() -> None:
    assert (ClientState.CLOSED, Trigger.REGISTER) not in TRANSITIONS
    core = RelayCore(rng=random.Random(14))
    core.connected(A, ADDR_A, 0.0)
    client = core._clients[A]
    client.state = ClientState.CLOSED
    with pytest.raises(InvalidRelayTransition, match="closed has no transition on register"):
        core._transition(client, Trigger.REGISTER)


def test_frames_parse_back() -> None:
    assert parse_frame_untrusted(encode_probe(9, A)).punch_id == 9
    assert parse_frame_untrusted(encode_deliver(A, b"p")).source == A


def test_serve_messages_parse_back_and_registered_names_the_persistence_peer() -> None:
    from aetherflow_node._relay_wire import Serve, ServeCode, Served

    for message in (
        Serve(ticket="af1" + "a" * 500),
        Served(document="0190-doc", code=ServeCode.NOT_ALLOWED, reason="not on the --serve list"),
        Served(document="", code=ServeCode.ACCEPTED, reason=""),
        Registered(tag=b"t" * 8, max_packet_size=1400, observed=ADDR_A, serve=("0.0.0.0", 3341)),
        Registered(tag=b"t" * 8, max_packet_size=1400, observed=ADDR_A),  # a relay that hosts nothing
    ):
        assert parse_control_untrusted(encode_control(message)) == message
    with pytest.raises(BadPacket):  # a cut-off optional address is not read as absent
        parse_control_untrusted(
            encode_control(Registered(tag=b"t" * 8, max_packet_size=1, observed=ADDR_A, serve=ADDR_B))[:-1]
        )
    core = RelayCore(rng=random.Random(15))
    core.serve_address = ("0.0.0.0", 3341)
    reply = _register(core, A, ADDR_A)
    assert isinstance(reply, Registered) and reply.serve == ("0.0.0.0", 3341)


def test_serve_goes_to_the_persistence_peer_or_is_answered_not_hosting() -> None:
    from aetherflow_node._relay_wire import Serve, ServeCode, Served

    core = RelayCore(rng=random.Random(16))
    _register(core, A, ADDR_A)
    core.receive_control(A, encode_control(Serve(ticket="af1x")), 0.0, unix_time=UNIX)
    (answer,) = [parse_control_untrusted(d) for _, d in core.control_to_send()]
    assert isinstance(answer, Served) and answer.code is ServeCode.NOT_HOSTING
    assert core.serve_requests() == []
    core.serve_address = ("127.0.0.1", 3341)
    core.receive_control(A, encode_control(Serve(ticket="af1y")), 0.0, unix_time=UNIX)
    (request,) = core.serve_requests()
    assert request.node_id == A and request.ticket == "af1y" and core.control_to_send() == []
    core.answer_serve(A, Served(document="d", code=ServeCode.ACCEPTED, reason=""))
    assert [parse_control_untrusted(d) for _, d in core.control_to_send()] == [
        Served(document="d", code=ServeCode.ACCEPTED, reason="")
    ]
    # Before REGISTER a SERVE is refused like any other request; after a disconnect the answer is dropped.
    core.connected(B, ADDR_B, 0.0)
    core.receive_control(B, encode_control(Serve(ticket="af1z")), 0.0, unix_time=UNIX)
    assert core.serve_requests() == []
    core.control_to_send()
    core.disconnected(A)
    core.answer_serve(A, Served(document="d", code=ServeCode.ACCEPTED, reason=""))
    assert core.control_to_send() == []


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80))
def test_any_bytes_parse_as_a_control_message_or_raise_bad_packet(data: bytes) -> None:
    for prefix in (b"", b"\x04", b"\x85", b"\x81"):
        with contextlib.suppress(BadPacket):
            parse_control_untrusted(prefix + data)
