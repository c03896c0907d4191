"""Helpers for tests of real endpoints on loopback."""

from __future__ import annotations

from contextlib import suppress

import trio

from aetherflow_sdk import ConnectionClosed, quantum

LOOPBACK = ("127.0.0.1", 0)


async def echo(conn: quantum.Connection) -> None:
    """Send every message back until the connection closes."""
    with suppress(ConnectionClosed):
        while True:
            await conn.send(await conn.receive())


async def echo_forever(endpoint: quantum.Endpoint) -> None:
    """Accept every connection and echo on each; runs until cancelled."""
    async with trio.open_nursery() as nursery:
        while True:
            nursery.start_soon(echo, await endpoint.accept())
