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


class UdpForwarder:
    """A UDP relay between one client and a server, whose outward port can change.

    The client sends to ``address``; the server sees the packets come from
    ``outward_address``. :meth:`rebind` moves to a new outward port, as a NAT does when its
    mapping expires (real sockets on loopback).
    """

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._client: tuple[str, int] | None = None
        self._front = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self._back = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._front.getsockname()
        return (str(host), int(port))

    @property
    def outward_address(self) -> tuple[str, int]:
        host, port = self._back.getsockname()
        return (str(host), int(port))

    async def run(self, *, task_status: trio.TaskStatus[UdpForwarder] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._front.bind(("127.0.0.1", 0))
            await self._back.bind(("127.0.0.1", 0))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._to_server)
                nursery.start_soon(self._to_client, self._back)
                task_status.started(self)
        finally:
            self._front.close()
            self._back.close()

    async def rebind(self) -> None:
        assert self._nursery is not None
        old, self._back = self._back, trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await self._back.bind(("127.0.0.1", 0))
        self._nursery.start_soon(self._to_client, self._back)
        old.close()

    async def _to_server(self) -> None:
        while True:
            data, source = await self._front.recvfrom(65536)
            self._client = source
            await self._back.sendto(data, self._server)

    async def _to_client(self, sock: trio.socket.SocketType) -> None:
        with suppress(OSError, trio.ClosedResourceError):  # closed by rebind()
            while True:
                data, _ = await sock.recvfrom(65536)
                if self._client is not None:
                    await self._front.sendto(data, self._client)


async def wait_until_forgotten(endpoint: quantum.Endpoint) -> None:
    """Wait (event-driven) until the endpoint holds no connection at all, in shell or core."""
    while endpoint._wrappers or endpoint._core.connections:
        await endpoint._wait_membership()
