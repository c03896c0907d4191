"""The causal buffer: updates that arrive before what they reference are held, not mis-applied."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk import BadPacket
from aetherflow_sdk.replica import Replica, SyncProtocol
from aetherflow_sdk.replica import _sync as sync_module
from aetherflow_sdk.replica._deps import update_needs_untrusted
from aetherflow_sdk.replica._wire import encode_sync_update, parse_state_vector_untrusted

from .conftest import make_replica


def two_writer_history(rng: random.Random, steps: int = 60) -> tuple[list[bytes], str]:
    """Every update two writers made (with partial syncs between them), and the final text."""
    a, b = make_replica(rng), make_replica(rng)
    updates: list[bytes] = []
    for replica in (a, b):
        replica.subscribe_updates(lambda update, origin, local: updates.append(update) if local else None)
    for step in range(steps):
        replica = a if rng.random() < 0.5 else b
        if len(replica) > 3 and rng.random() < 0.3:
            index = rng.randrange(len(replica) - 1)
            replica.delete(index, rng.randint(1, 2))
        else:
            replica.insert(rng.randint(0, len(replica)), rng.choice(["x", "é", "😀", "中"]) + str(step % 10))
        if rng.random() < 0.3:
            other = b if replica is a else a
            other.apply_update(replica.encode_update(other.state_vector()))
    a.apply_update(b.encode_update(a.state_vector()))
    return updates, a.text


def test_needs_of_real_updates() -> None:
    a = Replica("d", client_id=5)
    a.insert(0, "ab😀")
    first = a.encode_update()
    needs = update_needs_untrusted(first)
    assert needs.starts == ((5, 0),)
    assert needs.provides == {5: 4}  # the emoji is 2 UTF-16 units
    assert needs.ready({})
    before = a.state_vector()
    a.delete(0, 1)
    a.insert(2, "c")
    later = a.encode_update(before)
    needs = update_needs_untrusted(later)
    assert not needs.ready({})
    assert needs.ready(parse_state_vector_untrusted(before))


def test_shuffled_delivery_through_the_protocol_matches_causal_delivery(rng: random.Random) -> None:
    deferred = 0
    for _ in range(30):
        updates, expected = two_writer_history(rng)
        receiver = make_replica(rng)
        protocol = SyncProtocol(receiver, now=0.0)
        protocol.add_peer("sender")
        protocol.receive_message("sender", b"\x00\x00\x01\x00", 0.0)  # the sender's step 1: synced
        order = updates[:]
        rng.shuffle(order)
        for update in order:
            protocol.receive_message("sender", encode_sync_update(update), 0.0)
        stats = protocol.statistics()
        assert receiver.text == expected
        assert stats.held_updates == 0 and stats.bad_messages == 0
        deferred += stats.updates_deferred
    assert deferred > 0  # the buffer was exercised


def test_overflowing_buffer_asks_the_peer_again(rng: random.Random, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "MAX_HELD_UPDATES", 3)
    source = make_replica(rng)
    source.insert(0, "base")
    base = source.state_vector()
    updates = []
    for i in range(6):
        before = source.state_vector()
        source.insert(len(source), str(i))
        updates.append(source.encode_update(before))
    receiver = make_replica(rng)
    protocol = SyncProtocol(receiver, now=0.0)
    protocol.add_peer("p")
    protocol.messages_for("p", 0.0)
    protocol.receive_message("p", b"\x00\x00\x01\x00", 0.0)
    protocol.messages_for("p", 0.0)
    for update in updates:  # none is ready: "base" never arrived
        protocol.receive_message("p", encode_sync_update(update), 0.0)
    stats = protocol.statistics()
    assert stats.resyncs == 1 and stats.held_updates <= 3
    (resync,) = protocol.messages_for("p", 0.0)
    assert resync.data.startswith(b"\x00\x00")  # a fresh step 1
    # The peer answers with everything we lack; the rest of the held updates then fit.
    from aetherflow_sdk.replica._wire import encode_sync_step2

    protocol.receive_message("p", encode_sync_step2(source.encode_update(receiver.state_vector())), 0.0)
    assert receiver.text == source.text
    assert base  # (the base state vector the receiver never had)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_decode_or_raise_bad_packet(data: bytes) -> None:
    try:
        needs = update_needs_untrusted(data)
    except BadPacket:
        return
    assert isinstance(needs.ready({}), bool)


def test_every_prefix_of_a_real_update_is_handled(rng: random.Random) -> None:
    updates, _ = two_writer_history(rng, steps=10)
    whole = updates[-1]
    for cut in range(len(whole)):
        with contextlib.suppress(BadPacket):
            update_needs_untrusted(whole[:cut])
