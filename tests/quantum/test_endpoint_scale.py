"""A thousand connections on one endpoint, over real UDP on loopback."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio

from aetherflow_sdk import quantum

from ._endpoints import LOOPBACK, echo_forever, wait_until_forgotten

CONNECTIONS = 1000
MESSAGES = 3  # per connection, each echoed
DIALS_AT_ONCE = 100  # handshakes in flight together (bounded, like any real client)

pytestmark = pytest.mark.timeout(120)


async def test_a_thousand_connections_exchange_messages_then_are_all_forgotten() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_forever, server)
        events = server.events()
        limiter = trio.CapacityLimiter(DIALS_AT_ONCE)
        conns: list[quantum.Connection] = []
        echoed = 0

        async def one(index: int) -> None:
            nonlocal echoed
            async with limiter:
                conn = await client.connect(server.local_address, peer_id=server.node_id)
            conns.append(conn)
            for i in range(MESSAGES):
                payload = b"%d:%d" % (index, i)
                await conn.send(payload)
                assert await conn.receive() == payload
                echoed += 1

        with trio.fail_after(90):
            async with trio.open_nursery() as dials:
                for index in range(CONNECTIONS):
                    dials.start_soon(one, index)
            assert echoed == CONNECTIONS * MESSAGES
            assert len(client.connections()) == len(server.connections()) == CONNECTIONS
            assert server.statistics().active_connections == CONNECTIONS
            assert server.statistics().internal_errors == 0

            held = [weakref.ref(c._core) for c in server.connections()[::100]]
            async with trio.open_nursery() as closes:
                for conn in conns:
                    closes.start_soon(conn.aclose)
            conns.clear()
            assert client.connections() == ()
            await wait_until_forgotten(client)
            await wait_until_forgotten(server)
            assert server.connections() == ()
            established = closed = 0
            while events._queue:  # every connection was announced once, and closed once
                event = await anext(events)
                established += isinstance(event, quantum.ConnectionEstablished)
                closed += isinstance(event, quantum.ConnectionEnded)
            assert established == closed == CONNECTIONS
        del event, events
        core = server._core
        assert core.statistics().active_connections == 0
        assert not core._by_client_cid and not core._client_cid_of and not core._awaiting_accept
        assert not core.accepted
        gc.collect()
        assert all(ref() is None for ref in held), "closed connections are still referenced"
        nursery.cancel_scope.cancel()
