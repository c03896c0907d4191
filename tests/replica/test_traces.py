"""Real editing traces (josephg/editing-traces): sequential replay and a concurrent two-agent replay."""

from __future__ import annotations

import random
from typing import Any

from aetherflow_sdk.replica import Replica, SyncProtocol

from .conftest import load_trace


def test_automerge_paper_full_replay_gives_end_content() -> None:
    """The one full run of the 259,778-patch trace in the suite (about 10 s)."""
    trace = load_trace("automerge-paper.json.gz")
    replica = Replica("paper")
    for txn in trace["txns"]:
        patches = txn["patches"]
        if len(patches) == 1:
            position, deleted, inserted = patches[0]
            replica.replace(position, deleted, inserted)
            continue
        with replica.batch():
            for position, deleted, inserted in patches:
                replica.replace(position, deleted, inserted)
    assert replica.text == trace["endContent"]
    assert len(replica) == len(trace["endContent"])


def _ancestors_missing(txns: list[dict[str, Any]], start: list[int], have: set[int]) -> list[int]:
    """Every ancestor of the ``start`` transactions (inclusive) not in ``have``, in index order."""
    missing: set[int] = set()
    stack = [p for p in start if p not in have]
    for _ in range(len(txns) + 1):  # bounded: each transaction is visited at most once
        if not stack:
            break
        index = stack.pop()
        if index in missing or index in have:
            continue
        missing.add(index)
        stack.extend(p for p in txns[index]["parents"] if p not in have and p not in missing)
    else:
        raise AssertionError("parent graph walk did not terminate")
    return sorted(missing)


def test_friendsforever_concurrent_replay_through_the_sync_protocol(rng: random.Random) -> None:
    """Two agents, each on its own replica; every transaction is applied on top of exactly its
    parents, and the other agent's transactions arrive only as sync-protocol messages."""
    trace = load_trace("friendsforever-concurrent.json.gz")
    txns: list[dict[str, Any]] = trace["txns"]
    assert trace["numAgents"] == 2
    # Concurrent inserts that tie are ordered by Yjs client ID. The trace's endContent
    # puts agent 0's text first in such ties (measured: client IDs in agent order
    # always give endContent, the reverse order never does), so agent 0 gets the
    # smaller ID.
    low, high = sorted(rng.sample(range(1, 1 << 32), 2))
    replicas = [Replica("ff", client_id=low), Replica("ff", client_id=high)]
    protocols = [SyncProtocol(r, now=0.0) for r in replicas]
    protocols[0].add_peer(1)
    protocols[1].add_peer(0)
    for _ in range(4):  # the step 1 / step 2 handshake, both ways
        for me, peer in ((0, 1), (1, 0)):
            for out in protocols[me].messages_for(peer, 0.0):
                protocols[peer].receive_message(me, out.data, 0.0)
    assert [protocols[0].peer_state(1), protocols[1].peer_state(0)] == ["synced", "synced"]

    message_of: dict[int, bytes] = {}  # txn index -> the update message its author sent
    have: list[set[int]] = [set(), set()]
    for index, txn in enumerate(txns):
        agent = txn["agent"]
        other = 1 - agent
        for needed in _ancestors_missing(txns, txn["parents"], have[agent]):
            protocols[agent].receive_message(other, message_of[needed], 0.0)
            have[agent].add(needed)
        replica = replicas[agent]
        with replica.batch():
            for position, deleted, inserted in txn["patches"]:
                replica.replace(position, deleted, inserted)
        out = protocols[agent].messages_for(other, 0.0)
        assert len(out) == 1, f"txn {index}: expected one update message, got {len(out)}"
        message_of[index] = out[0].data
        have[agent].add(index)
    for agent in (0, 1):
        for index in range(len(txns)):
            if index not in have[agent]:
                protocols[agent].receive_message(1 - agent, message_of[index], 0.0)
    assert replicas[0].text == trace["endContent"]
    assert replicas[1].text == trace["endContent"]
    for protocol in protocols:
        stats = protocol.statistics()
        assert stats.bad_messages == 0 and stats.updates_redundant == 0
