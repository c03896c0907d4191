"""``open_node``: any program that calls it becomes an AetherFlow node.

::

    async with open_node(data_dir="~/.local/share/myapp", name="alice", discovery=False) as node:
        doc = await node.open_document("notes")          # create or reopen, by name
        doc.insert(0, "hello")
        print(node.share(doc, user="bob", perm="rw"))    # an af1… ticket with this node's addresses

A node holds an identity (``identity.key``), a data directory (locked while it runs), its
documents (SQLite, durable) and sessions, a Quantum endpoint, and the mesh of links to the
other holders of its documents (``_mesh.py``). Runs on trio or asyncio (anyio); everything
for one node runs on the event loop that opened it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import attrs

from aetherflow_node._catalog import Catalog, DocumentRecord
from aetherflow_node._datadir import (
    CATALOG_FILE,
    DOCUMENTS_FILE,
    SESSIONS_FILE,
    DataDirLock,
    check_writable,
    default_data_dir,
    load_identity,
)
from aetherflow_node._document import Document
from aetherflow_node._limits import Limits
from aetherflow_node._mesh import Link, Mesh, path_kind, revocation_payload
from aetherflow_node._relay_client import HomeRelay, open_home_relay
from aetherflow_node._routes import home_route, is_relayed, parse_relay
from aetherflow_node._stats import DocumentStatistics as NodeDocumentStatistics
from aetherflow_node._stats import NodeStatistics, PeerStatistics
from aetherflow_sdk import LocalProtocolError, uuid7
from aetherflow_sdk._identity import Identity, format_node_id, parse_node_id
from aetherflow_sdk.quantum import QuantumConfig, open_endpoint
from aetherflow_sdk.replica import Replica, ReplicaSync, SqliteStore, is_write_message
from aetherflow_sdk.session import (
    InvalidTicket,
    Permission,
    SessionManager,
    SessionServer,
    SqliteSessionStore,
    Ticket,
    TokenVerifier,
    issue_token,
    share_ticket,
)
from aetherflow_sdk.session._ticket import MAX_ADDRESSES, TICKET_PREFIX

logger = logging.getLogger("aetherflow.node")

SELF_TOKEN_LIFETIME = 10 * 365 * 86_400
"""The token a document's creator presents to its holders (bound to the creator's node)."""
REVOCATION_POLL = 2.0
"""Seconds between looks at the catalog for revocations made by ``aetherflow revoke``."""
AUTOFLUSH_INTERVAL = 0.05
"""Group commit: every edit is durable within about this long plus one SQLite commit."""


@attrs.frozen(kw_only=True)
class PeerInfo:
    """One connected peer, as ``node.peers`` lists it."""

    node_id: str
    """The peer's node ID (text form)."""
    name: str
    """The name it gave (``open_node(name=...)``), or "" before it said."""
    path: str
    """``"lan"`` (loopback, private or link-local address), ``"direct"``, or ``"relayed"``."""
    address: tuple[str, int]
    """Where its packets come from now."""
    rtt: float
    """Smoothed round-trip time, seconds."""
    loss: float
    """Fraction of our packets declared lost on this connection (0..1)."""
    documents: tuple[str, ...]
    """Names of the documents we sync with it."""


def _address(peer: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(peer, str):
        host, sep, port_text = peer.rpartition(":")
        if not sep or not port_text.isdigit() or not host or not 0 < int(port_text) < 65536:
            raise LocalProtocolError(f"peer {peer!r} is not host:port (for IPv6 write [::1]:4433)")
        return host.removeprefix("[").removesuffix("]"), int(port_text)
    host, port = peer
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise LocalProtocolError(f"peer port {port!r} is not in 1..65535")
    return str(host), port


def _interface_addresses(ipv6: bool) -> list[str]:
    """This machine's addresses, non-loopback first."""
    try:
        import ifaddr  # a dependency of zeroconf
    except ImportError:  # pragma: no cover
        return []
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ipv6 == isinstance(ip.ip, tuple):
                text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
                if text not in found and not text.startswith("fe80"):
                    found.append(text)
    return sorted(found, key=lambda a: a.startswith("127.") or a == "::1")


class Node:
    """A running node. Made by :func:`open_node`, never directly."""

    def __init__(
        self,
        *,
        identity: Identity,
        name: str,
        data_dir: Path,
        catalog: Catalog,
        store: SqliteStore,
        server: SessionServer,
        verifier: TokenVerifier,
        mesh_factory: object = None,
    ) -> None:
        self.identity = identity
        self.name = name
        self.data_dir = data_dir
        self.catalog = catalog
        self._store = store
        self._server = server
        self._verifier = verifier
        self._documents: dict[str, Document] = {}
        self._by_channel: dict[bytes, Document] = {}
        self._stops: list[tuple[anyio.Event, anyio.Event]] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self.mesh: Mesh
        self._running = True
        self._started = time.monotonic()
        self.discovery_available = False
        """True while mDNS discovery runs (set by the discovery task)."""
        self.home_relay: HomeRelay | None = None
        """The node's home relay (``open_node(relay=...)``, or adopted from a ticket), or None."""
        self._relay_liveness = 15.0
        self.discovered_peers = 0
        self._activity = anyio.Event()
        self._documents_changed = anyio.Event()

    @property
    def activity(self) -> anyio.Event:
        """An event set the next time a peer connects or leaves, or a document's sync state
        changes. Take it *before* checking your condition, then wait on it."""
        return self._activity

    def _notify(self) -> None:
        self._activity.set()
        self._activity = anyio.Event()

    # -- identity and addresses ------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This node's ID, text form (52 base32 characters)."""
        return format_node_id(self.identity.node_id)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the node's UDP socket is bound to."""
        return self.mesh.endpoint.local_address

    def reachable_addresses(self) -> tuple[tuple[str, int], ...]:
        """Where other nodes can reach this one: the bound address, or every interface's when
        bound to all (``0.0.0.0`` / ``::``), loopback last."""
        host, port = self.address
        if host in ("0.0.0.0", "::"):
            hosts = _interface_addresses(ipv6=host == "::") or ["127.0.0.1"]
        else:
            hosts = [host]
        return tuple((h, port) for h in hosts[:MAX_ADDRESSES])

    @property
    def documents(self) -> tuple[Document, ...]:
        return tuple(self._documents.values())

    def _document_by_channel(self, name: bytes) -> Document | None:
        return self._by_channel.get(name)

    # -- documents --------------------------------------------------------------------------------

    async def open_document(self, name_or_ticket: str) -> Document:
        """Open a document: by name or ID (created if new), or by joining an ``af1…`` ticket."""
        text = name_or_ticket.strip()
        if not text:
            raise LocalProtocolError("a document needs a name (or a ticket)")
        if text.startswith(TICKET_PREFIX) and len(text) > 40:
            return await self._join(Ticket.parse(text))
        record = self.catalog.document(text)
        if record is None:
            named = self.catalog.by_name(text)
            if len(named) > 1:
                ids = ", ".join(r.doc_id for r in named)
                raise LocalProtocolError(
                    f"{len(named)} documents are called {text!r} here ({ids}); open one by its ID"
                )
            record = named[0] if named else self._create(text)
        return await self._open(record)

    def _create(self, name: str) -> DocumentRecord:
        if len(name) > 256:
            raise LocalProtocolError("a document name is at most 256 characters")
        doc_id = str(uuid7())
        token = issue_token(
            self.identity,
            user=self.name,
            document=doc_id,
            permission=Permission.READ_WRITE,
            expires_in=SELF_TOKEN_LIFETIME,
            now=time.time(),
            holder=self.identity.node_id,
        )
        record = DocumentRecord(
            doc_id=doc_id,
            name=name,
            issuer=self.identity.node_id,
            secret=os.urandom(32),
            token=token,
            permission=Permission.READ_WRITE,
        )
        self.catalog.add_document(record)
        return record

    async def _join(self, ticket: Ticket) -> Document:
        if ticket.issuer == self.identity.node_id:
            own = self.catalog.document(ticket.document)
            if own is None:
                raise InvalidTicket("this ticket was issued by this node for a document it no longer holds")
            return await self._open(own)
        checker = TokenVerifier()
        checker.trust_for_document(ticket.document, ticket.issuer)
        claims = checker.verify(
            ticket.token, document=ticket.document, now=time.time(), holder=self.identity.node_id
        )
        secret = ticket.secret
        if secret is None:  # an older ticket: derive a stand-in every holder of it derives alike
            import hashlib

            secret = hashlib.blake2b(ticket.document.encode() + ticket.issuer, digest_size=32).digest()
        known = self.catalog.document(ticket.document)
        record = DocumentRecord(
            doc_id=ticket.document,
            name=ticket.name or (known.name if known else ticket.document),
            issuer=ticket.issuer,
            secret=secret,
            token=ticket.token,
            permission=claims.permission,
        )
        if known is None or known.token != record.token:
            self.catalog.add_document(record)
        # The document first (so that a link coming up finds it), then the ticket's addresses, then
        # the holders stored from an earlier run: the mesh keeps one dial per node ID, so a stale
        # address of the issuer (it restarted on a new port) must not shadow the ticket's fresh one.
        document = await self._open(record, dial_holders=False)
        relay = await self._adopt_relay(ticket.relays)
        for address in ticket.direct:
            self.mesh.want(address, ticket.issuer, persistent=True, relay=relay)
        if not ticket.direct and relay is not None:
            self.mesh.want(None, ticket.issuer, persistent=True, relay=relay)
        self._dial_holders(record)
        return document

    async def _adopt_relay(self, relays: tuple[str, ...]) -> str | None:
        """A ticket's relay route for its issuer; a node with no home relay registers there.

        With a home relay of its own, the node keeps it: an issuer at another relay is then
        reached directly or not at all (one home relay per node; see docs/sdk.md).
        """
        for text in relays:
            try:
                address, relay_id = parse_relay(text)
            except LocalProtocolError:
                logger.info("a ticket's relay %r is not usable here; skipped", text)
                continue
            if self.home_relay is None:
                await self._start_home_relay(address, relay_id)
                logger.info("adopted the ticket's relay as home relay", extra={"relay": text})
            return text
        return None

    async def _start_home_relay(self, address: tuple[str, int], relay_id: bytes | None) -> None:
        """Register with the relay at ``address`` and keep it, for as long as the node runs."""

        async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            async with open_home_relay(
                self.mesh.endpoint,
                address,
                relay_id=relay_id,
                candidates=self.reachable_addresses()[:8],
                liveness_timeout=self._relay_liveness,
            ) as home:
                self.home_relay = home
                from aetherflow_node._hosting import follow_persistence_peer

                task_status.started()
                await follow_persistence_peer(self, home)

        assert self._task_group is not None
        await self._task_group.start(run)

    def _dial_holders(self, record: DocumentRecord) -> None:
        for node_id, address in self.catalog.holders(record.doc_id):
            self.mesh.want(address, node_id, persistent=False)

    async def _open(self, record: DocumentRecord, *, dial_holders: bool = True) -> Document:
        existing = self._documents.get(record.doc_id)
        if existing is not None:
            return existing
        self._verifier.trust_for_document(record.doc_id, record.issuer)
        for token_id, _, _ in self.catalog.revocations(record.doc_id, time.time()):
            self._verifier.revoke(token_id)
            self.mesh.applied.add(token_id)
        replica = Replica(record.doc_id, self._store)
        assert self._task_group is not None
        stop, done = anyio.Event(), anyio.Event()
        sync: ReplicaSync = await self._task_group.start(self._run_sync, replica, stop, done)
        document = Document(self, record, replica, sync)
        self._stops.append((stop, done))
        self._documents[record.doc_id] = document
        self._by_channel[record.channel_name] = document
        self._task_group.start_soon(replica.autoflush, AUTOFLUSH_INTERVAL)
        self.mesh.document_opened(document)
        self._documents_changed.set()
        self._documents_changed = anyio.Event()
        if dial_holders:
            self._dial_holders(record)
        return document

    async def _run_sync(
        self,
        replica: Replica,
        stop: anyio.Event,
        done: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[ReplicaSync] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """One document's sync, inside the node's task group (never in the caller's task)."""
        try:
            async with ReplicaSync(replica, clock=anyio.current_time) as sync:
                task_status.started(sync)
                await stop.wait()
        finally:
            done.set()

    # -- sharing and revoking ---------------------------------------------------------------------

    def _issued_here(self, document: Document, what: str) -> None:
        if document.record.issuer != self.identity.node_id:
            raise LocalProtocolError(
                f"only the node that created {document.name!r} can {what} (this node joined it by ticket)"
            )

    def share(
        self,
        document: Document,
        *,
        user: str,
        perm: str = "rw",
        expires_in: float = 7 * 86_400,
        holder: str | None = None,
    ) -> str:
        """An ``af1…`` ticket for ``user`` carrying this node's addresses (``direct``) and its
        home relay (``relays``, pinned: ``NODE_ID@HOST:PORT``).

        ``perm`` is ``"rw"``, ``"ro"``, or ``"serve"`` (for a persistence peer: it needs ``holder``,
        the node ID of the relay that is to host the document).
        """
        self._issued_here(document, "share it")
        try:
            permission = Permission(perm)
        except ValueError:
            raise LocalProtocolError(f"perm must be 'rw', 'ro' or 'serve', not {perm!r}") from None
        if permission is Permission.SERVE and not holder:
            raise LocalProtocolError("a serve ticket is for one persistence peer: give holder=ITS_NODE_ID")

        token_id = str(uuid7())
        now = time.time()
        relay = home_route(self.home_relay)
        relays = (relay,) if relay is not None else ()
        ticket = share_ticket(
            self.identity,
            document=document.doc_id,
            user=user,
            permission=permission,
            expires_in=expires_in,
            now=now,
            direct=self.reachable_addresses()[: MAX_ADDRESSES - len(relays)],
            relays=relays,
            holder=parse_node_id(holder) if holder else None,
            name=document.name,
            secret=document.record.secret,
            token_id=token_id,
        )
        self.catalog.add_issued(token_id, document.doc_id, user, permission, math.ceil(now + expires_in))
        return ticket.encode()

    async def revoke(
        self, document: Document, *, user: str | None = None, token_id: str | None = None
    ) -> int:
        """Revoke the tickets issued for ``user`` (or the one token ``token_id``) on ``document``.

        The revocation is signed by this node, applied here at once (live sessions that used
        it end) and passed to every holder, now and when they next connect. Returns how many
        tokens were revoked.
        """
        self._issued_here(document, "revoke its tickets")
        if (user is None) == (token_id is None):
            raise LocalProtocolError("revoke needs exactly one of user= or token_id=")
        issued = [
            t
            for t in self.catalog.issued(document.doc_id, user)
            if (token_id is None or t.token_id == token_id) and not t.revoked
        ]
        for token in issued:
            payload = revocation_payload(document.doc_id, token.token_id, token.expires)
            signature = self.identity.sign(payload)
            self.catalog.mark_revoked(token.token_id)
            if self.mesh.apply_revocation(document, token.token_id, token.expires, signature):
                await self.mesh.end_revoked(document, token.token_id, token.expires, signature)
        await anyio.lowlevel.checkpoint()
        return len(issued)

    async def _watch_revocations(self) -> None:
        """Pick up revocations written into the catalog by ``aetherflow revoke`` while we run."""
        while True:
            await anyio.sleep(REVOCATION_POLL)
            for document in list(self._documents.values()):
                for token_id, until, signature in self.catalog.revocations(document.doc_id, time.time()):
                    if self.mesh.apply_revocation(document, token_id, until, signature):
                        await self.mesh.end_revoked(document, token_id, until, signature)

    async def host_on_relay(self, document: Document, *, expires_in: float = 365 * 86_400) -> None:
        """Have the home relay's persistence peer keep ``document`` for holders that come online
        while this node is offline: a ``serve`` ticket bound to the relay's node ID, handed over
        on the relay connection. Raises :class:`~aetherflow_node.ServeRefused` if the relay
        hosts no documents or will not host this one."""
        from aetherflow_node._hosting import host_on_relay

        await host_on_relay(self, document, expires_in=expires_in)

    # -- peers --------------------------------------------------------------------------------------

    def connect(self, peer: tuple[str, int] | str) -> None:
        """Keep a link to the node at ``peer`` (``(host, port)`` or ``"host:port"``), redialing as needed."""
        self.mesh.want(_address(peer), None, persistent=True)

    def _path(self, link: Link) -> str:
        """ "relayed" on a relay's path; "lan" when mDNS found the peer or its address is local;
        else "direct"."""
        if is_relayed(link.conn):
            return "relayed"
        if link.peer_id in self.mesh.lan_peers:
            return "lan"
        return path_kind(link.conn.peer_address)

    @property
    def peers(self) -> tuple[PeerInfo, ...]:
        """The peers connected now."""
        infos = []
        names = {d.doc_id: d.name for d in self._documents.values()}
        for link in list(self.mesh.links.values()):
            if link.closed.is_set():
                continue
            stats = link.conn.statistics()
            infos.append(
                PeerInfo(
                    node_id=format_node_id(link.peer_id),
                    name=link.peer_name,
                    path=self._path(link),
                    address=link.conn.peer_address,
                    rtt=stats.smoothed_rtt,
                    loss=stats.packets_lost / stats.packets_sent if stats.packets_sent else 0.0,
                    documents=tuple(sorted(names.get(d, d) for d in link.docs)),
                )
            )
        return tuple(infos)

    def statistics(self) -> NodeStatistics:
        """A frozen snapshot of the whole node (what metrics and health read)."""
        links = [link for link in self.mesh.links.values() if not link.closed.is_set()]
        peers = []
        for link in links:
            stats = link.conn.statistics()
            peers.append(
                PeerStatistics(
                    node_id=format_node_id(link.peer_id),
                    name=link.peer_name,
                    path=self._path(link),
                    smoothed_rtt=stats.smoothed_rtt,
                    loss=stats.packets_lost / stats.packets_sent if stats.packets_sent else 0.0,
                    bytes_sent=stats.bytes_sent,
                    bytes_received=stats.bytes_received,
                    packets_sent=stats.packets_sent,
                    packets_lost=stats.packets_lost,
                    packets_retransmitted=stats.packets_retransmitted,
                    fec_recovered_packets=stats.fec_recovered_packets,
                    documents=len(link.docs),
                )
            )
        documents = []
        for document in self._documents.values():
            sync = document.sync.protocol.statistics()
            state = document.statistics()
            documents.append(
                NodeDocumentStatistics(
                    name=document.name,
                    peers=sync.peers,
                    pending_updates=state.pending_updates,
                    sync_lag=document.sync_lag(),
                    updates_sent=sync.updates_sent,
                    updates_received=sync.updates_applied,
                    bad_messages=sync.bad_messages,
                    writes_denied=sync.writes_denied,
                    storage_bytes=state.storage_bytes,
                    quota_refusals=state.quota_refusals,
                )
            )
        endpoint = self.mesh.endpoint.statistics()
        counters = self.mesh.counters
        return NodeStatistics(
            node_id=self.node_id,
            name=self.name,
            running=self._running,
            uptime=time.monotonic() - self._started,
            connections=len(links),
            connections_opened=counters["connections_opened"],
            connections_closed=counters["connections_closed"],
            reconnects=counters["reconnects"],
            bytes_sent=endpoint.bytes_sent,
            bytes_received=endpoint.bytes_received,
            datagrams_sent=endpoint.datagrams_sent,
            datagrams_received=endpoint.datagrams_received,
            bad_packets=endpoint.bad_packets + endpoint.unknown_connection,
            peers_dropped=counters["peers_dropped"],
            messages_throttled=counters["throttled"] + counters["datagrams_dropped"],
            discovery_available=self.discovery_available,
            discovered_peers=self.discovered_peers,
            lan_peers=sum(1 for p in peers if p.path == "lan"),
            direct_peers=sum(1 for p in peers if p.path == "direct"),
            relayed_peers=sum(1 for p in peers if p.path == "relayed"),
            punch_attempts=counters["punch_attempts"],
            punch_successes=counters["punch_successes"],
            path_upgrades=counters["upgrades"],
            relayed_connects=counters["relayed_connects"],
            peers=tuple(peers),
            documents=tuple(documents),
        )

    # -- shutdown -----------------------------------------------------------------------------------

    async def _aclose(self) -> None:
        """Say goodbye on every document, then make every edit durable."""
        self._running = False
        with anyio.CancelScope(shield=True):
            for stop, _ in self._stops:
                stop.set()  # each ReplicaSync announces our departure
            for _, done in self._stops:
                await done.wait()
            for document in self._documents.values():
                document.closed = True
                with contextlib.suppress(Exception):
                    await document.replica.aclose()
            await self.mesh.close_all()


def _relay_address(relay: str | tuple[str, int]) -> tuple[tuple[str, int], bytes | None]:
    """``HOST:PORT`` or ``NODE_ID@HOST:PORT`` (which pins the relay's identity)."""
    if isinstance(relay, tuple):
        return _address(relay), None
    return parse_relay(relay)


@asynccontextmanager
async def open_node(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    listen: tuple[str, int] = ("0.0.0.0", 0),
    discovery: bool = True,
    interfaces: Sequence[str] | None = None,
    peers: Iterable[tuple[str, int] | str] = (),
    relay: str | tuple[str, int] | None = None,
    limits: Limits | None = None,
    config: QuantumConfig | None = None,
    seed: int | None = None,
) -> AsyncIterator[Node]:
    """Run a node until the block exits; on exit every edit is durable and peers are told.

    ``data_dir`` defaults to ``$XDG_DATA_HOME/aetherflow`` (``~/.local/share/aetherflow``).
    ``peers`` are dialled and kept (redialled with backoff). ``discovery`` finds holders
    of open documents on the LAN (mDNS; ``interfaces`` limits it to those addresses).
    ``relay`` (``HOST:PORT`` or ``NODE_ID@HOST:PORT``) is the node's home relay: the node
    registers there and keeps the registration (``node.home_relay``: the observed public
    address, hole punching, relayed paths); peers it cannot reach directly are reached through
    it, and relayed links are upgraded to direct paths (``_routes.py``). Without one, a node
    adopts the relay of the first ticket it joins that names one. ``seed`` makes the backoff
    jitter reproducible.
    """
    home = _relay_address(relay) if relay is not None else None
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    check_writable(directory)
    lock = DataDirLock(directory)
    lock.acquire()
    catalog: Catalog | None = None
    store: SqliteStore | None = None
    session_store: SqliteSessionStore | None = None
    try:
        identity = load_identity(directory)
        catalog = Catalog(directory / CATALOG_FILE)
        store = SqliteStore(directory / DOCUMENTS_FILE)
        session_store = SqliteSessionStore(directory / SESSIONS_FILE)
        now = time.time()
        manager = SessionManager(store=session_store)
        manager.load(now)
        verifier = TokenVerifier(revoked=session_store.revocations(now))
        server = SessionServer(manager, verifier, is_write=is_write_message)
        manual = [_address(p) for p in peers]
        async with open_endpoint(listen, identity=identity, config=config) as endpoint:
            node = Node(
                identity=identity,
                name=name or format_node_id(identity.node_id)[:8],
                data_dir=directory,
                catalog=catalog,
                store=store,
                server=server,
                verifier=verifier,
            )
            node.mesh = Mesh(node, endpoint, server, verifier, limits or Limits(), random.Random(seed))
            async with anyio.create_task_group() as tg:
                node._task_group = tg
                tg.start_soon(server.run_timers)
                tg.start_soon(node._watch_revocations)
                node.mesh.start(tg)
                for address in manual:
                    node.mesh.want(address, None, persistent=True)
                if discovery:
                    from aetherflow_node import _lan

                    tg.start_soon(_lan.run, node, interfaces)
                keepalive = (config or QuantumConfig()).keepalive_interval
                # The relay answers keepalives: this long without a word, it is gone.
                node._relay_liveness = max(1.5, 1.5 * keepalive)
                if home is not None:
                    await node._start_home_relay(home[0], home[1])
                try:
                    yield node
                finally:
                    await node._aclose()
                    tg.cancel_scope.cancel()
    finally:
        for closable in (session_store, store, catalog):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        lock.release()
