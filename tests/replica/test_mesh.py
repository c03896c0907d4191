"""Replica sync for meshes, on the virtual network: each update crosses each link once,
the causal buffer is per peer, bounded and indexed, and blocked peers' queues stay bounded."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from aetherflow_sdk.replica import Replica, SyncProtocol
from aetherflow_sdk.replica._wire import encode_sync_step1, encode_sync_update

from .conftest import VirtualNet, make_replica

NAMES = ["a", "b", "c", "d", "e"]


def _mesh(
    rng: random.Random, names: list[str], links: list[tuple[str, str]]
) -> tuple[VirtualNet, dict[str, Replica]]:
    net = VirtualNet(rng)
    replicas = {name: make_replica(rng) for name in names}
    for name in names:
        net.add(name, replicas[name])
    for a, b in links:
        net.connect(a, b)
    net.run()
    return net, replicas


def _link_bytes(net: VirtualNet) -> dict[frozenset[str], int]:
    """Bytes delivered on each link (both directions) since the log was last cleared."""
    totals: dict[frozenset[str], int] = {}
    for src, dst, data in net.log:
        key = frozenset((str(src), str(dst)))
        totals[key] = totals.get(key, 0) + len(data)
    return totals


def _authored(replicas: dict[str, Replica]) -> dict[str, list[bytes]]:
    """Record every local update each replica makes (what an edit costs, unframed)."""
    updates: dict[str, list[bytes]] = {name: [] for name in replicas}

    def recorder(into: list[bytes]) -> Callable[[bytes, object, bool], None]:
        def record(update: bytes, origin: object, local: bool) -> None:
            if local:
                into.append(update)

        return record

    for name, replica in replicas.items():
        replica.subscribe_updates(recorder(updates[name]))
    return updates


def test_full_mesh_of_five_each_edit_crosses_each_link_once(rng: random.Random) -> None:
    net, replicas = _mesh(rng, NAMES, list(itertools.combinations(NAMES, 2)))
    authored = _authored(replicas)
    for i in range(40):
        author = rng.choice(NAMES)
        replica = replicas[author]
        net.log.clear()
        replica.insert(rng.randint(0, len(replica)), f"{author}{i}")
        net.run()
        (update,) = authored[author][-1:]
        for link, sent in _link_bytes(net).items():
            assert author in link, f"edit {i} by {author} crossed {sorted(link)}"
            assert sent <= 1.2 * len(update), (i, sorted(link), sent, len(update))
        assert len({r.text for r in replicas.values()}) == 1
    for name in NAMES:
        stats = net.nodes[name].statistics()
        assert stats.updates_redundant == 0
        assert stats.updates_not_forwarded > 0  # relays held back: the authors delivered


def test_full_mesh_concurrent_edits_converge_and_stay_on_their_links(rng: random.Random) -> None:
    net, replicas = _mesh(rng, NAMES, list(itertools.combinations(NAMES, 2)))
    authored = _authored(replicas)
    net.log.clear()
    for _ in range(30):
        for name in rng.sample(NAMES, rng.randint(1, len(NAMES))):
            replica = replicas[name]
            if len(replica) > 4 and rng.random() < 0.3:
                replica.delete(rng.randrange(len(replica) - 1), 1)
            else:
                replica.insert(rng.randint(0, len(replica)), name)
        for _ in range(rng.randint(0, 15)):
            net.step()
    net.run()
    assert len({r.text for r in replicas.values()}) == 1
    # In a full mesh a link carries only what its two ends wrote (nothing is relayed),
    # and at most 1.2x those updates' bytes (framing; merging only shrinks).
    for link, sent in _link_bytes(net).items():
        own = sum(len(update) for name in link for update in authored[name])
        assert sent <= 1.2 * own, (sorted(link), sent, own)
    assert all(net.nodes[n].statistics().held_updates == 0 for n in NAMES)


def test_random_topology_of_joins_converges(rng: random.Random) -> None:
    for _ in range(8):
        net = VirtualNet(rng)
        replicas = {name: make_replica(rng) for name in NAMES}
        for name in NAMES:
            net.add(name, replicas[name])
        # Join in a random order: a random spanning tree first (so the mesh ends
        # connected), then random extra links, with edits and partial delivery between.
        order = NAMES[:]
        rng.shuffle(order)
        links = [(order[i], rng.choice(order[:i])) for i in range(1, len(order))]
        extra = [p for p in itertools.combinations(NAMES, 2) if p not in links and p[::-1] not in links]
        links += rng.sample(extra, rng.randint(0, len(extra)))
        rng.shuffle(links)
        for a, b in links:
            net.connect(a, b)
            for _ in range(rng.randint(0, 3)):
                name = rng.choice(NAMES)
                replicas[name].insert(rng.randint(0, len(replicas[name])), name)
            for _ in range(rng.randint(0, 20)):
                net.step()
        net.run()
        texts = {r.text for r in replicas.values()}
        assert len(texts) == 1, texts
        net.log.clear()
        net.run()
        assert net.log == []  # quiet once converged


def test_a_lost_link_is_repaired_by_resync(rng: random.Random) -> None:
    for _ in range(10):
        names = NAMES[:4]
        net, replicas = _mesh(rng, names, list(itertools.combinations(names, 2)))
        for i in range(10):
            name = rng.choice(names)
            replicas[name].insert(0, f"{name}{i}")
            for _ in range(rng.randint(0, 6)):
                net.step()
        # One link dies with whatever was in flight on it; the others relied on it.
        a, b = rng.sample(names, 2)
        net.disconnect(a, b)
        for i in range(10):
            name = rng.choice(names)
            replicas[name].insert(0, f"{name}{i}")
        net.run()
        assert len({r.text for r in replicas.values()}) == 1
        # Now a and b hear of each other's edits through the others.
        replicas[a].insert(0, "after")
        net.run()
        assert replicas[b].text.startswith("after")


def _unready_updates(rng: random.Random, count: int) -> tuple[Replica, list[bytes]]:
    """``count`` updates that all depend on a first edit the receiver never gets."""
    source = make_replica(rng)
    source.insert(0, "never sent")
    updates: list[bytes] = []
    source.subscribe_updates(lambda update, origin, local: updates.append(update))
    for i in range(count):
        source.insert(len(source), str(i % 10))
    return source, updates


def _synced(protocol: SyncProtocol, peer: str) -> None:
    protocol.add_peer(peer)
    protocol.receive_message(peer, encode_sync_step1(b"\x00"), 0.0)
    protocol.messages_for(peer, 0.0)


def test_a_peer_that_leaves_10000_unready_updates_costs_the_others_nothing(rng: random.Random) -> None:
    receiver = make_replica(rng)
    protocol = SyncProtocol(receiver, now=0.0)
    _synced(protocol, "leaver")
    _synced(protocol, "friend")
    _, unready = _unready_updates(rng, 10_000)
    for update in unready:
        protocol.receive_message("leaver", encode_sync_update(update), 0.0)
    stats = protocol.statistics()
    assert stats.held_updates == 10_000 and stats.resyncs == 0
    assert stats.held_bytes == sum(len(u) for u in unready)

    friend = make_replica(rng)
    friend.subscribe_updates(
        lambda update, origin, local: protocol.receive_message("friend", encode_sync_update(update), 0.0)
    )
    for i in range(500):
        friend.insert(len(friend), str(i % 10))
    assert receiver.text == friend.text
    # Not one held update was looked at while the friend's 500 updates went in.
    assert protocol.statistics().held_wakeups == 0

    protocol.remove_peer("leaver")
    stats = protocol.statistics()
    assert stats.held_updates == 0 and stats.held_bytes == 0
    assert protocol._held._waiting == {}  # the index holds nothing of it either


def test_the_causal_buffer_is_bounded_in_bytes_per_peer(rng: random.Random) -> None:
    receiver = make_replica(rng)
    limit = 40_000
    protocol = SyncProtocol(receiver, now=0.0, max_held_bytes=limit)
    _synced(protocol, "flooder")
    _synced(protocol, "friend")
    _, unready = _unready_updates(rng, 6_000)
    for update in unready:
        protocol.receive_message("flooder", encode_sync_update(update), 0.0)
        assert protocol.statistics().held_bytes <= limit
    assert protocol.statistics().resyncs >= 1
    # The flooder's budget is its own: the friend's unready updates are still held.
    _, friends = _unready_updates(rng, 50)
    for update in friends:
        protocol.receive_message("friend", encode_sync_update(update), 0.0)
    assert protocol._held.held_by("friend") == (50, sum(len(u) for u in friends))


def test_released_chain_costs_one_look_per_update(rng: random.Random) -> None:
    source = make_replica(rng)
    updates: list[bytes] = []
    source.subscribe_updates(lambda update, origin, local: updates.append(update))
    for i in range(10_000):
        source.insert(len(source), str(i % 10))
    receiver = make_replica(rng)
    protocol = SyncProtocol(receiver, now=0.0)
    _synced(protocol, "p")
    for update in reversed(updates[1:]):
        protocol.receive_message("p", encode_sync_update(update), 0.0)
    assert protocol.statistics().held_updates == 9_999
    protocol.receive_message("p", encode_sync_update(updates[0]), 0.0)
    stats = protocol.statistics()
    assert receiver.text == source.text and stats.held_updates == 0
    # Each held update was looked at again exactly once, when its predecessor landed
    # (a rescan of everything held would be ~50 million looks).
    assert stats.held_wakeups == 9_999


def test_a_blocked_peers_queue_stays_bounded_and_catches_up(rng: random.Random) -> None:
    net = VirtualNet(rng)
    a, b = make_replica(rng), make_replica(rng)
    limit = 4_000
    net.add("a", a, max_queued_bytes=limit)
    net.add("b", b)
    net.connect("a", "b")
    net.run()
    protocol = net.nodes["a"]
    # b's link is blocked: nothing is collected from a for a while, a keeps typing
    # in many places (updates that merge poorly).
    for i in range(3_000):
        a.insert(rng.randint(0, len(a)), chr(ord("a") + i % 26))
        assert protocol.statistics().queued_bytes <= limit
    stats = protocol.statistics()
    assert stats.queue_merges >= 1 and stats.queue_overflows >= 1
    net.run()
    assert b.text == a.text
    assert protocol.statistics().queued_bytes == 0


def test_mesh_messages_round_trip_and_bad_ones_are_counted(rng: random.Random) -> None:
    from aetherflow_sdk.replica._wire import MeshNeighbors, encode_mesh_neighbors, parse_message_untrusted

    data = encode_mesh_neighbors(7, [3, 1 << 40], resync=True)
    assert parse_message_untrusted(data) == MeshNeighbors(node=7, neighbors=(3, 1 << 40), resync=True)
    protocol = SyncProtocol(make_replica(rng), now=0.0)
    protocol.add_peer("p")
    for bad in (data[:-1], data + b"\x00", b"\x64\x02\x07\x00", b"\x64\x00\x07\xff\xff\x03"):
        protocol.receive_message("p", bad, 0.0)
    # A peer may not claim our own mesh ID.
    protocol.receive_message("p", encode_mesh_neighbors(protocol.mesh_id, []), 0.0)
    assert protocol.statistics().bad_messages == 5
