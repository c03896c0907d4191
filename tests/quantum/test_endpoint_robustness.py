"""Bad calls and bugs never take down an endpoint: arguments are checked where they enter, and
an exception inside one connection's processing closes only that connection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio

from aetherflow_sdk import ClosedByPeer, ConnectionClosed, LocalProtocolError, quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum._connection import QuantumConnection
from aetherflow_sdk.quantum._endpoint_core import EndpointCore
from aetherflow_sdk.quantum._events import EventStream
from aetherflow_sdk.quantum._wire import CloseCode

from ._endpoints import LOOPBACK, echo_forever

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("peer_id", "words"),
    [
        ("ab" * 32, "not text"),  # a node ID printed as hex, passed as it was printed
        (b"\x01\x02\x03", "got 3"),
        (bytes(33), "got 33"),
        (12345, "not int"),
    ],
)
async def test_a_malformed_peer_id_raises_a_clear_error_and_the_endpoint_lives_on(
    peer_id: object, words: str
) -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_forever, server)
        with pytest.raises(LocalProtocolError, match=words):
            await client.connect(server.local_address, peer_id=peer_id)  # type: ignore[arg-type]
        # Neither endpoint's background task died: a correct call right after works.
        with trio.fail_after(20):
            conn = await client.connect(server.local_address, peer_id=server.node_id)
            await conn.send(b"still here")
            assert await conn.receive() == b"still here"
        assert client.statistics().internal_errors == server.statistics().internal_errors == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("address", "words"),
    [
        (("127.0.0.1", 0), r"port .* 1\.\.65535, got 0"),
        (("127.0.0.1", 70000), "got 70000"),
        (("127.0.0.1", "443"), "got '443'"),
        (("127.0.0.1", True), "got True"),
        (("", 4433), "non-empty string"),
        (("127.0.0.1",), r"\(host, port\) tuple"),
        ("127.0.0.1:4433", r"\(host, port\) tuple"),
    ],
)
async def test_a_malformed_address_raises_a_clear_error(address: object, words: str) -> None:
    async with quantum.open_endpoint(LOOPBACK) as client:
        with pytest.raises(LocalProtocolError, match=words):
            await client.connect(address)  # type: ignore[arg-type]


async def test_a_bad_local_port_raises_a_clear_error() -> None:
    with pytest.raises(LocalProtocolError, match="got 65536"):
        async with quantum.open_endpoint(("127.0.0.1", 65536)):
            pass  # pragma: no cover


async def test_wrong_argument_types_on_a_connection_raise_clear_errors() -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_forever, server)
        with trio.fail_after(20):
            conn = await client.connect(server.local_address)
            with pytest.raises(LocalProtocolError, match=r"send\(\) takes bytes, not str; encode"):
                await conn.send("text")  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError, match=r"send_datagram\(\) takes bytes, not int"):
                conn.send_datagram(7)  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError, match="reason must be a str"):
                conn.abort(b"why")  # type: ignore[arg-type]
            await conn.send(bytearray(b"bytes-like is fine"))
            assert await conn.receive() == b"bytes-like is fine"
        nursery.cancel_scope.cancel()


def _server_core_connection(server: quantum.Endpoint, peer_id: bytes, port: int) -> QuantumConnection:
    """The server's core connection to the client endpoint at ``port`` (white-box, to inject a fault)."""
    matches = [
        c for c in server._core.connections.values() if c.peer_id == peer_id and c.peer_address[1] == port
    ]
    assert len(matches) == 1
    return matches[0]


async def test_a_fault_in_one_connection_closes_it_and_leaves_the_other_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        quantum.open_endpoint(LOOPBACK) as server,
        quantum.open_endpoint(LOOPBACK) as sick_client,
        quantum.open_endpoint(LOOPBACK) as healthy_client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_forever, server)
        events = server.events()
        with trio.fail_after(30):
            sick = await sick_client.connect(server.local_address)
            healthy = await healthy_client.connect(server.local_address)
            for conn in (sick, healthy):
                await conn.send(b"hello")
                assert await conn.receive() == b"hello"

            # Every datagram that reaches the sick connection's server side now raises inside
            # the server's background task, as a bug in the connection's code would.
            target = _server_core_connection(server, sick_client.node_id, sick_client.local_address[1])

            def broken(*args: object, **kwargs: object) -> None:
                raise RuntimeError("injected fault")

            target.receive_datagram = broken  # type: ignore[method-assign]
            with caplog.at_level(logging.ERROR, logger="aetherflow_sdk.quantum._endpoint_core"):
                await sick.send(b"this one trips the fault")
                with pytest.raises(ClosedByPeer) as caught:
                    await sick.receive()
            assert caught.value.error_code == CloseCode.INTERNAL_ERROR
            assert "internal error: RuntimeError: injected fault" in caught.value.reason
            assert "injected fault" in caplog.text

            # The other connection, on the same server endpoint, carries on both ways.
            for i in range(20):
                await healthy.send(b"ping %d" % i)
                assert await healthy.receive() == b"ping %d" % i
            # And the server still accepts new connections.
            third = await sick_client.connect(server.local_address)
            await third.send(b"new")
            assert await third.receive() == b"new"
        stats = server.statistics()
        assert stats.internal_errors == 1
        # The endpoint reported the failure as that connection's close, with the reason.
        closed = [e async for e in _drain(events) if isinstance(e, quantum.ConnectionEnded)]
        assert len(closed) == 1 and "injected fault" in closed[0].reason
        assert closed[0].connection not in server.connections()
        assert len(server.connections()) == 2
        nursery.cancel_scope.cancel()


async def _drain(events: EventStream) -> AsyncIterator[quantum.EndpointEvent]:
    while events._queue:
        yield await anext(events)


def test_a_connection_that_fails_again_while_closing_is_forgotten() -> None:
    """Core level: the first fault aborts; a second one (even the abort's CLOSE fails) drops it."""
    server = EndpointCore(identity=Identity.generate(), config=quantum.QuantumConfig())
    client = EndpointCore(identity=Identity.generate(), config=quantum.QuantumConfig())
    a, b = ("10.0.0.1", 1000), ("10.0.0.2", 2000)
    now = 100.0
    conn = client.connect(b, now)

    def pump() -> None:
        for _ in range(20):
            moved = False
            for source, ep in ((a, client), (b, server)):
                other = server if ep is client else client
                for data, _ in ep.datagrams_to_send(now):
                    other.receive_datagram(data, source, now)
                    moved = True
            if not moved:
                return

    pump()
    assert conn.is_established and len(server.connections) == 1
    (server_conn,) = server.connections.values()

    def broken(now: float) -> list[tuple[bytes, tuple[str, int]]]:
        raise ValueError("output is broken")

    server_conn.datagrams_to_send = broken  # type: ignore[method-assign]
    server.mark_dirty(server_conn)
    assert server.datagrams_to_send(now) == []  # first fault: aborted, CLOSE queued
    assert server_conn.error is not None and "output is broken" in server_conn.error.reason
    assert len(server.connections) == 1
    assert server.datagrams_to_send(now) == []  # the CLOSE cannot be built either: forgotten
    assert server.connections == {} and server.statistics().internal_errors == 2
    with pytest.raises(ConnectionClosed):
        server_conn.send_message(b"x")
