"""Endpoint events and the list of live connections, over real UDP on loopback."""

from __future__ import annotations

import gc
import weakref

import anyio
import pytest
import trio

from aetherflow_sdk import ClosedByPeer, ClosedLocally, ConnectionTimeout, quantum

from ._endpoints import LOOPBACK, UdpForwarder, echo_forever, wait_until_forgotten

pytestmark = pytest.mark.timeout(60)


async def test_events_say_established_path_changed_and_closed_and_the_list_follows() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        server_events = server.events()
        client_events = client.events()
        nursery.start_soon(echo_forever, server)
        forwarder = await nursery.start(UdpForwarder(server.local_address).run)
        with trio.fail_after(30):
            conn = await client.connect(forwarder.address, peer_id=server.node_id)

            inbound = await anext(server_events)
            assert isinstance(inbound, quantum.ConnectionEstablished)
            assert inbound.inbound and inbound.peer_id == client.node_id
            assert inbound.address == forwarder.outward_address
            outbound = await anext(client_events)
            assert outbound == quantum.ConnectionEstablished(
                connection=conn, peer_id=server.node_id, address=forwarder.address, inbound=False
            )
            server_conn = inbound.connection
            assert server.connections() == (server_conn,) and client.connections() == (conn,)

            # The client's "NAT" picks a new port: the server follows, and says so.
            old = forwarder.outward_address
            await forwarder.rebind()
            await conn.send(b"from a new port")
            assert await conn.receive() == b"from a new port"
            moved = await anext(server_events)
            assert moved == quantum.PathChanged(
                connection=server_conn, old=old, new=forwarder.outward_address
            )
            assert server_conn.peer_address == forwarder.outward_address

            await conn.aclose()
            closed_here = await anext(client_events)
            assert isinstance(closed_here, quantum.ConnectionEnded)
            assert closed_here.connection is conn and isinstance(closed_here.error, ClosedLocally)
            assert closed_here.reason == "connection closed by this side"
            closed_there = await anext(server_events)
            assert isinstance(closed_there, quantum.ConnectionEnded)
            assert closed_there.connection is server_conn
            assert isinstance(closed_there.error, ClosedByPeer)
            assert closed_there.reason == "the peer closed the connection"
            assert server.connections() == () and client.connections() == ()

            # Both sides then forget the connection entirely (after the closing period).
            held = weakref.ref(server_conn._core)
            del inbound, moved, closed_there, server_conn
            await wait_until_forgotten(server)
            await wait_until_forgotten(client)
            gc.collect()
            assert held() is None, "the server endpoint still holds a closed connection"
            assert server.statistics().active_connections == 0
        nursery.cancel_scope.cancel()


async def test_every_stream_sees_every_event_from_its_creation_and_ends_with_the_endpoint() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server:
        async with quantum.open_endpoint(LOOPBACK) as client, trio.open_nursery() as nursery:
            nursery.start_soon(echo_forever, server)
            first, second = server.events(), server.events()
            with trio.fail_after(30):
                seen = []

                async def next_event() -> None:
                    seen.append(await anext(first))
                    assert seen[-1] == await anext(second)

                one = await client.connect(server.local_address)
                await next_event()  # the server's side of it is established too
                late = server.events()  # created after the first connection was established
                one.abort("enough")
                await next_event()
                two = await client.connect(server.local_address)
                await next_event()
                assert [type(e) for e in seen] == [
                    quantum.ConnectionEstablished,
                    quantum.ConnectionEnded,
                    quantum.ConnectionEstablished,
                ]
                assert seen[1].connection is seen[0].connection
                assert isinstance(seen[1], quantum.ConnectionEnded)
                assert "enough" in seen[1].reason  # the peer's reason reaches the server's event
                assert await anext(late) is seen[1]
                assert client.connections() == (two,)
            nursery.cancel_scope.cancel()
        stream = server.events()
    # The endpoint is closed: streams end once drained.
    assert [e async for e in stream] == []
    assert [type(e) async for e in first] == [quantum.ConnectionEnded]  # two, closed at exit


async def test_a_failed_dial_is_not_an_event_and_is_not_held() -> None:
    config = quantum.QuantumConfig(handshake_timeout=0.3)
    async with quantum.open_endpoint(LOOPBACK, config=config) as client:
        events = client.events()
        silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with silent:
            await silent.bind(("127.0.0.1", 0))  # bound, never answers
            with pytest.raises(ConnectionTimeout):
                await client.connect(silent.getsockname())
        assert client.connections() == () and client._wrappers == {}
        assert not events._queue


async def test_connections_nobody_accepted_are_forgotten_too() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        events = server.events()
        with trio.fail_after(30):
            conns = [await client.connect(server.local_address) for _ in range(5)]
            for _ in conns:  # listed and announced before anyone calls accept()
                assert isinstance(await anext(events), quantum.ConnectionEstablished)
            assert len(server.connections()) == 5
            for conn in conns:
                await conn.aclose()
            await wait_until_forgotten(server)
        assert server.connections() == () and not server._core.accepted


def test_events_and_the_list_work_from_asyncio_too() -> None:
    async def main() -> list[str]:
        async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
            events = server.events()
            with anyio.fail_after(30):
                conn = await client.connect(server.local_address)
                peer = await server.accept()
                seen = [type(await anext(events)).__name__]
                assert server.connections() == (peer,)
                await conn.send(b"from asyncio")
                assert await peer.receive() == b"from asyncio"
                await conn.aclose()
                seen.append(type(await anext(events)).__name__)
                assert server.connections() == ()
                return seen

    assert anyio.run(main, backend="asyncio") == ["ConnectionEstablished", "ConnectionEnded"]
