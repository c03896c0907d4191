"""Paths and raw datagrams over real UDP on loopback: one socket carries Quantum packets and
raw datagrams both ways; a connection migrates to a second port, and to and from a relay."""

from __future__ import annotations

import math
import socket
from contextlib import suppress

import anyio
import anyio.abc
import pytest
import trio

from aetherflow_sdk import ConnectionClosed, LocalProtocolError, quantum

from ._endpoints import LOOPBACK, UdpForwarder, echo_forever
from ._relay import RelayPath, UdpRelay, register_frame

pytestmark = pytest.mark.timeout(60)


async def test_raw_datagrams_and_quantum_packets_interleave_on_one_socket_both_ways() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        at_server: list[tuple[bytes, tuple[str, int]]] = []
        at_client: list[tuple[bytes, tuple[str, int]]] = []
        server_raw_send, server_raw = trio.open_memory_channel[tuple[bytes, tuple[str, int]]](math.inf)
        client_raw_send, client_raw = trio.open_memory_channel[tuple[bytes, tuple[str, int]]](math.inf)
        server.set_raw_handler(lambda data, address: server_raw_send.send_nowait((data, address)))
        client.set_raw_handler(lambda data, address: client_raw_send.send_nowait((data, address)))
        nursery.start_soon(echo_forever, server)
        with trio.fail_after(30):
            conn = await client.connect(server.local_address, peer_id=server.node_id)
            for i in range(300):
                message = i.to_bytes(4, "big") * (1 + i % 300)
                await conn.send(message)
                assert client.send_raw(b"\xaa" + i.to_bytes(4, "big"), server.local_address)
                assert server.send_raw(b"\xbb" + i.to_bytes(4, "big") * 50, client.local_address)
                assert await conn.receive() == message
            for _ in range(300):
                at_server.append(await server_raw.receive())
                at_client.append(await client_raw.receive())
        assert sorted(at_server) == [
            (b"\xaa" + i.to_bytes(4, "big"), client.local_address) for i in range(300)
        ]
        assert sorted(at_client) == [
            (b"\xbb" + i.to_bytes(4, "big") * 50, server.local_address) for i in range(300)
        ]
        for endpoint in (server, client):
            stats = endpoint.statistics()
            assert stats.raw_datagrams_received == stats.raw_datagrams_sent == 300
            assert stats.bad_packets == stats.raw_datagrams_dropped == stats.raw_datagrams_refused == 0
        assert conn.statistics().messages_received == 300

        # An address that no connection has proven: 1200 bytes unasked, then 3x what it sent.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(LOOPBACK)
            address = stranger.getsockname()
            assert server.send_raw(b"\xcc" * 1200, address)
            assert not server.send_raw(b"\xcc", address)
            assert server.statistics().raw_datagrams_refused == 1
            with pytest.raises(LocalProtocolError, match="first-byte rule"):
                server.send_raw(b"\x01 not raw", address)
            with pytest.raises(LocalProtocolError, match="takes bytes"):
                server.send_raw("text", address)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


async def test_migrate_to_a_second_port_mid_stream_keeps_every_message() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        server_events = server.events()
        nursery.start_soon(echo_forever, server)
        forwarder = await nursery.start(UdpForwarder(server.local_address).run)
        messages = [i.to_bytes(4, "big") * 300 for i in range(2000)]
        echoed: list[bytes] = []
        with trio.fail_after(30):
            conn = await client.connect(server.local_address, peer_id=server.node_id)

            async def sender() -> None:
                for message in messages:
                    await conn.send(message)

            nursery.start_soon(sender)
            while len(echoed) < 200:
                echoed.append(await conn.receive())
            await conn.migrate(forwarder.address)  # the server's second port, through the forward
            assert conn.peer_address == forwarder.address
            assert isinstance(conn.path, quantum.DirectPath)
            while len(echoed) < len(messages):
                echoed.append(await conn.receive())
            assert echoed == messages
            established = await anext(server_events)
            assert isinstance(established, quantum.ConnectionEstablished)
            moved = await anext(server_events)
            assert moved == quantum.PathChanged(
                connection=established.connection, old=client.local_address, new=forwarder.outward_address
            )
            assert established.connection.peer_address == forwarder.outward_address
        assert conn.statistics().path_migrations == 1
        with trio.fail_after(30):
            await conn.aclose()  # through the forward, while it still runs
            closed = await anext(server_events)
            assert isinstance(closed, quantum.ConnectionEnded)  # the event: the CLOSE got through
        nursery.cancel_scope.cancel()


async def test_a_relayed_path_over_udp_then_back_to_direct() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        relay = await nursery.start(UdpRelay(mtu=1300).run)
        nursery.start_soon(echo_forever, server)
        with trio.fail_after(30):
            conn = await client.connect(server.local_address, peer_id=server.node_id)
            # Both register with the relay from their Quantum socket (raw datagrams, first byte 0xAF).
            assert client.send_raw(register_frame(client.node_id), relay.address)
            assert server.send_raw(register_frame(server.node_id), relay.address)
            await relay.registered.wait()
            server.add_path(RelayPath(relay.address, client.node_id, relay.mtu))
            to_server = RelayPath(relay.address, server.node_id, relay.mtu)
            await conn.migrate_to_path(to_server)
            assert conn.path is to_server and conn.peer_address == relay.address
            for i in range(300):
                message = i.to_bytes(4, "big") * 1000  # 4 kB: several relayed packets each
                await conn.send(message)
                assert await conn.receive() == message
            forwarded = relay.forwarded
            assert forwarded > 600 and relay.oversized == 0
            assert server.statistics().framed_datagrams_received > 300
            assert client.statistics().framed_datagrams_received > 300
            await conn.migrate(server.local_address)
            assert conn.peer_address == server.local_address
            for i in range(100):
                await conn.send(b"direct %d" % i)
                assert await conn.receive() == b"direct %d" % i
            assert relay.forwarded - forwarded < 20  # what was in flight on the relay when it moved
        nursery.cancel_scope.cancel()


async def test_migrating_before_the_handshake_or_to_a_bad_address_is_refused_clearly() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_forever, server)
        conn = await client.connect(server.local_address, peer_id=server.node_id)
        with pytest.raises(LocalProtocolError, match=r"1\.\.65535"):
            await conn.migrate(("127.0.0.1", 0))
        with pytest.raises(LocalProtocolError, match=r"takes a quantum\.Path"):
            conn.migrate_to_path(("127.0.0.1", 9))  # type: ignore[arg-type]

        async def handler(data: bytes, address: tuple[str, int]) -> None: ...

        with pytest.raises(LocalProtocolError, match="must not block"):
            client.set_raw_handler(handler)  # type: ignore[arg-type]
        assert conn.peer_address == server.local_address  # nothing moved
        nursery.cancel_scope.cancel()


def test_migration_works_from_asyncio_too() -> None:
    """The same shell under asyncio, through a port forward written with anyio's UDP sockets."""

    async def forward(server: tuple[str, int], task_status: anyio.abc.TaskStatus[tuple[str, int]]) -> None:
        client: list[tuple[str, int]] = []
        async with (
            await anyio.create_udp_socket(local_host="127.0.0.1") as front,
            await anyio.create_udp_socket(local_host="127.0.0.1") as back,
            anyio.create_task_group() as tg,
        ):

            async def down() -> None:
                async for data, _ in back:
                    await front.sendto(data, *client[-1])

            tg.start_soon(down)
            task_status.started(front.extra(anyio.abc.SocketAttribute.local_address))
            async for data, source in front:
                client.append(source)
                await back.sendto(data, *server)

    async def main() -> list[bytes]:
        async with anyio.create_task_group() as forwarding:  # outlives the endpoints' closing
            async with (
                quantum.open_endpoint(LOOPBACK) as server,
                quantum.open_endpoint(LOOPBACK) as client,
                anyio.create_task_group() as tg,
            ):

                async def serve() -> None:
                    conn = await server.accept()
                    with suppress(ConnectionClosed):
                        while True:
                            await conn.send(await conn.receive())

                tg.start_soon(serve)
                second = await forwarding.start(forward, server.local_address)
                with anyio.fail_after(30):
                    conn = await client.connect(server.local_address, peer_id=server.node_id)
                    await conn.send(b"before")
                    got = [await conn.receive()]
                    await conn.migrate(second)
                    assert conn.peer_address == tuple(second)
                    await conn.send(b"from asyncio")
                    got.append(await conn.receive())
                    await conn.aclose()
            forwarding.cancel_scope.cancel()
        return got

    assert anyio.run(main, backend="asyncio") == [b"before", b"from asyncio"]


async def test_after_a_nat_rebinding_the_next_message_gets_through_both_ways() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        forwarder = await nursery.start(UdpForwarder(server.local_address).run)
        with trio.fail_after(30):
            conn = await client.connect(forwarder.address, peer_id=server.node_id)
            server_conn = await server.accept()
            await conn.send(b"hello")
            assert await server_conn.receive() == b"hello"
            before = forwarder.outward_address
            await forwarder.rebind()  # the NAT forgets the mapping: a new outward port
            await server_conn.send(b"down")  # goes to the old port first, and is lost there
            await conn.send(b"up")
            assert await server_conn.receive() == b"up"
            assert await conn.receive() == b"down"
            assert server_conn.peer_address == forwarder.outward_address != before
            assert server_conn.statistics().path_validated
            await conn.aclose()
            with pytest.raises(ConnectionClosed):  # the CLOSE came through the forward
                await server_conn.receive()
        nursery.cancel_scope.cancel()
