"""The session handshake over real Quantum connections on loopback (127.0.0.1 only).

Accept, reject, resume after the connection was dropped, and the read-only write drop,
each with the transport's authenticated ``peer_id`` as the session holder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from aetherflow_sdk import AuthError, ConnectionClosed, quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.replica import is_write_message
from aetherflow_sdk.session import (
    SessionChannel,
    SessionConfig,
    SessionManager,
    SessionServer,
    SessionState,
    TokenVerifier,
    issue_token,
    open_session,
)
from tests.session._helpers import recording_handler

LOOPBACK = ("127.0.0.1", 0)
OWNER = Identity.from_private_bytes(bytes(range(32)))
TIMEOUT = 20  # generous: the machine is shared; a healthy run takes well under a second
Handler = Callable[[SessionChannel], Awaitable[None]]
# y-protocols messages, byte by byte: varuint messageSync (0), varuint sync type, varbytes payload.
YJS_SYNC_STEP1 = b"\x00\x00\x01\x00"  # step 1 with an empty state vector: "what do you have?"
YJS_SYNC_STEP2 = b"\x00\x01\x02\x00\x00"  # step 2 carrying an (empty) update
YJS_UPDATE = b"\x00\x02\x02\x00\x00"  # an update


async def _echo(session: SessionChannel) -> None:
    try:
        while True:
            message = await session.receive()
            await session.send(b"echo:" + message)
    except ConnectionClosed:
        pass


class Rig:
    """A server endpoint running a SessionServer, and a client endpoint."""

    def __init__(self, server_ep: object, client_ep: object, sessions: SessionServer) -> None:
        self.server_ep = server_ep
        self.client_ep = client_ep
        self.sessions = sessions
        self.failures: list[BaseException] = []
        # One item per server-side session block that ended, so tests wait on it (no polling).
        self.ended_send, self.ended = trio.open_memory_channel[None](100)

    def token(self, permission: str = "rw", **kw: object) -> str:
        import time

        return issue_token(
            OWNER,
            user="alice",
            document="doc",
            permission=permission,
            expires_in=kw.pop("expires_in", 3600),  # type: ignore[arg-type]
            now=kw.pop("now", time.time()),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )

    async def serve(
        self, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn = await self.server_ep.accept()  # type: ignore[attr-defined]
                nursery.start_soon(self._one, conn, handler)

    async def _one(self, conn: object, handler: Handler) -> None:
        try:
            async with self.sessions.accept(conn) as session:  # type: ignore[arg-type]
                await handler(session)
        except (AuthError, ConnectionClosed) as exc:
            self.failures.append(exc)
        finally:
            self.ended_send.send_nowait(None)

    async def connect(self) -> object:
        return await self.client_ep.connect(  # type: ignore[attr-defined]
            self.server_ep.local_address,
            peer_id=self.server_ep.node_id,  # type: ignore[attr-defined]
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    manager = SessionManager(SessionConfig(ttl=30, quiet_period=10, heartbeat_interval=5))
    # The replica's own classifier: y-protocols sync step 2 and update are writes.
    sessions = SessionServer(manager, TokenVerifier([OWNER.node_id]), is_write=is_write_message)
    async with quantum.open_endpoint(LOOPBACK) as server_ep, quantum.open_endpoint(LOOPBACK) as client_ep:
        yield Rig(server_ep, client_ep, sessions)


async def test_accept_over_quantum(rig: Rig) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.serve, _echo)
            conn = await rig.connect()
            token = rig.token(holder=rig.client_ep.node_id)  # bound to the client's node ID
            async with open_session(conn, document="doc", token=token) as session:  # type: ignore[arg-type]
                await session.send(b"hello")
                assert await session.receive() == b"echo:hello"
                live = rig.sessions.manager.get(session.session_id)
                assert live is not None and live.state is SessionState.ACTIVE
                assert live.holder == rig.client_ep.node_id  # the transport-authenticated peer
            nursery.cancel_scope.cancel()
    assert rig.sessions.statistics().accepted == 1


async def test_reject_over_quantum(rig: Rig) -> None:
    import time

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.serve, _echo)
            for token, reason in [
                (rig.token(expires_in=10, now=time.time() - 100), "expired"),
                (rig.token(holder=b"\x01" * 32), "wrong_holder"),  # bound to another node
            ]:
                conn = await rig.connect()
                with pytest.raises(AuthError) as info:
                    async with open_session(conn, document="doc", token=token):  # type: ignore[arg-type]
                        raise AssertionError("a refused session must not open")
                assert info.value.reason == reason
                # The server closed the connection after its reply.
                with pytest.raises(ConnectionClosed):
                    await conn.receive()  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()
    statistics = rig.sessions.statistics()
    assert statistics.rejected == 2 and statistics.rejected_by_reason == {"expired": 1, "wrong_holder": 1}


async def test_resume_after_the_connection_dropped_over_quantum(rig: Rig) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.serve, _echo)
            conn = await rig.connect()
            async with open_session(conn, document="doc", token=rig.token()) as first:  # type: ignore[arg-type]
                await first.send(b"one")
                assert await first.receive() == b"echo:one"
                resumption = first.resumption
                await conn.aclose()  # type: ignore[attr-defined]  # dropped: no session close sent
            await rig.ended.receive()  # the server's session block ended: it saw the drop
            live = rig.sessions.manager.get(resumption.session_id)
            assert live is not None and live.state is SessionState.DISCONNECTING

            conn = await rig.connect()
            async with open_session(conn, document="doc", resume=resumption) as second:  # type: ignore[arg-type]
                assert second.session_id == resumption.session_id
                await second.send(b"two")
                assert await second.receive() == b"echo:two"
            nursery.cancel_scope.cancel()
    statistics = rig.sessions.statistics()
    assert statistics.accepted == 1 and statistics.resumed == 1


async def test_read_only_write_drop_over_quantum(rig: Rig) -> None:
    received: list[bytes] = []

    record = recording_handler(received)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.serve, record)
            conn = await rig.connect()
            async with open_session(conn, document="doc", token=rig.token("ro")) as session:  # type: ignore[arg-type]
                await session.send(YJS_UPDATE)  # a write: dropped
                await session.send(YJS_SYNC_STEP2)  # a write: dropped
                await session.send(YJS_SYNC_STEP1)  # a read: delivered
                assert await session.receive() == b"ack:" + YJS_SYNC_STEP1
                assert session.statistics().writes_denied == 2
            nursery.cancel_scope.cancel()
    assert received == [YJS_SYNC_STEP1]
    assert rig.sessions.statistics().writes_denied == 2


async def test_twenty_concurrent_handshakes_accepted_and_rejected(rig: Rig) -> None:
    import random

    seed = 20
    rng = random.Random(seed)
    plan = [rng.choice(["ok", "ok", "wrong_doc"]) for _ in range(20)]
    outcomes: dict[int, str] = {}

    async def client(i: int) -> None:
        conn = await rig.connect()
        document = "doc" if plan[i] == "ok" else "other"
        try:
            async with open_session(conn, document=document, token=rig.token()) as session:  # type: ignore[arg-type]
                await session.send(b"n%d" % i)
                assert await session.receive() == b"echo:n%d" % i
                outcomes[i] = "ok"
        except AuthError as exc:
            outcomes[i] = exc.reason

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.serve, _echo)
            async with trio.open_nursery() as clients:
                for i in range(20):
                    clients.start_soon(client, i)
            nursery.cancel_scope.cancel()
    expected = {i: "ok" if p == "ok" else "forbidden_document" for i, p in enumerate(plan)}
    assert outcomes == expected, f"seed={seed}"
    statistics = rig.sessions.statistics()
    assert statistics.accepted == plan.count("ok"), f"seed={seed}"
    assert statistics.rejected == plan.count("wrong_doc"), f"seed={seed}"
    assert len(rig.sessions.manager) == 0  # every session ended with its block
