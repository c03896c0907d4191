"""Quantum echo: a server and a client on loopback, with the public API only.

Run it from the repository root (after ``make demo`` or ``make test`` made .venv)::

    .venv/bin/python examples/quantum_echo.py

The server accepts one connection and sends every message back. The client
sends a few ordered and unordered messages, checks each echo, sends one
unreliable datagram, and prints the connection's statistics.
"""

from __future__ import annotations

import base64

import trio

from aetherflow_sdk import ConnectionClosed, quantum


def short(node_id: bytes) -> str:
    """The first characters of a node ID's text form (lowercase base32, as ``aetherflow`` prints it)."""
    return base64.b32encode(node_id).decode("ascii").lower()[:10] + ".."


async def serve_one(server: quantum.Endpoint) -> None:
    conn = await server.accept()
    print(f"server: accepted a connection from {short(conn.peer_id)} at {conn.peer_address}")
    try:
        while True:
            message = await conn.receive()
            await conn.send(message)  # echo it back, ordered
    except ConnectionClosed as exc:
        print(f"server: connection over ({type(exc).__name__}: {exc})")


async def main() -> None:
    async with (
        quantum.open_endpoint(("127.0.0.1", 0)) as server,
        quantum.open_endpoint(("127.0.0.1", 0), accept=False) as client,
        trio.open_nursery() as nursery,
    ):
        print(f"server: listening on {server.local_address}, node ID {short(server.node_id)}")
        nursery.start_soon(serve_one, server)

        # Pinning peer_id makes the handshake fail unless the server proves this identity.
        conn = await client.connect(server.local_address, peer_id=server.node_id)
        print(f"client: connected to {short(conn.peer_id)}, connection ID {conn.connection_id}")

        messages = [(b"hello", True), (b"unordered hello", False), (bytes(100_000), True)]
        for message, ordered in messages:
            start = trio.current_time()
            await conn.send(message, ordered=ordered)
            echo = await conn.receive()
            assert echo == message, "the echo differs from what was sent"
            took = (trio.current_time() - start) * 1000
            shown = repr(message) if len(message) < 40 else f"{len(message)} zero bytes"
            kind = "ordered" if ordered else "unordered"
            print(f"client: sent {shown} ({kind}), echo matches, round trip {took:.1f} ms")

        conn.send_datagram(b"ping (unreliable, may be lost)")
        stats = conn.statistics()
        print(
            f"client: stats: srtt {stats.smoothed_rtt * 1000:.2f} ms, "
            f"{stats.messages_sent} messages / {stats.app_bytes_sent} app bytes sent, "
            f"{stats.packets_sent} packets / {stats.bytes_sent} bytes on the wire, "
            f"{stats.packets_retransmitted} retransmitted"
        )
        await conn.aclose()  # graceful: everything sent is delivered first
        print("client: closed")


if __name__ == "__main__":
    trio.run(main)
