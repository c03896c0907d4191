"""A one-document peer built from the SDK alone: Quantum, sessions and ReplicaSync.

It gives the editor the :class:`~tui_editor._ports.EditorDocument` and
:class:`~tui_editor._ports.EditorNode` it needs while running on its own: it listens
for sessions on one Quantum endpoint (tokens it issued itself, read-only enforced by
the session layer and by ``ReplicaSync.serve(can_write=False)``), and joins a
document from an ``af1…`` ticket, reconnecting when the link drops. Everything runs
on the caller's event loop (Textual's asyncio loop in the editor): pycrdt objects
never cross threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from aetherflow_sdk import AetherFlowError, AuthError, quantum
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.replica import PeerPresence, Replica, ReplicaSync, is_write_message
from aetherflow_sdk.session import (
    Permission,
    SessionManager,
    SessionServer,
    Ticket,
    TokenVerifier,
    open_session,
    share_ticket,
)
from tui_editor._ports import PeerRow, SyncState
from tui_editor._ports import Permission as PermissionText

UNDO_CAPTURE_MS = 500  # edits this close together undo as one step (a typed word, not a letter)
TICKET_LIFETIME = 7 * 86_400.0  # seconds a shared ticket stays valid
_ACTIVITY_POLL = 1.0  # seconds: RTT and loss change without an event
_JOIN_TIMEOUT = 10.0  # seconds to reach the document's owner the first time
_RECONNECT_MAX = 5.0  # longest pause between two reconnection attempts


class JoinFailed(AetherFlowError):
    """The ticket's peer could not be reached or refused the ticket."""


@attrs.define(eq=False)
class _Link:
    connection: quantum.Connection
    user: str


def _reachable(address: tuple[str, int]) -> tuple[tuple[str, int], ...]:
    """Addresses to put in a ticket: a wildcard bind becomes loopback plus the primary LAN address."""
    host, port = address
    if not ipaddress.ip_address(host).is_unspecified:
        return ((host, port),)
    found = [("127.0.0.1", port)]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        lan = probe.getsockname()[0]
        if lan != "127.0.0.1":
            found.insert(0, (lan, port))
    return tuple(found)


class DirectPeer:
    """One document, its replica, and the sessions that keep it in sync (both ports in one)."""

    def __init__(
        self,
        *,
        endpoint: quantum.Endpoint,
        identity: Identity,
        replica: Replica,
        sync: ReplicaSync,
        label: str,
        user: str,
    ) -> None:
        self._endpoint = endpoint
        self._identity = identity
        self._replica = replica
        self._sync = sync
        self._label = label
        self._user = user
        self._links: dict[bytes, _Link] = {}
        self._read_only = False
        self._server = SessionServer(
            SessionManager(), TokenVerifier([identity.node_id]), is_write=is_write_message
        )
        self._local_at_disconnect = 0
        self.last_error: str | None = None
        self.sessions_refused = 0

    # -- EditorNode -----------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return format_node_id(self._identity.node_id)

    @property
    def address(self) -> tuple[str, int]:
        return self._endpoint.local_address

    def peers(self) -> Sequence[PeerRow]:
        rows = []
        for peer_id, link in self._links.items():
            stats = link.connection.statistics()
            loss = stats.packets_lost / stats.packets_sent if stats.packets_sent else None
            rows.append(
                PeerRow(
                    name=link.user,
                    node_id=format_node_id(peer_id),
                    path="direct",
                    rtt=stats.smoothed_rtt if stats.smoothed_rtt > 0 else None,
                    loss=loss,
                )
            )
        return rows

    def share(self, *, user: str, perm: PermissionText) -> str:
        ticket = share_ticket(
            self._identity,
            document=self._replica.doc_id,
            user=user,
            permission=perm,
            expires_in=TICKET_LIFETIME,
            now=time.time(),
            direct=_reachable(self.address),
        )
        return ticket.encode()

    # -- EditorDocument -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._label

    @property
    def replica(self) -> Replica:
        return self._replica

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def read_only_reason(self) -> str:
        return "read-only: the ticket you joined with grants 'ro' (you see every edit, and cannot write)"

    def set_presence(self, *, name: str, color: str, anchor: int | None, head: int | None) -> None:
        self._sync.set_presence(name=name, color=color, anchor=anchor, head=head)

    def presence_peers(self) -> Sequence[PeerPresence]:
        own = self._replica.client_id
        return [p for client, p in sorted(self._sync.presence().items()) if client != own]

    def sync_state(self) -> SyncState:
        protocol = self._sync.protocol
        if not self._links:
            local = self._replica.statistics().local_transactions - self._local_at_disconnect
            return SyncState(state="offline", pending=max(0, local))
        held = protocol.statistics().held_updates
        waiting = sum(1 for peer in protocol.peers if protocol.peer_state(peer) != "synced")
        if held or waiting:
            return SyncState(state="syncing", pending=held + waiting)
        return SyncState(state="synced", pending=0)

    async def wait_activity(self) -> None:
        with anyio.move_on_after(_ACTIVITY_POLL):
            await self._sync.activity.wait()

    # -- serving --------------------------------------------------------------------------

    def _link(self, peer_id: bytes, link: _Link) -> None:
        self._links[peer_id] = link

    def _unlink(self, peer_id: bytes, link: _Link) -> None:
        if self._links.get(peer_id) is link:
            del self._links[peer_id]
            if not self._links:
                self._local_at_disconnect = self._replica.statistics().local_transactions

    async def accept_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._server.run_timers)
            while True:
                connection = await self._endpoint.accept()
                tg.start_soon(self._serve_incoming, connection)

    async def _serve_incoming(self, connection: quantum.Connection) -> None:
        try:
            async with self._server.accept(connection) as session:
                if session.document != self._replica.doc_id:
                    self.sessions_refused += 1
                    return
                link = _Link(connection, session.user)
                self._link(connection.peer_id, link)
                try:
                    await self._sync.serve(session, can_write=session.permission is Permission.READ_WRITE)
                finally:
                    self._unlink(connection.peer_id, link)
        except AuthError as exc:
            self.sessions_refused += 1
            self.last_error = f"refused a peer: {exc}"
        except AetherFlowError:
            pass  # the connection went away during the handshake or the sync
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(AetherFlowError):
                await connection.aclose()

    async def join_once(
        self, ticket: Ticket, addresses: Sequence[tuple[str, int]], opened: anyio.Event
    ) -> None:
        """Open one session to the ticket's issuer and sync until it ends."""
        errors = []
        for address in addresses:
            try:
                with anyio.fail_after(_JOIN_TIMEOUT / 2):
                    connection = await self._endpoint.connect(address, peer_id=ticket.issuer)
            except (TimeoutError, AetherFlowError, OSError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc or 'no answer'}")
                continue
            try:
                async with open_session(connection, document=ticket.document, token=ticket.token) as session:
                    self._read_only = session.permission is Permission.READ_ONLY
                    link = _Link(connection, "owner")
                    self._link(connection.peer_id, link)
                    opened.set()
                    try:
                        await self._sync.serve(session)
                    finally:
                        self._unlink(connection.peer_id, link)
                return
            except AuthError as exc:
                raise JoinFailed(f"the document's owner refused the ticket: {exc}") from None
            except AetherFlowError as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(AetherFlowError):
                    await connection.aclose()
        raise JoinFailed("could not reach the document's owner (" + "; ".join(errors) + ")")

    async def join_loop(
        self, ticket: Ticket, addresses: Sequence[tuple[str, int]], opened: anyio.Event
    ) -> None:
        """Stay joined: reconnect with a growing pause whenever the session ends."""
        pause = 0.2
        while True:
            try:
                await self.join_once(ticket, addresses, opened)
                pause = 0.2
            except JoinFailed as exc:
                self.last_error = str(exc)
                if not opened.is_set() and "refused" in str(exc):
                    raise
            await anyio.sleep(pause)
            pause = min(pause * 2, _RECONNECT_MAX)


@contextlib.asynccontextmanager
async def open_direct_peer(
    *,
    doc_id: str,
    label: str,
    user: str,
    data_dir: Path | None = None,
    listen: tuple[str, int] = ("127.0.0.1", 0),
    join: Ticket | None = None,
    peers: Sequence[tuple[str, int]] = (),
    seed: str | None = None,
    presence_timeout: float | None = None,
) -> AsyncIterator[DirectPeer]:
    """Run a peer for one document until the block exits (then leave cleanly: peers drop our cursor).

    ``seed`` fills a replica that never held anything (a file opened for the first
    time). With ``join``, waits until the session is open (bounded), so the caller
    knows whether it may write.
    """
    identity = Identity.load_or_create(data_dir / "identity.key") if data_dir else Identity.generate()
    if data_dir is not None:
        replica = Replica.open(data_dir / "documents.sqlite", doc_id, undo_capture_ms=UNDO_CAPTURE_MS)
    else:
        replica = Replica(doc_id, undo_capture_ms=UNDO_CAPTURE_MS)
    try:
        if seed and join is None and not len(replica) and replica.state_vector() == b"\x00":
            replica.seed(seed)
        extra: dict[str, Any] = {} if presence_timeout is None else {"awareness_timeout": presence_timeout}
        async with (
            quantum.open_endpoint(listen, identity=identity) as endpoint,
            ReplicaSync(replica, **extra) as sync,
            anyio.create_task_group() as tg,
        ):
            peer = DirectPeer(
                endpoint=endpoint, identity=identity, replica=replica, sync=sync, label=label, user=user
            )
            tg.start_soon(peer.accept_loop)
            if data_dir is not None:
                tg.start_soon(replica.autoflush)
            if join is not None:
                opened = anyio.Event()
                addresses = [*peers, *join.direct]
                if not addresses:
                    raise JoinFailed("the ticket names no address; give one with --peer HOST:PORT")
                tg.start_soon(peer.join_loop, join, addresses, opened)
                with anyio.move_on_after(_JOIN_TIMEOUT):
                    await opened.wait()
                if not opened.is_set():
                    raise JoinFailed(peer.last_error or "could not reach the document's owner in time")
            try:
                yield peer
            finally:
                with anyio.CancelScope(shield=True):
                    await sync.aclose()  # announce that we leave: peers drop our cursor at once
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await replica.aclose()
