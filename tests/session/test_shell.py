"""The async shell over in-memory channels: accept, reject, resume, read-only, heartbeats and expiry.

Time is trio's virtual clock (``autojump_clock``) wherever heartbeats or TTLs matter;
the server's Unix clock is derived from it, so nothing here waits for real time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from aetherflow_sdk import AuthError, ClosedLocally, ConnectionClosed
from aetherflow_sdk._channel import MemoryChannel, memory_channel_pair
from aetherflow_sdk._identity import Identity
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
from tests.session._helpers import T0, counting_ids, fixed_random, recording_handler

OWNER = Identity.from_private_bytes(bytes(range(32)))
CLIENT, SERVER = b"\x0c" * 32, b"\x05" * 32
CONFIG = SessionConfig(ttl=3, quiet_period=2, heartbeat_interval=1, handshake_timeout=2)


def _clock() -> float:
    return T0 + trio.current_time()


def _server(is_write: Callable[[bytes], bool] | None = None) -> SessionServer:
    manager = SessionManager(CONFIG, new_session_id=counting_ids(), random_bytes=fixed_random(4))
    return SessionServer(manager, TokenVerifier([OWNER.node_id]), is_write=is_write, clock=_clock)


def _token(permission: str = "rw", expires_in: float = 3600, **kw: object) -> str:
    return issue_token(
        OWNER,
        user="alice",
        document="doc",
        permission=permission,
        expires_in=expires_in,
        now=_clock(),
        **kw,  # type: ignore[arg-type]
    )


Handler = Callable[[SessionChannel], Awaitable[None]]


async def _serve_one(
    server: SessionServer, channel: object, handler: Handler, failures: list[BaseException]
) -> None:
    try:
        async with server.accept(channel) as session:  # type: ignore[arg-type]
            await handler(session)
    except (AuthError, ConnectionClosed) as exc:
        failures.append(exc)


async def _echo(session: SessionChannel) -> None:
    try:
        while True:
            message = await session.receive()
            await session.send(b"echo:" + message)
    except ConnectionClosed:
        pass


async def test_accept_and_exchange_messages() -> None:
    server = _server()
    client_end, server_end = memory_channel_pair((CLIENT, SERVER))
    failures: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as session:
                assert session.permission.value == "rw" and session.user == "alice"
                await session.send(b"hi")
                assert await session.receive() == b"echo:hi"
                live = server.manager.get(session.session_id)
                assert live is not None and live.state is SessionState.ACTIVE and live.holder == CLIENT
                session_id = session.session_id
    # Leaving the block ends the session for good, on both sides.
    assert server.manager.get(session_id) is None
    assert server.statistics().accepted == 1 and server.statistics().rejected == 0
    assert failures == []


async def test_rejection_reaches_the_client_as_auth_error_and_is_counted() -> None:
    server = _server()
    failures: list[BaseException] = []
    cases = [
        (
            issue_token(OWNER, user="a", document="doc", permission="rw", expires_in=50, now=_clock() - 100),
            "expired",
            "token expired at",
        ),
        (
            issue_token(
                Identity.generate(), user="x", document="doc", permission="rw", expires_in=60, now=_clock()
            ),
            "unknown_issuer",
            "not trusted",
        ),
        (_token(holder=b"\x0d" * 32), "wrong_holder", "bound to node"),
    ]
    with trio.fail_after(5):
        for token, reason, text in cases:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_one, server, server_end, _echo, failures)
                with pytest.raises(AuthError, match=text) as info:
                    async with open_session(client_end, document="doc", token=token):
                        raise AssertionError("should not open")
                assert info.value.reason == reason
    statistics = server.statistics()
    assert statistics.rejected == 3 and statistics.accepted == 0
    assert statistics.rejected_by_reason == {"expired": 1, "unknown_issuer": 1, "wrong_holder": 1}
    assert [getattr(f, "reason", None) for f in failures] == ["expired", "unknown_issuer", "wrong_holder"]
    assert len(server.manager) == 0


async def test_resume_after_the_connection_dropped() -> None:
    server = _server()
    failures: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as first:
                await first.send(b"one")
                assert await first.receive() == b"echo:one"
                await first.raw.aclose()  # the connection drops: no session close is sent
                resumption = first.resumption
        live = server.manager.get(resumption.session_id)
        assert live is not None and live.state is SessionState.DISCONNECTING

        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", resume=resumption) as second:
                assert second.session_id == resumption.session_id
                assert second.resumption.secret != resumption.secret
                await second.send(b"two")
                assert await second.receive() == b"echo:two"
        # The old secret was used up.
        client_end, server_end = memory_channel_pair((CLIENT, SERVER))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            with pytest.raises(AuthError) as info:
                async with open_session(client_end, document="doc", resume=resumption):
                    pass
            assert info.value.reason == "unknown_session"
    assert server.statistics().resumed == 1 and server.statistics().accepted == 1


async def test_resume_from_another_node_is_refused() -> None:
    server = _server()
    failures: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as first:
                await first.raw.aclose()
                resumption = first.resumption
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((b"\x0e" * 32, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            with pytest.raises(AuthError) as info:
                async with open_session(client_end, document="doc", resume=resumption):
                    pass
    assert info.value.reason == "wrong_holder"


async def test_read_only_writes_are_dropped_counted_and_reported() -> None:
    server = _server(is_write=lambda payload: payload.startswith(b"W"))
    failures: list[BaseException] = []
    received: list[bytes] = []

    record = recording_handler(received)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, record, failures)
            async with open_session(client_end, document="doc", token=_token(permission="ro")) as session:
                assert session.permission.value == "ro"
                await session.send(b"W-update")  # a write: dropped
                await session.send(b"R-sync-step-1")  # a read: delivered
                # The notice was sent before the ack, on the same ordered connection.
                assert await session.receive() == b"ack:R-sync-step-1"
                assert session.statistics().writes_denied == 1
                await session.send(b"W-again")
                await session.send(b"R-2")
                assert await session.receive() == b"ack:R-2"
                assert session.statistics().writes_denied == 2
    assert received == [b"R-sync-step-1", b"R-2"]
    assert server.statistics().writes_denied == 2


async def test_read_write_session_may_write() -> None:
    server = _server(is_write=lambda payload: payload.startswith(b"W"))
    failures: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token(permission="rw")) as session:
                await session.send(b"W-update")
                assert await session.receive() == b"echo:W-update"
                assert session.statistics().writes_denied == 0


async def test_heartbeats_keep_a_session_alive_and_idle_then_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server()
    failures: list[BaseException] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_timers)
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as session:
                session_id = session.session_id
                await trio.sleep(10)  # virtual: ten TTLs' worth of heartbeats
                live = server.manager.get(session_id)
                assert live is not None and live.state is SessionState.IDLE  # quiet, but alive
                statistics = session.statistics()
                assert statistics.heartbeats_sent >= 9 and statistics.heartbeats_received >= 8
                assert statistics.remaining_ttl is not None and 2 <= statistics.remaining_ttl <= 3
                await session.send(b"wake")
                assert await session.receive() == b"echo:wake"
                live = server.manager.get(session_id)
                assert live is not None and live.state is SessionState.ACTIVE
                await session.raw.aclose()  # dropped: heartbeats stop
            live = server.manager.get(session_id)
            assert live is not None and live.state is SessionState.DISCONNECTING
            await trio.sleep(3.5)  # past the TTL: the timer task expires it
            assert server.manager.get(session_id) is None
            assert server.manager.statistics().expired == 1
            nursery.cancel_scope.cancel()


async def test_datagrams_are_activity_and_refused_after_close(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server()
    failures: list[BaseException] = []
    closed: list[BaseException] = []
    states: list[SessionState] = []

    async def datagram_echo(session: SessionChannel) -> None:
        data = await session.receive_datagram()
        live = server.manager.get(session.session_id)
        assert live is not None
        states.append(live.state)
        session.send_datagram(b"echo:" + data)
        await session.aclose()
        with pytest.raises(ClosedLocally) as info:  # as receive() does, not whatever the link raises
            await session.receive_datagram()
        closed.append(info.value)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_timers)
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))

            async def like_quantum(self: MemoryChannel) -> bytes:  # hands out datagrams queued before close
                return await self._receive_datagrams.receive()

            monkeypatch.setattr(MemoryChannel, "receive_datagram", like_quantum)
            nursery.start_soon(_serve_one, server, server_end, datagram_echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as session:
                await trio.sleep(CONFIG.quiet_period + 1)  # heartbeats only: IDLE
                live = server.manager.get(session.session_id)
                assert live is not None and live.state is SessionState.IDLE
                session.send_datagram(b"ping")
                session.send_datagram(b"late")  # still queued when the server closes
                assert await session.receive_datagram() == b"echo:ping"
            nursery.cancel_scope.cancel()
    assert states == [SessionState.ACTIVE]  # the datagram was activity: IDLE -> ACTIVE
    assert len(closed) == 1 and failures == []


async def test_silent_client_times_out(autojump_clock: trio.testing.MockClock) -> None:
    server = _server()
    failures: list[BaseException] = []
    client_end, server_end = memory_channel_pair((CLIENT, SERVER))
    with trio.fail_after(10):
        await _serve_one(server, server_end, _echo, failures)
    assert [getattr(f, "reason", None) for f in failures] == ["timeout"]
    assert server.statistics().rejected_by_reason == {"timeout": 1}
    await client_end.aclose()


async def test_token_expiry_and_revocation_hang_up_live_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server()
    failures: list[BaseException] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_timers)
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            # Heartbeats keep the TTL alive, but the token itself ends in 5 s.
            async with open_session(client_end, document="doc", token=_token(expires_in=5)) as session:
                session_id = session.session_id
                with pytest.raises(ConnectionClosed, match="session expired"):
                    await session.receive()
                assert trio.current_time() >= 4
            assert server.manager.get(session_id) is None

            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token(token_id="bad-jti")) as session:
                await session.send(b"x")
                assert await session.receive() == b"echo:x"
                assert await server.revoke("bad-jti") == 1
                with pytest.raises(ConnectionClosed, match="token revoked"):
                    await session.receive()
                resumption = session.resumption
            # Nor can it be resumed, nor the token reused.
            for kwargs in ({"resume": resumption}, {"token": _token(token_id="bad-jti")}):
                client_end, server_end = memory_channel_pair((CLIENT, SERVER))
                nursery.start_soon(_serve_one, server, server_end, _echo, failures)
                with pytest.raises(AuthError) as info:
                    async with open_session(client_end, document="doc", **kwargs):  # type: ignore[arg-type]
                        pass
                assert info.value.reason in {"unknown_session", "revoked"}
            nursery.cancel_scope.cancel()


async def test_a_broken_frame_ends_the_session_for_good() -> None:
    server = _server()
    failures: list[BaseException] = []
    outcome: list[BaseException] = []

    async def reader(session: SessionChannel) -> None:
        try:
            await session.receive()
        except ConnectionClosed as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, reader, failures)
            async with open_session(client_end, document="doc", token=_token()) as session:
                session_id = session.session_id
                await session.raw.send(b"\x09not a frame kind")  # bypass the framing
                with pytest.raises(ConnectionClosed):
                    await session.receive()
    assert len(outcome) == 1 and "broke the session protocol" in str(outcome[0])
    assert server.manager.get(session_id) is None  # closed, not left resumable


async def test_a_session_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    from aetherflow_sdk.session import SqliteSessionStore

    path = tmp_path / "sessions.db"
    failures: list[BaseException] = []

    def start() -> tuple[SessionServer, SqliteSessionStore]:
        store = SqliteSessionStore(path)
        manager = SessionManager(CONFIG, store=store, random_bytes=fixed_random(8))
        manager.load(_clock())
        return SessionServer(manager, TokenVerifier([OWNER.node_id]), clock=_clock), store

    with trio.fail_after(5):
        server, store = start()
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", token=_token()) as first:
                await first.send(b"before")
                assert await first.receive() == b"echo:before"
                await first.raw.aclose()
                resumption = first.resumption
        store.close()  # the server process ends

        server, store = start()  # ... and a new one starts from the same file
        restored = server.manager.get(resumption.session_id)
        assert restored is not None and restored.state is SessionState.DISCONNECTING
        async with trio.open_nursery() as nursery:
            client_end, server_end = memory_channel_pair((CLIENT, SERVER))
            nursery.start_soon(_serve_one, server, server_end, _echo, failures)
            async with open_session(client_end, document="doc", resume=resumption) as second:
                assert second.session_id == resumption.session_id
                await second.send(b"after")
                assert await second.receive() == b"echo:after"
        store.close()
    assert server.statistics().resumed == 1
