"""ReplicaSync (the async shell) over in-memory MessageChannels: real tasks, real clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio
import pytest

from aetherflow_sdk._channel import MessageChannel, memory_channel_pair
from aetherflow_sdk.replica import Replica, ReplicaSync

from .conftest import make_replica


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, *syncs: ReplicaSync) -> None:
    """Re-check ``condition`` each time one of ``syncs`` processes something; fail after ``timeout``."""
    with anyio.fail_after(timeout):
        while True:
            events = [sync.activity for sync in syncs]  # taken before the check: no lost wake-up
            if condition():
                break
            async with anyio.create_task_group() as tg:

                async def wake(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                for event in events:
                    tg.start_soon(wake, event)
    assert condition(), what


async def test_two_replicas_sync_live_and_show_presence(rng: random.Random) -> None:
    a, b = make_replica(rng), make_replica(rng)
    left, right = memory_channel_pair()
    async with ReplicaSync(a) as sync_a, ReplicaSync(b) as sync_b, anyio.create_task_group() as tg:
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        a.insert(0, "hello from a")
        await wait_until(lambda: b.text == "hello from a", 5, "b got a's edit", sync_a, sync_b)
        b.insert(0, "b says ")
        await wait_until(lambda: a.text == "b says hello from a", 5, "a got b's edit", sync_a, sync_b)
        sync_a.set_presence(name="ada", color="#30bced", anchor=7, head=11)
        await wait_until(lambda: bool(sync_b.presence()), 5, "b sees a's presence", sync_a, sync_b)
        (seen,) = sync_b.presence().values()
        assert (seen.name, seen.anchor, seen.head) == ("ada", 7, 11)
        await sync_a.aclose()  # clean close: b drops a's presence at once
        await wait_until(lambda: not sync_b.presence(), 5, "a's presence is gone", sync_a, sync_b)
        tg.cancel_scope.cancel()


async def run_offline_merge(
    rng: random.Random, make_channels: Callable[[], object], edits: int = 500
) -> tuple[Replica, Replica, float]:
    """Two replicas make ``edits`` edits each while apart, then reconnect; returns the time to converge."""
    a, b = make_replica(rng), make_replica(rng)
    a.insert(0, "base\n")
    b.apply_update(a.encode_update())
    for i in range(edits):
        for replica, tag in ((a, "a"), (b, "b")):
            boundaries = [0] + [j + 1 for j, ch in enumerate(replica.text) if ch in ">\n"]
            replica.insert(rng.choice(boundaries), f"<{tag}{i}>")
    async with ReplicaSync(a) as sync_a, ReplicaSync(b) as sync_b, anyio.create_task_group() as tg:
        pair = make_channels()
        if hasattr(pair, "__aenter__"):
            left, right = await pair.__aenter__()  # type: ignore[attr-defined]
        else:
            left, right = pair  # type: ignore[misc]
        start = time.monotonic()
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        await wait_until(lambda: a.text == b.text, 10, "replicas converged", sync_a, sync_b)
        elapsed = time.monotonic() - start
        tg.cancel_scope.cancel()
    return a, b, elapsed


async def test_offline_edits_converge_after_reconnect(rng: random.Random) -> None:
    a, _, elapsed = await run_offline_merge(rng, memory_channel_pair)
    for i in range(500):
        assert a.text.count(f"<a{i}>") == 1 and a.text.count(f"<b{i}>") == 1
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


async def test_read_only_channel(rng: random.Random) -> None:
    owner, reader = make_replica(rng), make_replica(rng)
    owner.insert(0, "owner")
    left, right = memory_channel_pair()
    async with (
        ReplicaSync(owner) as sync_owner,
        ReplicaSync(reader) as sync_reader,
        anyio.create_task_group() as tg,
    ):
        syncs = (sync_owner, sync_reader)
        tg.start_soon(lambda: sync_owner.serve(left, can_write=False))
        tg.start_soon(sync_reader.serve, right)
        await wait_until(lambda: reader.text == "owner", 5, "reader got the text", *syncs)
        reader.insert(0, "x")
        owner.insert(len(owner), "!")
        await wait_until(lambda: reader.text == "xowner!", 5, "reader got the next edit", *syncs)
        assert owner.text == "owner!"
        tg.cancel_scope.cancel()


async def test_peer_channel_closing_ends_serve_and_drops_presence(rng: random.Random) -> None:
    a, b = make_replica(rng), make_replica(rng)
    left, right = memory_channel_pair()
    async with ReplicaSync(a) as sync_a, ReplicaSync(b) as sync_b, anyio.create_task_group() as tg:
        done = anyio.Event()

        async def serve_b() -> None:
            await sync_b.serve(right)
            done.set()

        tg.start_soon(sync_a.serve, left)
        tg.start_soon(serve_b)
        sync_a.set_presence(name="ada", color="#fff")
        await wait_until(lambda: bool(sync_b.presence()), 5, "presence arrived", sync_a, sync_b)
        await left.aclose()  # the connection dies (no null presence sent)
        with anyio.fail_after(5):
            await done.wait()
        assert sync_b.presence() == {}
        assert sync_b.protocol.statistics().peers == 0
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("backend", ["asyncio"])
def test_works_under_asyncio(backend: str) -> None:
    async def main() -> None:
        rng = random.Random(7)
        a, b = make_replica(rng), make_replica(rng)
        left, right = memory_channel_pair()
        channels: tuple[MessageChannel, MessageChannel] = (left, right)
        async with ReplicaSync(a) as sync_a, ReplicaSync(b) as sync_b, anyio.create_task_group() as tg:
            tg.start_soon(sync_a.serve, channels[0])
            tg.start_soon(sync_b.serve, channels[1])
            a.insert(0, "asyncio")
            await wait_until(lambda: b.text == "asyncio", 5, "synced under asyncio", sync_a, sync_b)
            tg.cancel_scope.cancel()

    anyio.run(main, backend=backend)


async def test_three_replicas_in_a_line_relay_through_the_middle(rng: random.Random) -> None:
    a, b, c = make_replica(rng), make_replica(rng), make_replica(rng)
    ab, ba = memory_channel_pair((b"\x0a" * 32, b"\x0b" * 32))
    bc, cb = memory_channel_pair((b"\x0b" * 32, b"\x0c" * 32))
    async with (
        ReplicaSync(a) as sync_a,
        ReplicaSync(b) as sync_b,
        ReplicaSync(c) as sync_c,
        anyio.create_task_group() as tg,
    ):
        syncs = (sync_a, sync_b, sync_c)
        tg.start_soon(sync_a.serve, ab)
        tg.start_soon(sync_b.serve, ba)
        tg.start_soon(sync_b.serve, bc)
        tg.start_soon(sync_c.serve, cb)
        for i in range(50):
            a.insert(len(a), f"a{i} ")
            c.insert(0, f"c{i} ")
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()
        await wait_until(lambda: a.text == b.text == c.text, 10, "all three converged", *syncs)
        sync_c.set_presence(name="cy", color="#0f0", anchor=0)
        await wait_until(lambda: len(sync_a.presence()) == 1, 10, "c's presence reached a via b", *syncs)
        assert sync_b.protocol.statistics().peers == 2
        tg.cancel_scope.cancel()


async def test_a_reconnecting_peer_replaces_its_old_channel(rng: random.Random) -> None:
    a, b = make_replica(rng), make_replica(rng)
    old_left, old_right = memory_channel_pair()
    new_left, new_right = memory_channel_pair()
    async with ReplicaSync(a) as sync_a, ReplicaSync(b) as sync_b, anyio.create_task_group() as tg:
        old_done = anyio.Event()

        async def serve_old() -> None:
            await sync_a.serve(old_left)
            old_done.set()

        tg.start_soon(serve_old)
        tg.start_soon(sync_b.serve, old_right)
        a.insert(0, "before ")
        await wait_until(lambda: b.text == "before ", 5, "first connection synced", sync_a, sync_b)
        # b comes back on a new connection while a still holds the old one (same peer ID).
        tg.start_soon(sync_a.serve, new_left)
        with anyio.fail_after(5):
            await old_done.wait()
        tg.start_soon(sync_b.serve, new_right)
        a.insert(len(a), "after")
        await wait_until(lambda: b.text == "before after", 5, "new connection synced", sync_a, sync_b)
        assert sync_a.protocol.statistics().peers == 1
        tg.cancel_scope.cancel()


async def test_default_clock_is_the_event_loop_clock(autojump_clock: object, rng: random.Random) -> None:
    """On trio's virtual clock, a silent peer's presence expires after the (virtual) timeout."""
    a, b = make_replica(rng), make_replica(rng)
    left, right = memory_channel_pair()
    # a renews only every 500 s, so for b it goes silent after announcing itself once.
    async with (
        ReplicaSync(a, awareness_timeout=1000.0) as sync_a,
        ReplicaSync(b, awareness_timeout=30.0) as sync_b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sync_a.serve, left)
        tg.start_soon(sync_b.serve, right)
        sync_a.set_presence(name="ada", color="#30bced")
        await wait_until(lambda: bool(sync_b.presence()), 5, "b sees a's presence", sync_a, sync_b)
        await anyio.sleep(60)  # virtual
        assert not sync_b.presence()
        tg.cancel_scope.cancel()
