"""The replica over real Quantum connections on loopback (real UDP sockets)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from aetherflow_sdk import quantum
from aetherflow_sdk.quantum import Connection
from aetherflow_sdk.replica import Replica, ReplicaSync

from .conftest import load_trace, make_replica
from .test_shell import wait_until

LOOPBACK = ("127.0.0.1", 0)


@asynccontextmanager
async def quantum_pair() -> AsyncIterator[tuple[Connection, Connection]]:
    """Two endpoints on loopback and one connection between them (both ends)."""
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        accepted: list[Connection] = []
        async with anyio.create_task_group() as tg:

            async def accept() -> None:
                accepted.append(await server.accept())

            tg.start_soon(accept)
            with anyio.fail_after(10):
                dialed = await client.connect(server.local_address, peer_id=server.node_id)
        yield dialed, accepted[0]


async def test_offline_edits_converge_over_quantum_within_two_seconds(rng: random.Random) -> None:
    a, b = make_replica(rng), make_replica(rng)
    a.insert(0, "base\n")
    b.apply_update(a.encode_update())
    for i in range(500):
        for replica, tag in ((a, "a"), (b, "b")):
            boundaries = [0] + [j + 1 for j, ch in enumerate(replica.text) if ch in ">\n"]
            replica.insert(rng.choice(boundaries), f"<{tag}{i}>")
    async with (
        quantum_pair() as (left, right),
        ReplicaSync(a) as sync_a,
        ReplicaSync(b) as sync_b,
        anyio.create_task_group() as tg,
    ):
        start = time.monotonic()
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        await wait_until(lambda: a.text == b.text, 10, "converged over Quantum", sync_a, sync_b)
        elapsed = time.monotonic() - start
        tg.cancel_scope.cancel()
    for i in range(500):
        assert a.text.count(f"<a{i}>") == 1 and b.text.count(f"<b{i}>") == 1
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


async def test_presence_over_quantum_datagrams(rng: random.Random) -> None:
    a, b = make_replica(rng), make_replica(rng)
    a.insert(0, "héllo wörld")
    async with (
        quantum_pair() as (left, right),
        ReplicaSync(a, presence_as_datagrams=True) as sync_a,
        ReplicaSync(b, presence_as_datagrams=True) as sync_b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        await wait_until(lambda: b.text == a.text, 10, "synced", sync_a, sync_b)
        sync_a.set_presence(name="ada", color="#30bced", anchor=6, head=11)
        await wait_until(lambda: bool(sync_b.presence()), 10, "presence arrived", sync_a, sync_b)
        (seen,) = sync_b.presence().values()
        assert b.text[seen.anchor : seen.head] == "wörld"  # type: ignore[misc]
        await sync_a.aclose()
        await wait_until(lambda: not sync_b.presence(), 10, "presence left", sync_a, sync_b)
        tg.cancel_scope.cancel()


async def test_automerge_paper_streamed_over_quantum(rng: random.Random) -> None:
    """A replays (a prefix of) the trace at full speed while B follows over Quantum.

    The full trace runs once in test_traces.py; here 60,000 patches keep CI time down.
    """
    trace = load_trace("automerge-paper.json.gz")
    patches = [p for txn in trace["txns"] for p in txn["patches"]][:60_000]
    expected = ""
    for position, deleted, inserted in patches:
        expected = expected[:position] + inserted + expected[position + deleted :]
    a, b = make_replica(rng), Replica("paper")
    async with (
        quantum_pair() as (left, right),
        ReplicaSync(a) as sync_a,
        ReplicaSync(b) as sync_b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        for i, (position, deleted, inserted) in enumerate(patches):
            a.replace(position, deleted, inserted)
            if i % 200 == 199:
                await anyio.lowlevel.checkpoint()  # let the sender run; no waiting
        await wait_until(lambda: b.text == expected, 30, "B caught up", sync_a, sync_b)
        tg.cancel_scope.cancel()
    assert a.text == b.text == expected
