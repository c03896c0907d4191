"""Paths and raw datagrams, with the public API only: a connection moves onto a relayed path and
back to direct, without losing a message.

A toy relay (a plain UDP socket on loopback) forwards frames between two nodes. Each node
registers with a raw datagram sent from its Quantum socket (``send_raw``), and hears the
relay's answer through its raw handler (``set_raw_handler``); the connection then
moves onto a :class:`quantum.Path` that puts a 4-byte frame in front of each packet
(``migrate_to_path``), and back to the direct address (``migrate``). What the relay sends back
arrives as raw datagrams (first byte 0x40 or above) that the endpoint unwraps and routes into
the connection.
"""

from __future__ import annotations

from contextlib import suppress

import trio

from aetherflow_sdk import BadPacket, ConnectionClosed, quantum

LOOPBACK = ("127.0.0.1", 0)
FRAME = 4  # 0xAF, kind, and the 2-byte port of the peer the frame is for (or from)
REGISTER, REGISTERED, TO_PEER, FROM_PEER = 1, 2, 3, 4


class ToyRelayPath(quantum.Path):
    """Through the toy relay to the node registered at ``peer_port``."""

    def __init__(self, relay: tuple[str, int], peer_port: int) -> None:
        self._relay, self._peer = relay, peer_port.to_bytes(2, "big")

    @property
    def address(self) -> tuple[str, int]:
        return self._relay

    @property
    def overhead(self) -> int:
        return FRAME

    def wrap(self, packet: bytes) -> bytes:
        return bytes((0xAF, TO_PEER)) + self._peer + packet

    def unwrap_untrusted(self, datagram: bytes) -> bytes:
        if datagram[:2] != bytes((0xAF, FROM_PEER)) or datagram[2:4] != self._peer:
            raise BadPacket("not a relay frame from this peer")
        return datagram[FRAME:]


async def toy_relay(sock: trio.socket.SocketType) -> None:
    """Forward TO_PEER frames to the registered node on that port, as FROM_PEER frames."""
    registered: set[int] = set()
    while True:
        data, (host, port) = await sock.recvfrom(65536)
        if data[:2] == bytes((0xAF, REGISTER)):
            registered.add(port)
            await sock.sendto(bytes((0xAF, REGISTERED, 0, 0)), (host, port))
        elif data[:2] == bytes((0xAF, TO_PEER)) and int.from_bytes(data[2:4], "big") in registered:
            frame = bytes((0xAF, FROM_PEER)) + port.to_bytes(2, "big") + data[FRAME:]
            await sock.sendto(frame, (host, int.from_bytes(data[2:4], "big")))


async def main() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        relay_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await relay_sock.bind(LOOPBACK)
        relay = relay_sock.getsockname()
        nursery.start_soon(toy_relay, relay_sock)

        conn = await client.connect(server.local_address, peer_id=server.node_id)
        peer = await server.accept()

        async def echo() -> None:
            with suppress(ConnectionClosed):
                while True:
                    await peer.send(await peer.receive())

        nursery.start_soon(echo)

        async def round_trip(text: str) -> None:
            await conn.send(text.encode())
            echoed = await conn.receive()
            stats = conn.statistics()
            kind = "direct" if stats.path_direct else "relayed"
            print(f"client: {echoed.decode()!r} echoed over the {kind} path to {stats.path_address}")

        await round_trip("hello")
        # Both nodes register with the relay from their Quantum socket: raw datagrams both ways.
        for endpoint in (client, server):
            registered = trio.Event()

            def on_raw(data: bytes, address: tuple[str, int], event: trio.Event = registered) -> None:
                if data[:2] == bytes((0xAF, REGISTERED)):
                    event.set()

            endpoint.set_raw_handler(on_raw)
            endpoint.send_raw(bytes((0xAF, REGISTER, 0, 0)), relay)
            with trio.fail_after(5):
                await registered.wait()
        print(f"client: registered with the relay at {relay} (raw datagrams on the Quantum socket)")
        server.add_path(ToyRelayPath(relay, client.local_address[1]))  # where the client may come from
        await conn.migrate_to_path(ToyRelayPath(relay, server.local_address[1]))
        print(f"client: moved onto the relay, packets of at most {conn.statistics().max_packet_size} bytes")
        await round_trip("through the relay")
        await conn.migrate(server.local_address)
        print("client: moved back to the direct path")
        await round_trip("direct again")
        stats = server.statistics()
        print(
            f"server: {stats.framed_datagrams_received} relayed packets unwrapped, "
            f"{stats.raw_datagrams_received} raw datagram received"
        )
        await conn.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
