"""Quantum over real UDP sockets on loopback, through the async endpoint."""

from __future__ import annotations

import errno
import hashlib
import os
import socket

import anyio
import pytest
import trio

import aetherflow_sdk
from aetherflow_sdk import quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum._endpoint import UDP_GRO, UDP_SEGMENT

LOOPBACK = ("127.0.0.1", 0)


async def test_echo_of_a_thousand_messages() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:

        async def echo() -> None:
            conn = await server.accept()
            for _ in range(1000):
                await conn.send(await conn.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            conn = await client.connect(server.local_address, peer_id=server.node_id)
            assert conn.peer_id == server.node_id
            for i in range(1000):
                payload = i.to_bytes(4, "big") * (1 + i % 50)
                await conn.send(payload, ordered=i % 2 == 0)
                assert await conn.receive() == payload
            stats = conn.statistics()
            assert stats.messages_received == 1000 and stats.smoothed_rtt < 1.0


async def test_fifty_megabytes_arrive_intact() -> None:
    size = 50 * 1024 * 1024
    chunk = 256 * 1024
    source = hashlib.sha256()
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        received = hashlib.sha256()
        done = trio.Event()

        async def sink() -> None:
            conn = await server.accept()
            got = 0
            while got < size:
                data = await conn.receive()
                received.update(data)
                got += len(data)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink)
            conn = await client.connect(server.local_address)
            block = bytearray(chunk)
            for offset in range(0, size, chunk):
                block[:8] = offset.to_bytes(8, "big")
                source.update(block)
                await conn.send(bytes(block), ordered=True)
            with trio.fail_after(120):
                await done.wait()
    assert received.hexdigest() == source.hexdigest()


async def test_twenty_concurrent_connections_on_one_endpoint() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server:
        results: dict[bytes, int] = {}

        async def serve_one(conn: quantum.Connection) -> None:
            total = 0
            for _ in range(50):
                total += len(await conn.receive())
            results[conn.peer_id] = total
            await conn.send(b"done")

        async def acceptor(nursery: trio.Nursery) -> None:
            for _ in range(20):
                nursery.start_soon(serve_one, await server.accept())

        async def client(index: int) -> None:
            async with quantum.open_endpoint(LOOPBACK) as endpoint:
                conn = await endpoint.connect(server.local_address)
                for _ in range(50):
                    await conn.send(bytes(100 + index))
                assert await conn.receive() == b"done"

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(acceptor, nursery)
                async with trio.open_nursery() as clients:
                    for index in range(20):
                        clients.start_soon(client, index)
        assert len(results) == 20
        assert sorted(results.values()) == sorted(50 * (100 + i) for i in range(20))
        assert server.statistics().connections_accepted == 20


async def test_graceful_close_delivers_everything_then_the_peer_sees_the_close() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        conn = await client.connect(server.local_address)
        peer = await server.accept()
        for i in range(200):
            await conn.send(i.to_bytes(2, "big") * 1000)
        with trio.fail_after(10):
            await conn.aclose()
        got = []
        with pytest.raises(aetherflow_sdk.ClosedByPeer):
            while True:
                got.append(await peer.receive())
        assert got == [i.to_bytes(2, "big") * 1000 for i in range(200)]
        with pytest.raises(aetherflow_sdk.ClosedLocally):
            await conn.send(b"after close")


async def test_datagrams_are_delivered_unreliably_but_do_arrive_on_loopback() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        conn = await client.connect(server.local_address)
        peer = await server.accept()
        conn.send_datagram(b"presence: cursor at 42")
        with trio.fail_after(5):
            assert await peer.receive_datagram() == b"presence: cursor at 42"


async def test_wrong_pinned_identity_raises_handshake_failed() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        with pytest.raises(aetherflow_sdk.HandshakeFailed, match="pinned"):
            await client.connect(server.local_address, peer_id=Identity.generate().node_id)


async def test_nobody_listening_times_out_clearly() -> None:
    config = quantum.QuantumConfig(handshake_timeout=1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        async with quantum.open_endpoint(LOOPBACK, config=config) as client:
            with pytest.raises(aetherflow_sdk.ConnectionTimeout, match="did not complete the handshake"):
                await client.connect(silent.getsockname())


async def test_garbage_datagrams_are_counted_and_dropped() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        conn = await client.connect(server.local_address)
        peer = await server.accept()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for junk in (b"", b"\x00", b"hello" * 10, bytes(32), b"\x01\x05" + bytes(100)):
                attacker.sendto(junk, server.local_address)
        await conn.send(b"still fine")
        with trio.fail_after(5):
            assert await peer.receive() == b"still fine"
        stats = server.statistics()
        assert stats.bad_packets + stats.unknown_connection >= 4


def test_works_from_asyncio_too() -> None:
    async def main() -> bytes:
        async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
            conn = await client.connect(server.local_address)
            peer = await server.accept()
            await conn.send(b"from asyncio")
            return await peer.receive()

    assert anyio.run(main, backend="asyncio") == b"from asyncio"


class _CountingSocket:
    """Delegates to a real socket, counting segmented (GSO) sendmsg calls."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.segmented_sends = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def sendmsg(self, buffers: list[bytes], ancillary: list[tuple[int, int, bytes]], *args: object) -> int:
        if any(level == socket.SOL_UDP and kind == UDP_SEGMENT for level, kind, _ in ancillary):
            self.segmented_sends += 1
        return self.real.sendmsg(buffers, ancillary, *args)  # type: ignore[arg-type]


@pytest.mark.parametrize("offload", [True, False])
async def test_bulk_with_and_without_udp_segmentation_offload(offload: bool) -> None:
    """GSO/GRO (Linux) batch datagrams per system call; without them every datagram goes alone."""
    payloads = [bytes([i % 251]) * (5000 + 37 * i) for i in range(200)]
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        if offload and not client._gso:
            pytest.skip("UDP GSO is not available on this system")
        for endpoint in (server, client):
            endpoint._gso = endpoint._gso and offload
            endpoint._gro = endpoint._gro and offload
            if not offload:
                endpoint._sock.setsockopt(socket.SOL_UDP, UDP_GRO, 0)
        real_socket = client._sock
        counting = _CountingSocket(real_socket)
        client._sock = counting  # type: ignore[assignment]
        try:
            conn = await client.connect(server.local_address)
            peer = await server.accept()
            for payload in payloads:
                await conn.send(payload)
            for payload in payloads:
                assert await peer.receive() == payload
        finally:
            client._sock = real_socket
        if offload:
            assert client._gso and counting.segmented_sends >= 1, "the bulk never used GSO"
        else:
            assert counting.segmented_sends == 0


async def test_gso_send_failure_falls_back_to_one_datagram_per_call() -> None:
    async with quantum.open_endpoint(LOOPBACK) as server, quantum.open_endpoint(LOOPBACK) as client:
        real_socket = client._sock

        class NoGso:
            def __getattr__(self, name: str) -> object:
                return getattr(real_socket, name)

            def sendmsg(self, *args: object) -> int:
                raise OSError(5, "Input/output error")  # EIO: the route cannot checksum-offload

        client._sock = NoGso()  # type: ignore[assignment]
        client._gso = True
        try:
            conn = await client.connect(server.local_address)
            peer = await server.accept()
            payload = bytes(200_000)
            await conn.send(payload)
            assert await peer.receive() == payload
            assert client._gso is False
        finally:
            client._sock = real_socket


@pytest.mark.parametrize("code", [errno.ENOBUFS, errno.EPERM, errno.EMSGSIZE, errno.ECONNREFUSED])
async def test_send_errors_that_lose_a_datagram_count_as_loss(code: int) -> None:
    """A full device queue or a netfilter drop loses the datagram; it must not end the endpoint."""
    async with quantum.open_endpoint(LOOPBACK) as client:
        real_socket = client._sock

        class Failing:
            def __getattr__(self, name: str) -> object:
                return getattr(real_socket, name)

            def sendto(self, *args: object) -> int:
                raise OSError(code, os.strerror(code))

        client._sock = Failing()  # type: ignore[assignment]
        client._gso = False  # one sendto() per datagram
        try:
            datagrams = [(b"x" * 100, ("127.0.0.1", 9)), (b"y" * 50, ("127.0.0.1", 9))]
            assert client._send_all(datagrams) == 2
        finally:
            client._sock = real_socket
