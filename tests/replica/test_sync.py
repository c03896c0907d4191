"""The sans-I/O sync protocol on a virtual network and a virtual clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk.replica import Replica, SyncProtocol
from aetherflow_sdk.replica._awareness import MAX_CLOCK, Awareness
from aetherflow_sdk.replica._wire import (
    AwarenessEntry,
    encode_awareness,
    encode_sync_step2,
    encode_sync_update,
)

from .conftest import VirtualNet, make_replica

UPDATE = b"\x00\x02"  # prefix of a sync update message
STEP2 = b"\x00\x01"
AWARENESS = b"\x01"
DENIED = b"\x02\x00"


def random_edits(replica: Replica, rng: random.Random, count: int, tag: str) -> None:
    for i in range(count):
        if len(replica) > 5 and rng.random() < 0.3:
            index = rng.randrange(len(replica) - 1)
            replica.delete(index, 1)
        else:
            replica.insert(rng.randint(0, len(replica)), f"{tag}{i % 10}")


def test_concurrent_edits_converge_with_reordered_delivery(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    net.add("a", a)
    net.add("b", b)
    net.connect("a", "b")
    for _ in range(20):
        random_edits(a, rng, rng.randint(1, 5), "a")
        random_edits(b, rng, rng.randint(1, 5), "b")
        for _ in range(rng.randint(0, 6)):
            net.step()
    net.run()
    assert a.text == b.text
    assert "a" in a.text and "b" in a.text


def test_connect_sends_only_what_the_other_lacks(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    a.insert(0, "x" * 20_000)
    net.add("a", a)
    net.add("b", b)
    net.connect("a", "b")
    net.run()
    assert b.text == a.text
    net.disconnect("a", "b")
    b.insert(0, "small")
    a.insert(len(a), "tail")
    net.log.clear()
    net.connect("a", "b")
    net.run()
    assert a.text == b.text == "small" + "x" * 20_000 + "tail"
    step2_sizes = [len(data) for _, _, data in net.log if data.startswith(STEP2)]
    assert len(step2_sizes) == 2
    assert max(step2_sizes) < 200  # not the 20 kB document


def test_mesh_never_echoes_and_never_reforwards(rng: random.Random) -> None:
    net = VirtualNet(rng)
    names = ["a", "b", "c"]
    replicas = {name: make_replica(rng) for name in names}
    for name in names:
        net.add(name, replicas[name])
    net.connect("a", "b")
    net.connect("b", "c")
    net.connect("a", "c")
    net.run()
    net.log.clear()
    replicas["a"].insert(0, "hello")
    net.run()
    assert {r.text for r in replicas.values()} == {"hello"}
    # Each direction of each link carries the update at most once; every copy that
    # arrives second is redundant and stops there (not forwarded again).
    for src in names:
        for dst in names:
            if src != dst:
                assert net.sent(src, dst, UPDATE) <= 1
    assert net.sent("a", "b", UPDATE) == 1 and net.sent("a", "c", UPDATE) == 1
    stats = {name: net.nodes[name].statistics() for name in names}
    for name in names:
        received = sum(net.sent(src, name, UPDATE) for src in names if src != name)
        assert stats[name].updates_redundant == received - (0 if name == "a" else 1)
    net.log.clear()
    net.run()
    assert net.log == []  # quiet: nothing bounces around


def test_line_topology_relays_through_the_middle(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b, c = make_replica(rng), make_replica(rng), make_replica(rng)
    for name, replica in (("a", a), ("b", b), ("c", c)):
        net.add(name, replica)
    net.connect("a", "b")
    net.connect("b", "c")
    net.run()
    a.insert(0, "from a")
    net.run()
    assert c.text == "from a"
    assert net.sent("b", "a", UPDATE) == 0  # never echoed to where it came from
    assert net.sent("c", "b", UPDATE) == 0
    random_edits(a, rng, 50, "a")
    random_edits(c, rng, 50, "c")
    net.run()
    assert a.text == b.text == c.text
    assert net.sent("b", "a", UPDATE) >= 1  # c's edits reached a through b
    assert all(net.nodes[n].statistics().updates_redundant == 0 for n in "abc")


def test_read_only_peer_receives_but_cannot_write(rng: random.Random) -> None:
    net = VirtualNet(rng)
    owner, reader = make_replica(rng), make_replica(rng)
    owner.insert(0, "owner text")
    net.add("owner", owner)
    net.add("reader", reader)
    net.connect("owner", "reader", a_trusts_b=False)
    net.run()
    assert reader.text == "owner text"
    reader.insert(0, "vandal ")
    owner.insert(len(owner), "!")
    net.run()
    assert owner.text == "owner text!"
    assert reader.text == "vandal owner text!"
    # A well-behaved reader never pushes (the owner never answered it with a step 2
    # request); a misbehaving one is stopped at the receiver:
    assert net.nodes["owner"].statistics().writes_denied == 0
    net.in_flight[("reader", "owner")].append(("ordered", encode_sync_update(reader.encode_update())))
    net.in_flight[("reader", "owner")].append(("ordered", encode_sync_step2(reader.encode_update())))
    net.run()
    assert owner.text == "owner text!"
    stats = net.nodes["owner"].statistics()
    assert stats.writes_denied == 2
    assert net.sent("owner", "reader", DENIED) == stats.writes_denied
    assert net.nodes["reader"].statistics().permission_denied_received >= 1
    # The owner never asked a read-only peer for its state.
    assert net.sent("owner", "reader", b"\x00\x00") == 0


def _seeded_server_and_returning_client(rng: random.Random) -> tuple[Replica, Replica]:
    """A server seeded from a file, a client that synced, then the server restarted and re-seeded."""
    net = VirtualNet(rng)
    server, client = make_replica(rng), make_replica(rng)
    server.seed("hello world\n")
    net.add("server", server)
    net.add("client", client)
    net.connect("server", "client")
    net.run()
    assert client.text == "hello world\n"
    client.insert(0, "offline ")
    restarted = make_replica(rng)
    restarted.seed("hello world\n")  # same file, new client ID: a parallel history
    return restarted, client


def test_parallel_histories_would_duplicate_without_the_guard(rng: random.Random) -> None:
    server, client = _seeded_server_and_returning_client(rng)
    server.apply_update(client.encode_update())
    assert server.text.count("hello world") == 2  # jupyter-collaboration#621


def test_foreign_history_guard_adopts_peer_history(rng: random.Random) -> None:
    server, client = _seeded_server_and_returning_client(rng)
    net = VirtualNet(rng)
    net.add("server", server)
    net.add("client", client)
    net.connect("server", "client")
    net.run()
    assert server.text == client.text == "offline hello world\n"
    assert net.nodes["server"].statistics().histories_adopted == 1
    assert server.seeded_by is None


def test_foreign_history_guard_refuses_when_both_sides_edited(rng: random.Random) -> None:
    server, client = _seeded_server_and_returning_client(rng)
    server.insert(0, "server edit ")
    net = VirtualNet(rng)
    net.add("server", server)
    net.add("client", client)
    net.connect("server", "client")
    net.run()
    assert server.text == "server edit hello world\n"
    assert client.text == "offline hello world\n"
    assert net.nodes["server"].statistics().history_conflicts == 1
    assert net.nodes["server"].peer_state("client") == "refused"


def test_malformed_input_is_counted_not_raised(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    protocol = net.add("a", a)
    net.add("b", b)
    net.connect("a", "b")
    net.run()
    protocol.receive_message("b", b"\xff\xff", net.now)
    protocol.receive_message("b", encode_sync_update(b"\x07garbage"), net.now)
    protocol.receive_message("b", b"\x00\x00\x02\xff\xff", net.now)  # step 1 with a bad state vector
    assert protocol.statistics().bad_messages == 3
    with pytest.raises(LocalProtocolError, match="unknown peer"):
        protocol.receive_message("nobody", b"", net.now)
    with pytest.raises(LocalProtocolError, match="already attached"):
        protocol.add_peer("b")


def test_offline_edits_merge_on_reconnect(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    net.add("a", a)
    net.add("b", b)
    net.connect("a", "b")
    a.insert(0, "shared base\n")
    net.run()
    net.disconnect("a", "b")
    for i in range(500):
        for replica, tag in ((a, "a"), (b, "b")):
            # Insert between tokens, so that every token stays whole and countable.
            boundaries = [0] + [j + 1 for j, ch in enumerate(replica.text) if ch in ">\n"]
            replica.insert(rng.choice(boundaries), f"<{tag}{i}>")
    net.connect("a", "b")
    net.run()
    assert a.text == b.text
    for i in range(500):
        assert a.text.count(f"<a{i}>") == 1 and a.text.count(f"<b{i}>") == 1


# -- presence -------------------------------------------------------------------------------


def _pair(rng: random.Random, **options: object) -> tuple[VirtualNet, Replica, Replica]:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    a.insert(0, "abc😀def")
    net.add("a", a, **options)
    net.add("b", b, **options)
    net.connect("a", "b")
    net.run()
    return net, a, b


def test_presence_carries_name_colour_and_a_cursor_that_follows_text(rng: random.Random) -> None:
    net, _a, b = _pair(rng)
    net.nodes["a"].set_presence(name="ada", color="#30bced", anchor=4, head=6, now=net.now)
    net.run()
    seen = net.nodes["b"].presence()[net.nodes["a"].awareness.client_id]
    assert (seen.name, seen.color, seen.anchor, seen.head) == ("ada", "#30bced", 4, 6)
    b.insert(0, "中文")
    net.run()
    seen = net.nodes["b"].presence()[net.nodes["a"].awareness.client_id]
    assert (seen.anchor, seen.head) == (6, 8)
    assert b.text[seen.anchor : seen.head] == "de"


def test_clean_close_removes_presence_at_once(rng: random.Random) -> None:
    net, _, _ = _pair(rng)
    net.nodes["a"].set_presence(name="ada", color="#fff", now=net.now)
    net.run()
    assert net.nodes["b"].presence()
    net.nodes["a"].close(net.now)
    net.run()
    assert net.nodes["b"].presence() == {}


def test_vanished_peer_is_removed_after_the_awareness_timeout(rng: random.Random) -> None:
    net, _, _ = _pair(rng, awareness_timeout=30.0)
    net.nodes["a"].set_presence(name="ada", color="#fff", now=net.now)
    net.nodes["b"].set_presence(name="bob", color="#000", now=net.now)
    net.run()
    # a vanishes without a word: its messages stop, b is not told.
    net.vanish("a")
    net.advance(29.0)
    assert len(net.nodes["b"].presence()) == 1
    net.advance(1.5)
    assert net.nodes["b"].presence() == {}
    assert net.nodes["b"].awareness.local_state is not None  # our own state never expires


def test_live_peer_stays_present_thanks_to_renewal(rng: random.Random) -> None:
    net, _, _ = _pair(rng, awareness_timeout=30.0)
    net.nodes["a"].set_presence(name="ada", color="#fff", now=net.now)
    net.run()
    for _ in range(10):
        net.advance(10.0)
        net.run()
    assert len(net.nodes["b"].presence()) == 1


def test_presence_rate_is_bounded(rng: random.Random) -> None:
    net, _, _ = _pair(rng, presence_interval=0.05)
    net.log.clear()
    for i in range(100):
        net.nodes["a"].set_presence(name="ada", color="#fff", anchor=i % 8, now=net.now)
        net.advance(0.001)
        net.run()
    net.advance(0.1)
    net.run()
    sent = net.sent("a", "b", AWARENESS)
    assert 2 <= sent <= 0.1 / 0.05 + 2
    assert net.nodes["b"].presence()[net.nodes["a"].awareness.client_id].anchor == 99 % 8


def test_presence_as_datagrams_survives_loss_by_later_updates(rng: random.Random) -> None:
    net = VirtualNet(rng, datagram_loss=0.5)
    a, b = make_replica(rng), make_replica(rng)
    net.add("a", a, presence_as_datagrams=True)
    net.add("b", b, presence_as_datagrams=True)
    net.connect("a", "b")
    net.run()
    for i in range(40):
        net.nodes["a"].set_presence(name=f"ada{i}", color="#fff", now=net.now)
        net.advance(0.06)
        net.run()
    kinds = {kind for queue in net.in_flight.values() for kind, _ in queue}
    assert kinds <= {"datagram", "unordered", "ordered"}
    assert net.nodes["b"].presence()  # with 40 tries at 50 % loss, some arrived


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_bytes_never_raise_from_receive_message(messages: list[bytes]) -> None:
    """Any bytes from a peer are processed or counted as bad; nothing escapes, the text is intact."""
    replica = Replica("d", client_id=1)
    replica.insert(0, "keep me")
    protocol = SyncProtocol(replica, now=0.0)
    protocol.add_peer("peer")
    for data in messages:
        for prefix in (b"", b"\x00\x02", b"\x00\x00", b"\x01"):
            protocol.receive_message("peer", prefix + data, 0.0)
    assert "keep me" in replica.text or protocol.statistics().updates_applied > 0


def test_presence_does_not_ping_pong_around_a_cycle(rng: random.Random) -> None:
    """Our own state relayed back to us through a slower path is not re-announced."""
    net = VirtualNet(rng)
    for name in "abc":
        net.add(name, make_replica(rng))
    net.connect("a", "b")
    net.connect("b", "c")
    net.connect("c", "a")
    net.run()
    a, b, c = (net.nodes[name] for name in "abc")
    a.set_presence(name="ada", color="#fff", now=1.0)
    (to_b,) = a.messages_for("b", 1.0)
    (_slow_to_c,) = a.messages_for("c", 1.0)  # held back: c hears of a through b first
    b.receive_message("a", to_b.data, 1.0)
    (b_to_c,) = b.messages_for("c", 1.0)
    c.receive_message("b", b_to_c.data, 1.0)
    (c_to_a,) = c.messages_for("a", 1.0)  # c relays a's state to a (it came from b)
    a.receive_message("c", c_to_a.data, 1.0)
    assert a.messages_for("b", 2.0) == [] and a.messages_for("c", 2.0) == []


def test_own_client_at_the_maximum_clock_is_dropped_not_fatal() -> None:
    """A peer relaying our client at clock 2**53-1 must not push our clock past what encodes."""
    replica = Replica("d", client_id=1)
    protocol = SyncProtocol(replica, now=0.0)
    protocol.add_peer("evil")
    protocol.set_presence(name="ada", color="#fff", now=0.5)
    protocol.messages_for("evil", 0.5)
    evil = encode_awareness([AwarenessEntry(client_id=1, clock=MAX_CLOCK, state={"user": {}})])
    protocol.receive_message("evil", evil, 1.0)
    assert protocol.statistics().bad_messages == 1
    protocol.messages_for("evil", 2.0)  # raised ValueError from encode_varuint before the fix
    almost = encode_awareness([AwarenessEntry(client_id=1, clock=MAX_CLOCK - 1, state=None)])
    protocol.receive_message("evil", almost, 3.0)
    assert protocol.awareness.entries([1])[0].clock == MAX_CLOCK
    protocol.set_presence(name="ada", color="#000", now=4.0)  # capped, still encodes
    assert protocol.awareness.entries([1])[0].clock == MAX_CLOCK
    assert protocol.messages_for("evil", 5.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([1, 2]), st.integers(0, MAX_CLOCK), st.sampled_from([None, {"a": 1}])),
        max_size=6,
    )
)
def test_any_awareness_entries_leave_us_able_to_send(
    raw: list[tuple[int, int, dict[str, int] | None]],
) -> None:
    """Whatever clocks peers announce (ours included), our presence still encodes."""
    replica = Replica("d", client_id=1)
    protocol = SyncProtocol(replica, now=0.0)
    protocol.add_peer("peer")
    protocol.set_presence(name="ada", color="#fff", now=0.0)
    for step, (client, clock, state) in enumerate(raw):
        entry = AwarenessEntry(client_id=client, clock=clock, state=state)
        protocol.receive_message("peer", encode_awareness([entry]), float(step))
        protocol.messages_for("peer", float(step) + 0.5)
    protocol.set_presence(name="ada", color="#000", now=100.0)
    protocol.messages_for("peer", 200.0)
    encode_awareness(protocol.awareness.entries())


def test_awareness_metadata_stays_bounded_under_a_flood_of_client_ids() -> None:
    """Null states for unknown clients are not remembered; removed and expired clients are forgotten."""
    awareness = Awareness(1, now=0.0, timeout=30.0)
    nulls = tuple(AwarenessEntry(client_id=c, clock=5, state=None) for c in range(2, 10_002))
    assert awareness.apply_entries(nulls, 1.0).changed == ()
    assert len(awareness._meta) == 1
    states = tuple(AwarenessEntry(client_id=c, clock=1, state={"a": 1}) for c in range(2, 1_002))
    awareness.apply_entries(states, 2.0)
    leaving = tuple(AwarenessEntry(client_id=c, clock=2, state=None) for c in range(2, 502))
    assert len(awareness.apply_entries(leaving, 3.0).removed) == 500
    assert len(awareness.remove(list(range(502, 702))).removed) == 200
    assert len(awareness._meta) == 1_001  # tombstones carry the clocks we still relay
    deadline = awareness.next_deadline()
    assert deadline is not None
    awareness.handle_timer(deadline)
    awareness.handle_timer(33.0)
    assert awareness._meta.keys() == {1} and awareness.states == {}
    assert awareness.next_deadline() is None
