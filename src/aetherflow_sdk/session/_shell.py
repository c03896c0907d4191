"""The thin async shell: sessions over any :class:`MessageChannel` (a Quantum connection in practice).

Two entry points, both async context managers, both anyio (so they run from
trio and from asyncio):

* client: ``async with open_session(channel, document=..., token=...) as session``
  (or ``resume=session.resumption`` after a dropped connection);
* server: ``async with server.accept(channel) as session`` on a :class:`SessionServer`.

The ``session`` is a :class:`SessionChannel`, itself a :class:`MessageChannel`,
so the replica runs over it unchanged. A background task (in a task group the
context manager owns) reads the connection: it answers session control
(heartbeats, close, write-denied notices) and hands application messages to
:meth:`SessionChannel.receive` through a small bounded buffer, so backpressure
still reaches the transport. The client's task group also sends heartbeats.

All protocol decisions are in :mod:`._handshake` and :class:`SessionManager`;
only this module reads the clock (``clock``, default ``time.time``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from typing import Protocol

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aetherflow_sdk._channel import MessageChannel
from aetherflow_sdk._errors import (
    AuthError,
    BadPacket,
    ClosedByPeer,
    ClosedLocally,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
)
from aetherflow_sdk.session._handshake import (
    ClientHello,
    FrameKind,
    ResumeRequest,
    client_result_untrusted,
    decode_frame_untrusted,
    encode_frame,
    encode_heartbeat_ack,
    encode_message,
    encode_write_denied,
    heartbeat_ack_remaining,
    server_decide,
    write_denied_count,
)
from aetherflow_sdk.session._manager import SessionManager
from aetherflow_sdk.session._records import Permission
from aetherflow_sdk.session._state import SessionState
from aetherflow_sdk.session._tokens import AuthReason, TokenVerifier

logger = logging.getLogger(__name__)

RECEIVE_BUFFER = 64
"""Application messages held between the reader task and receive(); beyond it the reader waits."""

IsWrite = Callable[[bytes], bool]
"""Decides whether an application message is a write (the replica layer supplies it)."""
CLOSE_GRACE = 2.0
"""Seconds allowed for a goodbye (close frame, reject reply) before the connection is dropped anyway."""


@attrs.frozen(kw_only=True)
class Resumption:
    """What a client keeps to resume its session on a new connection (treat ``secret`` as a password)."""

    document: str
    """The session's document."""
    session_id: uuid.UUID
    """The session to resume."""
    secret: bytes
    """The current resumption secret (32 bytes); it changes at every resumption."""


@attrs.frozen(kw_only=True)
class SessionChannelStatistics:
    """Counters of one :class:`SessionChannel`."""

    session_id: uuid.UUID
    """The session."""
    permission: Permission
    """Granted permission."""
    heartbeats_sent: int
    """Heartbeats this side sent (client)."""
    heartbeats_received: int
    """Heartbeats (server) or heartbeat acks (client) received."""
    remaining_ttl: float | None
    """TTL left as of the last heartbeat ack (client) or heartbeat (server); None before the first."""
    writes_denied: int
    """Server: writes dropped from this read-only session. Client: as last reported by the server."""
    messages_received: int
    """Application messages delivered to :meth:`SessionChannel.receive` (or dropped as denied writes)."""


@attrs.frozen(kw_only=True)
class SessionServerStatistics:
    """Counters of a :class:`SessionServer` since it was made."""

    accepted: int
    """Sessions opened with a token."""
    resumed: int
    """Sessions resumed with a secret."""
    rejected: int
    """Handshakes refused (every reason, including timeouts)."""
    rejected_by_reason: dict[str, int]
    """Refusals per :class:`AuthReason` value (a fresh dict)."""
    writes_denied: int
    """Write messages dropped from read-only sessions, all sessions together."""


class _ServerHooks(Protocol):
    """What a server-side :class:`SessionChannel` reports to its :class:`SessionServer`."""

    def heartbeat(self) -> float | None:
        """A heartbeat arrived; returns the TTL left (to acknowledge), or None if the session moved on."""

    def activity(self) -> None:
        """An application message arrived."""

    def write_denied(self) -> None:
        """A write from a read-only session was dropped."""

    def ended(self, *, for_good: bool) -> None:
        """The session left this connection: closed for good, or detached (resumable)."""


class SessionChannel:
    """A :class:`MessageChannel` that carries one session.

    Made by :func:`open_session` or :meth:`SessionServer.accept`, not directly.
    Keep calling :meth:`receive`: once 64 application messages wait unread, the
    reader task waits too (backpressure), and so does heartbeat handling, so a
    server that stops reading lets its sessions run into their TTL.
    """

    def __init__(
        self,
        channel: MessageChannel,
        *,
        session_id: uuid.UUID,
        user: str,
        document: str,
        permission: Permission,
        heartbeat_interval: float,
        secret: bytes | None,
        is_write: IsWrite | None,
        hooks: _ServerHooks | None,
    ) -> None:
        self.raw = channel
        """The underlying connection (for its statistics; sending on it bypasses the session)."""
        self.session_id = session_id
        self.user = user
        self.document = document
        self.permission = permission
        self.heartbeat_interval = heartbeat_interval
        self._secret = secret
        self._is_write = is_write
        self._hooks = hooks
        self._inbox_send: MemoryObjectSendStream[bytes]
        self._inbox_receive: MemoryObjectReceiveStream[bytes]
        self._inbox_send, self._inbox_receive = anyio.create_memory_object_stream[bytes](RECEIVE_BUFFER)
        self._ended: ConnectionClosed | None = None
        self._finished = False
        self._closed_locally = False
        self._heartbeats_sent = 0
        self._heartbeats_received = 0
        self._remaining_ttl: float | None = None
        self._writes_denied = 0
        self._messages_received = 0

    @property
    def is_server(self) -> bool:
        return self._hooks is not None

    @property
    def peer_id(self) -> bytes:
        return self.raw.peer_id

    @property
    def resumption(self) -> Resumption:
        """Client side: what to pass as ``resume=`` to :func:`open_session` after a dropped connection."""
        if self._secret is None:
            raise LocalProtocolError("only the client side of a session holds a resumption secret")
        return Resumption(document=self.document, session_id=self.session_id, secret=self._secret)

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        if self._closed_locally:
            raise ClosedLocally("send() on a session this side closed")
        await self.raw.send(encode_frame(FrameKind.APPLICATION, data), ordered=ordered)

    async def receive(self) -> bytes:
        if self._closed_locally:
            raise ClosedLocally("receive() on a session this side closed")
        try:
            return await self._inbox_receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            ended = self._ended or ClosedLocally("the session is closed")
            try:  # a fresh exception per call, so tracebacks do not pile up on one instance
                fresh = type(ended)(str(ended), error_code=ended.error_code, reason=ended.reason)
            except TypeError:  # a transport subclass with another constructor
                fresh = ended
            raise fresh from None

    def send_datagram(self, data: bytes) -> None:
        self.raw.send_datagram(data)

    async def receive_datagram(self) -> bytes:
        """Like :meth:`receive`: raises ClosedLocally once this side closed; a datagram is activity."""
        if self._closed_locally:
            raise ClosedLocally("receive_datagram() on a session this side closed")
        while True:
            data = await self.raw.receive_datagram()
            if not await self._deny_if_write(data):
                if self._hooks is not None:
                    self._hooks.activity()
                return data

    async def aclose(self) -> None:
        """End the session for good (the peer cannot resume it), then close the connection."""
        if self._closed_locally:
            return
        self._closed_locally = True
        send_close = self._ended is None
        self._finish(for_good=True)
        with anyio.CancelScope(shield=True):
            if send_close:
                with anyio.move_on_after(CLOSE_GRACE):  # best effort: a dead peer must not hold us up
                    with suppress(ConnectionClosed):
                        await self.raw.send(encode_frame(FrameKind.CLOSE, b"closed by application"))
            with anyio.move_on_after(CLOSE_GRACE):  # a dead peer must not hold the close up
                await self.raw.aclose()

    async def _end(self, reason: str) -> None:
        """Server: the session ended under the connection (expired, revoked): say so and hang up."""
        if self._closed_locally:
            return
        self._closed_locally = True
        self._ended = ClosedLocally(f"the session ended: {reason}", reason=reason)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_GRACE), suppress(ConnectionClosed):
                await self.raw.send(encode_frame(FrameKind.CLOSE, reason.encode()))
            with anyio.move_on_after(CLOSE_GRACE):  # a dead peer must not hold the close up
                await self.raw.aclose()

    def statistics(self) -> SessionChannelStatistics:
        return SessionChannelStatistics(
            session_id=self.session_id,
            permission=self.permission,
            heartbeats_sent=self._heartbeats_sent,
            heartbeats_received=self._heartbeats_received,
            remaining_ttl=self._remaining_ttl,
            writes_denied=self._writes_denied,
            messages_received=self._messages_received,
        )

    # -- background work ------------------------------------------------------------------------------

    def _finish(self, *, for_good: bool) -> None:
        if not self._finished:
            self._finished = True
            if self._hooks is not None:
                self._hooks.ended(for_good=for_good)

    async def _deny_if_write(self, data: bytes) -> bool:
        """Server: True (and the sender told) if ``data`` is a write from a read-only session."""
        if (
            self._hooks is None
            or self.permission is not Permission.READ_ONLY
            or self._is_write is None
            or not self._is_write(data)
        ):
            return False
        self._writes_denied += 1
        self._hooks.write_denied()
        with suppress(ConnectionClosed):
            await self.raw.send(encode_write_denied(self._writes_denied))
        return True

    async def _handle_frame(self, kind: FrameKind, body: bytes) -> bool:
        """Act on one frame; False once the session is over."""
        hooks = self._hooks
        if kind is FrameKind.APPLICATION:
            self._messages_received += 1
            if hooks is not None:
                if await self._deny_if_write(body):
                    return True
                hooks.activity()
            await self._inbox_send.send(body)
        elif kind is FrameKind.HEARTBEAT and hooks is not None:
            self._heartbeats_received += 1
            remaining = hooks.heartbeat()
            if remaining is not None:
                self._remaining_ttl = remaining
                await self.raw.send(encode_heartbeat_ack(remaining))
        elif kind is FrameKind.HEARTBEAT_ACK and hooks is None:
            self._heartbeats_received += 1
            self._remaining_ttl = heartbeat_ack_remaining(body)
        elif kind is FrameKind.WRITE_DENIED and hooks is None:
            self._writes_denied = write_denied_count(body)
        elif kind is FrameKind.CLOSE:
            text = body.decode("utf-8", "replace")[:200]
            self._ended = ClosedByPeer(f"the peer ended the session ({text})", reason=text)
            self._finish(for_good=True)
            return False
        else:
            logger.debug("session %s: ignoring a %s frame on this side", self.session_id, kind.name)
        return True

    async def _read_loop(self) -> None:
        """Read the connection until it ends: control frames handled here, application data queued."""
        try:
            while True:
                data = await self.raw.receive()
                try:
                    kind, body = decode_frame_untrusted(data)
                except BadPacket as exc:
                    logger.warning("session %s: %s; closing it", self.session_id, exc)
                    self._ended = ClosedLocally(f"the peer broke the session protocol ({exc})")
                    self._finish(for_good=True)
                    with anyio.CancelScope(shield=True):
                        await self.raw.aclose()
                    return
                if not await self._handle_frame(kind, body):
                    return
        except ConnectionClosed as exc:
            if self._ended is None:
                self._ended = exc
            # Dropped (not closed on purpose): the session waits for resumption.
            self._finish(for_good=self._closed_locally)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # our own receive side was closed: the application is done
        finally:
            self._inbox_send.close()

    async def _heartbeat_loop(self) -> None:
        """Client: one heartbeat per interval while the connection lasts."""
        try:
            while self._ended is None and not self._closed_locally:
                await anyio.sleep(self.heartbeat_interval)
                await self.raw.send(encode_frame(FrameKind.HEARTBEAT))
                self._heartbeats_sent += 1
        except ConnectionClosed:
            pass


@asynccontextmanager
async def _running(session: SessionChannel, *, heartbeats: bool) -> AsyncIterator[SessionChannel]:
    """Run the session's background tasks around the caller's block.

    The caller's exception is carried out of the task group and re-raised as
    is, so that callers see ``AuthError`` or ``ConnectionClosed``, not an
    ExceptionGroup.
    """
    failure: BaseException | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(session._read_loop)
        if heartbeats:
            tasks.start_soon(session._heartbeat_loop)
        try:
            yield session
        except BaseException as exc:
            failure = exc
        finally:
            await session.aclose()
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _hello(document: str, token: str | None, resume: Resumption | None) -> ClientHello | ResumeRequest:
    if (token is None) == (resume is None):
        raise LocalProtocolError("open_session needs exactly one of token= or resume=")
    if token is not None:
        return ClientHello(document=document, token=token)
    assert resume is not None
    if resume.document != document:
        raise LocalProtocolError(f"that resumption is for document {resume.document!r}, not {document!r}")
    return ResumeRequest(document=document, session_id=resume.session_id, secret=resume.secret)


@asynccontextmanager
async def open_session(
    channel: MessageChannel,
    *,
    document: str,
    token: str | None = None,
    resume: Resumption | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[SessionChannel]:
    """Client: open (with ``token``) or resume (with ``resume``) a session for ``document``.

    Raises :class:`AuthError` if the server refuses (``reason`` is the
    server's code), :class:`RemoteProtocolError` for an unreadable answer,
    ``TimeoutError`` if no answer comes within ``timeout`` seconds; the
    connection is closed in each case. Leaving the block ends the session for
    good; if the connection drops instead, keep ``session.resumption`` and pass
    it as ``resume=`` on a new connection.
    """
    hello = _hello(document, token, resume)
    try:
        with anyio.fail_after(timeout):
            await channel.send(encode_message(hello))
            reply = await channel.receive()
        accept = client_result_untrusted(reply)
    except BadPacket as exc:
        await channel.aclose()
        raise RemoteProtocolError(f"the server's session handshake reply is unreadable ({exc})") from None
    except (AuthError, TimeoutError):
        with anyio.CancelScope(shield=True):
            await channel.aclose()
        raise
    session = SessionChannel(
        channel,
        session_id=accept.session_id,
        user=accept.user,
        document=document,
        permission=accept.permission,
        heartbeat_interval=accept.heartbeat_interval,
        secret=accept.secret,
        is_write=None,
        hooks=None,
    )
    async with _running(session, heartbeats=True):
        yield session


@attrs.define(eq=False)
class _Hooks:
    """Binds one server-side channel to its session in the manager."""

    server: SessionServer
    session_id: uuid.UUID
    connection_id: Hashable

    def _mine(self) -> bool:
        # After a resumption elsewhere the session belongs to another connection: this one
        # must no longer heartbeat it, detach it or close it.
        current = self.server.manager.by_connection(self.connection_id)
        return current is not None and current.session_id == self.session_id

    def heartbeat(self) -> float | None:
        if not self._mine():
            return None
        return self.server.manager.heartbeat(self.session_id, self.server.clock())

    def activity(self) -> None:
        if self._mine():
            self.server.manager.touch(self.session_id, self.server.clock())

    def write_denied(self) -> None:
        self.server._writes_denied += 1

    def ended(self, *, for_good: bool) -> None:
        if not self._mine():
            return
        if for_good:
            self.server.manager.close(self.session_id, self.server.clock())
        else:
            self.server.manager.detach(self.session_id, self.server.clock())


class SessionServer:
    """Server side: verifies handshakes, runs the :class:`SessionManager`'s timers, enforces read-only.

    ``is_write(payload)`` decides which application messages are writes (the
    replica provides one for Yjs messages); without it nothing counts as a
    write and read-only sessions cannot be enforced.
    """

    def __init__(
        self,
        manager: SessionManager,
        verifier: TokenVerifier,
        *,
        is_write: IsWrite | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager = manager
        self.verifier = verifier
        self.is_write = is_write
        self.clock = clock
        """Unix time in seconds; the only clock the session layer reads."""
        self._connection_ids = itertools.count(1)
        self._timers_changed: anyio.Event | None = None
        self._live: dict[uuid.UUID, SessionChannel] = {}
        self._accepted = self._resumed = self._rejected = self._writes_denied = 0
        self._rejected_by_reason: dict[str, int] = {}

    def statistics(self) -> SessionServerStatistics:
        return SessionServerStatistics(
            accepted=self._accepted,
            resumed=self._resumed,
            rejected=self._rejected,
            rejected_by_reason=dict(self._rejected_by_reason),
            writes_denied=self._writes_denied,
        )

    async def run_timers(self) -> None:
        """Expire and idle sessions on time, and hang up on expired ones that are still connected.

        Runs until cancelled: start it in your task group.
        """
        async with anyio.create_task_group() as hangups:
            while True:
                self._timers_changed = anyio.Event()
                deadline = self.manager.get_timer()
                delay = math.inf if deadline is None else max(0.0, deadline - self.clock())
                with anyio.move_on_after(delay):
                    await self._timers_changed.wait()
                for session_id in self.manager.handle_timer(self.clock()):
                    channel = self._live.get(session_id)
                    if channel is not None:
                        hangups.start_soon(channel._end, "session expired")

    async def revoke(self, token_id: str, *, until: float = math.inf) -> int:
        """Refuse the token ``token_id`` from now on and end its live sessions; returns how many ended.

        With a store, the revocation is persisted until ``until`` (the token's
        ``exp`` if you know it); build the next verifier with
        ``TokenVerifier(..., revoked=store.revocations(now))`` after a restart.
        """
        self.verifier.revoke(token_id)
        if self.manager.store is not None:
            self.manager.store.add_revocation(token_id, until)
        ended = self.manager.close_token(token_id, self.clock())
        channels = [c for c in map(self._live.get, ended) if c is not None]
        async with anyio.create_task_group() as hangups:
            for channel in channels:
                hangups.start_soon(channel._end, "token revoked")
        return len(ended)

    def _wake_timers(self) -> None:
        if self._timers_changed is not None:
            self._timers_changed.set()

    def _reject(self, reason: str) -> None:
        self._rejected += 1
        self._rejected_by_reason[reason] = self._rejected_by_reason.get(reason, 0) + 1

    @asynccontextmanager
    async def accept(
        self, channel: MessageChannel, *, connection_id: Hashable | None = None
    ) -> AsyncIterator[SessionChannel]:
        """Run the session handshake on a new connection and yield the open session.

        A refused client is sent the reason code, counted in
        :meth:`statistics`, and its connection closed; then :class:`AuthError`
        is raised here (catch it in your accept loop). Leaving the block ends
        the session for good, unless the connection dropped first: then the
        session waits (DISCONNECTING) for its holder to resume it.
        """
        if connection_id is None:
            connection_id = ("session-connection", next(self._connection_ids))
        try:
            with anyio.fail_after(self.manager.config.handshake_timeout):
                first = await channel.receive()
        except TimeoutError:
            self._reject(AuthReason.TIMEOUT)
            with anyio.CancelScope(shield=True):
                await channel.aclose()
            raise AuthError(
                "the client sent no session handshake in time", reason=AuthReason.TIMEOUT
            ) from None
        decision = server_decide(
            first,
            now=self.clock(),
            peer_id=channel.peer_id,
            connection_id=connection_id,
            verifier=self.verifier,
            manager=self.manager,
        )
        if decision.session is None:
            assert decision.rejection is not None
            self._reject(decision.rejection.reason)
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                with suppress(ConnectionClosed):
                    await channel.send(decision.reply)
                await channel.aclose()
            raise decision.rejection
        record = decision.session
        self._wake_timers()
        try:
            await channel.send(decision.reply)
        except ConnectionClosed:
            # The reply never left: a new session just ends, a resumed one waits again.
            if record.state is SessionState.CONNECTING:
                self.manager.close(record.session_id, self.clock())
            else:
                self.manager.detach(record.session_id, self.clock())
            raise
        if record.state is SessionState.CONNECTING:
            self.manager.establish(record.session_id, self.clock())
            self._accepted += 1
        else:
            self._resumed += 1
        session = SessionChannel(
            channel,
            session_id=record.session_id,
            user=record.user,
            document=record.document,
            permission=record.permission,
            heartbeat_interval=self.manager.config.heartbeat_interval,
            secret=None,
            is_write=self.is_write,
            hooks=_Hooks(self, record.session_id, connection_id),
        )
        stale = self._live.get(record.session_id)
        if stale is not None:  # resumed while the old connection still looked alive: hang it up
            await stale._end("session resumed on another connection")
        self._live[record.session_id] = session
        try:
            async with _running(session, heartbeats=False):
                yield session
        finally:
            if self._live.get(record.session_id) is session:
                del self._live[record.session_id]
