"""Channels over real UDP sockets on loopback: open/accept by name, refuse, limit, close one.

Also proves that sessions and the replica's sync run over a channel unchanged (two
documents on one connection), and that a channel whose reader stops reading stops only
its own sender.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import trio

from aetherflow_sdk import (
    ChannelRefused,
    ClosedByPeer,
    ClosedLocally,
    ConnectionClosed,
    LocalProtocolError,
    quantum,
)
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum import Connection, Endpoint, QuantumConfig
from aetherflow_sdk.replica import ReplicaSync, is_write_message
from aetherflow_sdk.session import (
    SessionConfig,
    SessionManager,
    SessionServer,
    TokenVerifier,
    issue_token,
    open_session,
)
from tests.replica.conftest import make_replica
from tests.replica.test_shell import wait_until

LOOPBACK = ("127.0.0.1", 0)
TIMEOUT = 20  # generous: the machine is shared; a healthy run takes well under a second


@asynccontextmanager
async def connected(
    server_config: QuantumConfig | None = None, client_config: QuantumConfig | None = None
) -> AsyncIterator[tuple[Endpoint, Connection, Connection]]:
    """(server endpoint, client connection, server connection) on loopback."""
    async with (
        quantum.open_endpoint(LOOPBACK, config=server_config) as server,
        quantum.open_endpoint(LOOPBACK, config=client_config) as client,
    ):
        accepted: list[Connection] = []
        async with anyio.create_task_group() as tg:

            async def accept() -> None:
                accepted.append(await server.accept())

            tg.start_soon(accept)
            with anyio.fail_after(TIMEOUT):
                dialed = await client.connect(server.local_address, peer_id=server.node_id)
        yield server, dialed, accepted[0]


async def test_open_accept_messages_and_datagrams_on_two_channels_and_channel_zero() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected() as (server_ep, client, server):
            async with trio.open_nursery() as nursery:
                accepted: list[quantum.Channel] = []

                async def accept_two() -> None:
                    accepted.append(await server.accept_channel())
                    accepted.append(await server.accept_channel())

                nursery.start_soon(accept_two)
                one = await client.open_channel(b"doc-one")
                two = await client.open_channel(b"doc-two")
            s_one, s_two = accepted
            assert (s_one.name, s_two.name) == (b"doc-one", b"doc-two")
            assert one.channel_id == s_one.channel_id == 1 and two.channel_id == s_two.channel_id == 3
            assert one.peer_id == server_ep.node_id and s_one.peer_id == server.peer_id
            assert one.connection is client
            for i in range(50):
                await one.send(b"1:%d" % i, ordered=i % 2 == 0)
                await two.send(b"2:%d" % i)
                await client.send(b"0:%d" % i)
            got_one = sorted([await s_one.receive() for _ in range(50)])
            assert got_one == sorted(b"1:%d" % i for i in range(50))
            assert [await s_two.receive() for _ in range(50)] == [b"2:%d" % i for i in range(50)]
            assert [await server.receive() for _ in range(50)] == [b"0:%d" % i for i in range(50)]
            # The server side answers on the channel the client opened.
            await s_two.send(b"back")
            assert await two.receive() == b"back"
            s_one.send_datagram(b"dg-one")
            assert await one.receive_datagram() == b"dg-one"
            stats = client.statistics()
            assert stats.channels_open == 2 and stats.channels_opened == 2


async def test_the_filter_refuses_unknown_names_cleanly_and_the_connection_carries_on() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected() as (server_ep, client, server):
            seen: list[tuple[bytes, bytes]] = []

            def only_known(peer_id: bytes, name: bytes) -> bool:
                seen.append((peer_id, name))
                return name == b"known"

            server_ep.set_channel_filter(only_known)
            with pytest.raises(ChannelRefused) as refused:
                await client.open_channel(b"unknown")
            assert "filter" in refused.value.reason
            assert seen == [(server.peer_id, b"unknown")]
            channel = await client.open_channel(b"known")
            assert (await server.accept_channel()).name == b"known"
            await channel.send(b"still fine")
            await client.send(b"zero too")
            assert await server.receive() == b"zero too"
            assert client.statistics().channels_refused == 1


async def test_a_filter_that_raises_refuses_and_never_kills_the_endpoint() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected() as (server_ep, client, server):

            def broken(peer_id: bytes, name: bytes) -> bool:
                raise RuntimeError("bug in the application's filter")

            server_ep.set_channel_filter(broken)
            with pytest.raises(ChannelRefused, match="RuntimeError"):
                await client.open_channel(b"x")
            await client.send(b"alive")
            assert await server.receive() == b"alive"
            with pytest.raises(LocalProtocolError):
                server_ep.set_channel_filter("not callable")  # type: ignore[arg-type]


async def test_the_channel_limit_refuses_past_it_and_a_closed_channel_frees_its_slot() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(server_config=QuantumConfig(max_channels=2)) as (_, client, server):
            first = await client.open_channel(b"a")
            await client.open_channel(b"b")
            with pytest.raises(ChannelRefused, match="too many channels") as refused:
                await client.open_channel(b"c")
            assert "limit 2" in refused.value.reason
            s_first = await server.accept_channel()
            await server.accept_channel()
            await first.aclose()
            with pytest.raises(ClosedByPeer):
                await s_first.receive()
            await s_first.aclose()  # the server forgets it: the slot is free again
            third = await client.open_channel(b"c")
            assert (await server.accept_channel()).name == b"c"
            assert third.channel_id == 7  # IDs are never reused
        async with connected(client_config=QuantumConfig(max_channels=1)) as (_, client, _):
            await client.open_channel(b"a")
            with pytest.raises(ChannelRefused, match="this side"):
                await client.open_channel(b"b")


async def test_closing_one_channel_delivers_what_was_sent_and_leaves_the_rest_running() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected() as (_, client, server):
            doomed = await client.open_channel(b"doomed")
            kept = await client.open_channel(b"kept")
            s_doomed = await server.accept_channel()
            s_kept = await server.accept_channel()
            payloads = [bytes([i]) * (1000 * i) for i in range(1, 30)]
            for payload in payloads:
                await doomed.send(payload)
            await doomed.aclose()  # returns once everything above is acknowledged
            assert [await s_doomed.receive() for _ in payloads] == payloads
            with pytest.raises(ClosedByPeer):
                await s_doomed.receive()
            with pytest.raises(ClosedByPeer):
                await s_doomed.send(b"too late")
            with pytest.raises(ClosedLocally):
                await doomed.send(b"after close")
            with pytest.raises(ClosedLocally):
                await doomed.receive()
            await kept.send(b"kept")
            assert await s_kept.receive() == b"kept"
            await client.send(b"zero")
            assert await server.receive() == b"zero"
            # Closing the connection ends every channel with the connection's error.
            await client.aclose()
            with pytest.raises(ConnectionClosed):
                await s_kept.receive()


async def test_a_channel_whose_reader_stops_does_not_stop_the_others() -> None:
    # Small windows so that the stuck channel fills its own within a few hundred KB.
    config = QuantumConfig(receive_window=256 * 1024, max_message_size=64 * 1024, send_buffer=256 * 1024)
    with trio.fail_after(TIMEOUT):
        async with connected(server_config=config, client_config=config) as (_, client, server):
            stuck = await client.open_channel(b"stuck")
            live = await client.open_channel(b"live")
            await server.accept_channel()  # nobody ever reads this one
            s_live = await server.accept_channel()
            sent_on_stuck = 0

            async def fill_stuck() -> None:
                nonlocal sent_on_stuck
                for _ in range(16):  # 1 MB: four windows; the window and the send buffer stop it
                    await stuck.send(b"s" * 64 * 1024)
                    sent_on_stuck += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fill_stuck)
                for i in range(40):  # 40 x 60 KB: far more than the stuck channel's window
                    await live.send(bytes([i]) * 60_000)
                    assert await s_live.receive() == bytes([i]) * 60_000
                await client.send(b"zero")
                assert await server.receive() == b"zero"
                # The stuck channel got at most its window plus its send buffer, never more.
                assert sent_on_stuck <= (256 + 256) // 64 + 1
                nursery.cancel_scope.cancel()
            assert client.statistics().state == "established"
            # A graceful close would wait for the stuck channel's data, like channel 0's.
            client.abort("the stuck channel's data will never be read")


async def test_a_session_runs_over_a_channel_unchanged() -> None:
    owner = Identity.from_private_bytes(bytes(range(32)))
    manager = SessionManager(SessionConfig(ttl=30, quiet_period=10, heartbeat_interval=5))
    sessions = SessionServer(manager, TokenVerifier([owner.node_id]), is_write=is_write_message)
    with trio.fail_after(TIMEOUT):
        async with connected() as (_, client, server):

            async def serve() -> None:
                channel = await server.accept_channel()
                async with sessions.accept(channel) as session:  # type: ignore[arg-type]
                    message = await session.receive()
                    await session.send(b"echo:" + message)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                channel = await client.open_channel(b"doc")
                token = issue_token(
                    owner, user="alice", document="doc", permission="rw", expires_in=3600, now=time.time()
                )
                async with open_session(channel, document="doc", token=token) as session:  # type: ignore[arg-type]
                    await session.send(b"hello")
                    assert await session.receive() == b"echo:hello"
            assert sessions.statistics().accepted == 1


async def test_two_documents_sync_over_two_channels_of_one_connection() -> None:
    rng = random.Random(8)
    docs = [(make_replica(rng), make_replica(rng)) for _ in range(2)]
    for index, (left, right) in enumerate(docs):
        left.insert(0, f"document {index} from the left\n")
        right.insert(0, f"document {index} from the right\n")
    with trio.fail_after(TIMEOUT):
        async with connected() as (_, client, server), anyio.create_task_group() as tg:
            channels = []
            for index in range(2):
                opened = await client.open_channel(b"doc-%d" % index)
                channels.append((opened, await server.accept_channel()))
            syncs = []
            for (left, right), (near, far) in zip(docs, channels, strict=True):
                sync_left, sync_right = ReplicaSync(left), ReplicaSync(right)
                syncs += [sync_left, sync_right]
                tg.start_soon(sync_left.serve, near)
                tg.start_soon(sync_right.serve, far)
            for left, right in docs:
                await wait_until(lambda left=left, right=right: left.text == right.text, 10, "converged")
            docs[1][0].insert(0, "late edit\n")
            await wait_until(lambda: docs[1][1].text.startswith("late edit"), 10, "late edit")
            tg.cancel_scope.cancel()
    (a0, _), (_, b1) = docs
    assert "document 0 from the right" in a0.text and "document 1" not in a0.text
    assert "document 1 from the left" in b1.text and "document 0" not in b1.text


def test_channels_work_from_asyncio_too() -> None:
    async def main() -> bytes:
        async with connected() as (_, client, server):
            task = asyncio.ensure_future(server.accept_channel())
            channel = await client.open_channel(b"asyncio")
            accepted = await task
            await channel.send(b"ping")
            return await accepted.receive()

    assert asyncio.run(main()) == b"ping"
