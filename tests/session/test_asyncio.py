"""The async shell is anyio: the same session handshake runs under asyncio (Textual, zeroconf)."""

from __future__ import annotations

import anyio

from aetherflow_sdk import ConnectionClosed
from aetherflow_sdk._channel import memory_channel_pair
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import SessionManager, SessionServer, TokenVerifier, issue_token, open_session

OWNER = Identity.from_private_bytes(bytes(range(32)))


async def _scenario() -> tuple[bytes, int]:
    server = SessionServer(SessionManager(), TokenVerifier([OWNER.node_id]))
    client_end, server_end = memory_channel_pair()
    token = issue_token(OWNER, user="a", document="d", permission="rw", expires_in=60, now=server.clock())

    async def serve() -> None:
        async with server.accept(server_end) as session:
            try:
                while True:
                    await session.send(b"re:" + await session.receive())
            except ConnectionClosed:
                pass

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            async with open_session(client_end, document="d", token=token) as session:
                await session.send(b"x")
                reply = await session.receive()
    return reply, server.statistics().accepted


def test_session_under_asyncio() -> None:
    assert anyio.run(_scenario, backend="asyncio") == (b"re:x", 1)
