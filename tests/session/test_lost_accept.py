"""Resumption survives a lost ``accept``: the secret a resumption used stays valid until the
client is heard on the new connection, or for ``resumption_grace`` -- and no longer."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import attrs
import pytest
import trio

from aetherflow_sdk import AuthError, ConnectionClosed
from aetherflow_sdk._channel import MemoryChannel, memory_channel_pair
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import (
    Permission,
    SessionConfig,
    SessionManager,
    SessionServer,
    SessionState,
    SqliteSessionStore,
    TokenVerifier,
    issue_token,
    open_session,
)
from tests.session._helpers import T0, counting_ids, create_session, fixed_random

OWNER = Identity.from_private_bytes(bytes(range(32)))
CLIENT, SERVER = b"\x0c" * 32, b"\x05" * 32
HOLDER = b"\x01" * 32
CONFIG = SessionConfig(
    ttl=30, quiet_period=20, heartbeat_interval=5, handshake_timeout=2, resumption_grace=10
)


def _clock() -> float:
    return T0 + trio.current_time()


@attrs.define(eq=False)
class _LosesTheAccept:
    """The server's end of a link that dies with the server's first message (the ``accept``)
    on the wire: the send "succeeds" locally, the bytes never arrive, the connection drops."""

    inner: MemoryChannel
    lost: list[bytes] = attrs.Factory(list)

    @property
    def peer_id(self) -> bytes:
        return self.inner.peer_id

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        if not self.lost:
            self.lost.append(data)
            await self.inner.aclose()
            return
        await self.inner.send(data, ordered=ordered)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    def send_datagram(self, data: bytes) -> None:
        self.inner.send_datagram(data)

    async def receive_datagram(self) -> bytes:
        return await self.inner.receive_datagram()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _serve(server: SessionServer, channel: object, failures: list[BaseException]) -> None:
    try:
        async with server.accept(channel) as session:  # type: ignore[arg-type]
            while True:
                message = await session.receive()
                await session.send(b"echo:" + message)
    except (AuthError, ConnectionClosed) as exc:
        failures.append(exc)


async def test_accept_dropped_on_the_wire_the_client_resumes_with_what_it_holds() -> None:
    manager = SessionManager(CONFIG, new_session_id=counting_ids(), random_bytes=fixed_random(3))
    server = SessionServer(manager, TokenVerifier([OWNER.node_id]), clock=_clock)
    token = issue_token(OWNER, user="alice", document="doc", permission="rw", expires_in=3600, now=_clock())
    failures: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve, server, server_end, failures)
            async with open_session(client_end, document="doc", token=token) as first:
                await first.send(b"one")
                assert await first.receive() == b"echo:one"
                await first.raw.aclose()  # the path flaps
                held = first.resumption

        # The resumption goes through on the server, but its accept is lost with the link.
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            wire = _LosesTheAccept(server_end)
            nursery.start_soon(_serve, server, wire, failures)
            with pytest.raises(ConnectionClosed):
                async with open_session(client_end, document="doc", resume=held):
                    raise AssertionError("the accept was lost: the client cannot have a session")
        assert len(wire.lost) == 1 and wire.lost[0]  # an accept did go out, and was lost
        live = manager.get(held.session_id)
        assert live is not None and live.state is SessionState.DISCONNECTING
        assert manager.statistics().resumed == 1  # the server did rotate the secret

        # The client still holds only the old secret; it resumes with it.
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve, server, server_end, failures)
            async with open_session(client_end, document="doc", resume=held) as again:
                assert again.session_id == held.session_id
                await again.send(b"two")
                assert await again.receive() == b"echo:two"
                newest = again.resumption
                await again.raw.aclose()
        assert manager.statistics().resumed_with_previous_secret == 1

        # The client was heard on that connection, so it holds the newest secret: the old one is
        # retired at once, the newest works.
        for resumption, works in ((held, False), (newest, True)):
            async with trio.open_nursery() as nursery:
                client_end, server_end = memory_channel_pair((CLIENT, SERVER))
                nursery.start_soon(_serve, server, server_end, failures)
                if works:
                    async with open_session(client_end, document="doc", resume=resumption) as third:
                        await third.send(b"three")
                        assert await third.receive() == b"echo:three"
                else:
                    with pytest.raises(AuthError) as info:
                        async with open_session(client_end, document="doc", resume=resumption):
                            pass
                    assert info.value.reason == "unknown_session"


def _resumable(manager: SessionManager) -> tuple[uuid.UUID, bytes]:
    session, secret = manager.create(
        user="alice",
        document="doc",
        permission=Permission.READ_WRITE,
        holder=HOLDER,
        issuer=b"\x09" * 32,
        token_id="j",
        not_after=T0 + 10_000,
        connection_id="c0",
        now=T0,
    )
    manager.establish(session.session_id, T0)
    manager.detach(session.session_id, T0)
    return session.session_id, secret


def test_a_stolen_old_secret_is_not_valid_forever() -> None:
    manager = SessionManager(CONFIG, random_bytes=fixed_random(5))
    sid, old = _resumable(manager)
    _, lost = manager.resume(sid, old, holder=HOLDER, connection_id="c1", now=T0 + 1)
    manager.detach(sid, T0 + 1)
    # Within the grace period the old secret still resumes (the accept may have been lost),
    # and doing so does not extend its window.
    _, newest = manager.resume(sid, old, holder=HOLDER, connection_id="c2", now=T0 + 8)
    manager.detach(sid, T0 + 8)
    with pytest.raises(AuthError):  # the secret whose accept was lost is superseded
        manager.resume(sid, lost, holder=HOLDER, connection_id="c3", now=T0 + 9)
    with pytest.raises(AuthError) as info:  # the window closed, counted from the first resumption
        manager.resume(sid, old, holder=HOLDER, connection_id="c3", now=T0 + 1 + CONFIG.resumption_grace)
    assert info.value.reason == "unknown_session"
    # The newest secret, from the last accept, works.
    manager.resume(sid, newest, holder=HOLDER, connection_id="c4", now=T0 + 12)
    assert manager.statistics().resumed_with_previous_secret == 1


def test_being_heard_on_the_new_connection_retires_the_old_secret() -> None:
    for confirm in ("heartbeat", "touch"):
        manager = SessionManager(CONFIG, random_bytes=fixed_random(6))
        sid, old = _resumable(manager)
        manager.resume(sid, old, holder=HOLDER, connection_id="c1", now=T0 + 1)
        getattr(manager, confirm)(sid, T0 + 2)
        manager.detach(sid, T0 + 2)
        with pytest.raises(AuthError):
            manager.resume(sid, old, holder=HOLDER, connection_id="c2", now=T0 + 3)


def test_the_previous_secret_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    manager = SessionManager(CONFIG, store=store, random_bytes=fixed_random(7))
    sid, old = _resumable(manager)
    manager.resume(sid, old, holder=HOLDER, connection_id="c1", now=T0 + 1)  # accept lost, then...
    store.close()  # ... the server restarts
    store = SqliteSessionStore(path)
    restarted = SessionManager(CONFIG, store=store, random_bytes=fixed_random(8))
    assert restarted.load(T0 + 2).restored == 1
    session, _ = restarted.resume(sid, old, holder=HOLDER, connection_id="c2", now=T0 + 3)
    assert session.state is SessionState.ACTIVE
    store.close()


def test_a_store_from_before_the_previous_secret_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    manager = SessionManager(CONFIG, store=SqliteSessionStore(path), random_bytes=fixed_random(9))
    sid = create_session(manager, now=T0)
    assert manager.store is not None
    manager.store.close()
    # Make it look like a store written before the two columns existed.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE sessions DROP COLUMN previous_resumption_hash")
        db.execute("ALTER TABLE sessions DROP COLUMN previous_valid_until")
    store = SqliteSessionStore(path)
    loaded = store.load()
    assert [s.session_id for s in loaded.sessions] == [sid] and loaded.corrupt == ()
    assert loaded.sessions[0].previous_resumption_hash is None
    store.close()
