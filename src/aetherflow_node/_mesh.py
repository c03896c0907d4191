"""The peer mesh: one Quantum connection per peer, one channel per shared document on it.

Rules (each one is tested):

1. **One link per peer.** Either side may dial. If both did, the connection dialed by the
   smaller node ID is kept and the other closed -- both sides apply the same rule, so they
   keep the same one. A second connection from the same dialer replaces the first (the
   peer restarted or moved before the old connection timed out).
2. **One channel per document per link.** When a link comes up, and whenever a document is
   opened, each side opens a channel for each document it holds (the channel's name is a
   keyed hash of the document's secret: a peer that does not hold it refuses, learning
   nothing). If both opened one, the channel opened by the smaller node ID wins.
3. **Both sides prove their right.** The opener runs the session handshake (its token), the
   acceptor answers with its own token as the first message. Each side checks the other's
   token against the document's issuer: a joiner may sync with any other holder, and a
   read-only holder is read-only towards everyone -- its writes are dropped and counted.
4. **Holders find each other.** When a document's channel is up, each side tells the other
   which holders it is connected to (on the connection's own channel 0, the control
   channel), so joiners of one ticket mesh with each other, not only with the issuer.
5. **Revocations are signed by the issuer** and passed on to every holder, now and when
   they next meet.
6. **A peer that breaks the rules** (garbage, writes it may not make) collects strikes;
   past ``Limits.max_strikes`` its connection is closed and it is kept away for
   ``Limits.ban_seconds``. A peer that floods is throttled: its messages are read at its
   budget, so the transport's flow control slows it down. Neither stops anyone else.
7. **Reconnection**: a dialled peer that goes away is dialled again with exponential
   backoff and jitter (:class:`Backoff`).
8. **Routes**: a peer known by node ID is dialled by its route -- its direct addresses,
   then this node's home relay, and a relayed link is upgraded to a direct path
   (``_routes.py``). Each side tells the other its home relay in its hello, and holder
   announcements carry the relay route of each holder that has one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import msgpack
from anyio.abc import TaskGroup

from aetherflow_node._limits import Backoff, Limits, PeerBudget
from aetherflow_node._routes import (
    Dialer,
    Route,
    holders_untrusted,
    home_route,
    is_relayed,
    relay_route_untrusted,
)
from aetherflow_sdk import AetherFlowError, AuthError, BadPacket, ConnectionClosed
from aetherflow_sdk._identity import verify_signature
from aetherflow_sdk.quantum import Channel, ChannelRefused, Connection, Endpoint
from aetherflow_sdk.replica import is_write_message
from aetherflow_sdk.replica._wire import parse_message_untrusted
from aetherflow_sdk.session import Permission, SessionServer, TokenVerifier, open_session

if TYPE_CHECKING:
    from aetherflow_node._document import Document
    from aetherflow_node._node import Node

logger = logging.getLogger("aetherflow.node")

MAX_CONTROL_MESSAGE = 64 * 1024
MAX_HOLDERS_IN_MESSAGE = 64
GOSSIP_ATTEMPTS = 6
"""Dials of a holder learned from a peer (or from the catalog) before giving up on it."""
FIRST_MESSAGE_TIMEOUT = 10.0
CLOSE_GRACE = 1.0
"""Longest a closing channel waits for its peer (a dead peer must not hold shutdown up)."""


def path_kind(address: tuple[str, int]) -> str:
    """``"lan"`` for loopback, private and link-local addresses, ``"direct"`` for the rest."""
    try:
        ip = ipaddress.ip_address(address[0].split("%")[0])
    except ValueError:
        return "direct"
    return "lan" if ip.is_private or ip.is_loopback or ip.is_link_local else "direct"


def revocation_payload(doc_id: str, token_id: str, until: float) -> bytes:
    """What the issuer signs to revoke ``token_id`` on ``doc_id``."""
    packed: bytes = msgpack.packb([b"af-revoke-v1", doc_id, token_id, until], use_bin_type=True)
    return packed


@attrs.define(eq=False)
class DocLink:
    """One document's channel on one link, once both sides proved their right."""

    doc_id: str
    opener: bytes
    """Node ID of the side that opened the channel (rule 2)."""
    peer_permission: Permission
    peer_token_id: str
    scope: anyio.CancelScope


class Gate:
    """The channel ReplicaSync sees: it enforces the peer's budget and counts its offences."""

    def __init__(
        self,
        mesh: Mesh,
        link: Link,
        inner: Any,
        *,
        read_only_peer: bool,
        read_only_here: bool,
        document: Document | None = None,
    ) -> None:
        self._mesh = mesh
        self._link = link
        self._inner = inner
        self._document = document  # its byte quota, if it has one, refuses writes past it
        self._read_only_peer = read_only_peer
        # A read-only holder forwards nothing that writes: its peers would count it as an offence.
        self._read_only_here = read_only_here

    @property
    def peer_id(self) -> bytes:
        peer_id: bytes = self._inner.peer_id
        return peer_id

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        if self._read_only_here and is_write_message(data):
            self._mesh.counters["writes_withheld"] += 1
            return
        await self._inner.send(data, ordered=ordered)

    def send_datagram(self, data: bytes) -> None:
        if self._read_only_here and is_write_message(data):
            self._mesh.counters["writes_withheld"] += 1
            return
        self._inner.send_datagram(data)

    def _admissible(self, data: bytes) -> bool:
        try:
            parse_message_untrusted(data)
        except BadPacket:
            self._mesh.offence(self._link, "garbage")
            return False
        if self._read_only_peer and is_write_message(data):
            self._mesh.offence(self._link, "write from a read-only peer")
            return False
        if self._document is not None and self._document.over_quota and is_write_message(data):
            # Not an offence: the peer did nothing wrong, this node is full for the document.
            self._document.quota_refusals += 1
            self._mesh.counters["quota_refusals"] += 1
            self._mesh.node._notify()  # the document's statistics changed
            if self._document.quota_refusals % 1000 == 1:
                logger.warning(
                    "document %s is at its byte quota (%d bytes): its updates are refused (%d so far)",
                    self._document.doc_id, self._document.quota_bytes, self._document.quota_refusals,
                )  # fmt: skip
            return False
        return True

    async def receive(self) -> bytes:
        while True:
            data: bytes = await self._inner.receive()
            delay = self._link.budget.on_message(len(data), time.monotonic())
            if delay > 0:
                self._mesh.counters["throttled"] += 1
                await anyio.sleep(min(delay, 5.0))
            if self._admissible(data):
                return data

    async def receive_datagram(self) -> bytes:
        while True:
            data: bytes = await self._inner.receive_datagram()
            if not self._link.budget.on_datagram(len(data), time.monotonic()):
                self._mesh.counters["datagrams_dropped"] += 1
                continue
            if self._admissible(data):
                return data

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define(eq=False)
class Link:
    """The one connection to one peer, and what runs on it."""

    conn: Connection
    dialer: bool
    """True if this node dialed the connection."""
    budget: PeerBudget
    dialed_address: tuple[str, int] | None = None
    peer_name: str = ""
    peer_relay: str | None = None
    """The peer's home relay route, as its hello gave it."""
    docs: dict[str, DocLink] = attrs.Factory(dict)
    opening: set[str] = attrs.Factory(set)
    retries: dict[str, Backoff] = attrs.Factory(dict)
    """Per document: the backoff of re-opening its channel after an attempt that failed for a
    passing reason (a timeout under load, a channel closed mid-handshake)."""
    refused_while_opening: set[str] = attrs.Factory(set)
    """Documents whose channel from the peer we refused because ours was pending (rule 2): if
    ours then fails too, we open again, so that the two sides never both give up."""
    closed: anyio.Event = attrs.Factory(anyio.Event)
    task_group: TaskGroup | None = None

    @property
    def peer_id(self) -> bytes:
        return self.conn.peer_id

    @property
    def address(self) -> tuple[str, int] | None:
        """The peer's direct address (None while relayed: its packets come from the relay's)."""
        if is_relayed(self.conn):
            return None
        return self.dialed_address or self.conn.peer_address

    def close(self, reason: str) -> None:
        with contextlib.suppress(AetherFlowError):
            self.conn.abort(reason)
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()


class Mesh:
    """The links of one node. Owned by :class:`Node`; runs in the node's task group."""

    def __init__(
        self,
        node: Node,
        endpoint: Endpoint,
        server: SessionServer,
        verifier: TokenVerifier,
        limits: Limits,
        rng: random.Random,
    ) -> None:
        self.node = node
        self.endpoint = endpoint
        self.server = server
        self.verifier = verifier
        self.limits = limits
        self.rng = rng
        self.links: dict[bytes, Link] = {}
        self.banned: dict[bytes, float] = {}
        self.applied: set[str] = set()
        """Token IDs whose revocation this node applied."""
        self.lan_peers: set[bytes] = set()
        """Node IDs seen on the LAN by mDNS now (their path is "lan")."""
        self._dialing_addresses: set[tuple[str, int]] = set()
        self._routes: dict[bytes, Route] = {}
        """The routes of the peers being dialled, by node ID (more addresses join a live dial)."""
        self.dialer = Dialer(self)
        self._task_group: TaskGroup | None = None
        self.counters = dict.fromkeys(
            (
                "connections_dialed",
                "connections_accepted",
                "connections_opened",
                "connections_closed",
                "dial_failures",
                "duplicate_links",
                "peers_dropped",
                "offences",
                "throttled",
                "datagrams_dropped",
                "channels_refused",
                "handshakes_failed",
                "revocations_applied",
                "reconnects",
                "writes_withheld",
                "document_reopens",
                "quota_refusals",
                "punch_attempts",
                "punch_successes",
                "upgrades",
                "relayed_connects",
                "direct_timeouts",
                "foreign_relay_routes",
            ),
            0,
        )

    @property
    def my_id(self) -> bytes:
        return self.node.identity.node_id

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self.endpoint.set_channel_filter(self._channel_filter)
        task_group.start_soon(self._accept_loop)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(fn, *args)

    # -- dialing --------------------------------------------------------------------------------

    def want(
        self,
        address: tuple[str, int] | None,
        node_id: bytes | None = None,
        *,
        persistent: bool,
        connection: Connection | None = None,
        relay: str | None = None,
    ) -> None:
        """Keep a link to the node at ``address`` (whose ID is ``node_id`` when known);
        ``connection``, if given, is one already made to it (used first). ``relay`` is the
        peer's relay route; with ``address`` None the peer is reached through it alone."""
        if node_id == self.my_id or (address is not None and address == self.endpoint.local_address):
            return
        if node_id is not None:
            route = self._routes.get(node_id)
            if route is not None:  # a dial runs: it tries this address too from its next attempt
                route.add(address, relay, persistent)
                return
            if node_id in self.links:
                return
        if address is None and node_id is None:
            return
        if address is not None and address in self._dialing_addresses:
            return
        route = Route(node_id=node_id)
        route.add(address, relay, persistent)
        if address is not None:
            self._dialing_addresses.add(address)
        if node_id is not None:
            self._routes[node_id] = route
        self._spawn(self._dial_loop, route, connection)

    async def dial_once(self, address: tuple[str, int], node_id: bytes | None = None) -> Connection:
        self.counters["connections_dialed"] += 1
        return await self.endpoint.connect(address, peer_id=node_id)

    async def _dial_loop(self, route: Route, first: Connection | None) -> None:
        backoff = Backoff(self.rng, base=self.limits.backoff_base, cap=self.limits.backoff_cap)
        failures = 0
        keys = list(route.addresses)
        try:
            while True:
                node_id = route.node_id
                if node_id is not None:
                    existing = self.links.get(node_id)
                    if existing is not None:
                        await existing.closed.wait()
                        await anyio.sleep(backoff.next_delay())
                        continue
                    ban = self.banned.get(node_id, 0.0) - time.monotonic()
                    if ban > 0:
                        await anyio.sleep(ban)
                        continue
                address: tuple[str, int] | None
                try:
                    if first is not None:
                        conn, address, first = first, first.peer_address, None
                    else:
                        conn, address = await self.dialer.dial(route)
                except (ConnectionClosed, AetherFlowError, OSError, TimeoutError) as exc:
                    self.counters["dial_failures"] += 1
                    failures += 1
                    logger.debug(
                        "dial %s failed: %s", node_id.hex()[:12] if node_id else route.addresses, exc
                    )
                    if not route.persistent and failures >= GOSSIP_ATTEMPTS:
                        return
                    await anyio.sleep(backoff.next_delay())
                    continue
                if conn.peer_id == self.my_id:
                    conn.abort("dialed itself")
                    return
                if route.node_id is None:
                    route.node_id = conn.peer_id
                    self._routes.setdefault(conn.peer_id, route)
                failures = 0
                started = time.monotonic()
                await self.run_link(conn, dialer=True, address=address)
                if time.monotonic() - started > 10 * self.limits.backoff_base:
                    backoff.reset()
                self.counters["reconnects"] += 1
                await anyio.sleep(backoff.next_delay())
        finally:
            for address in keys:
                self._dialing_addresses.discard(address)
            if route.node_id is not None and self._routes.get(route.node_id) is route:
                del self._routes[route.node_id]

    async def _accept_loop(self) -> None:
        while True:
            conn = await self.endpoint.accept()
            if self.banned.get(conn.peer_id, 0.0) > time.monotonic():
                conn.abort("dropped for breaking the protocol; try later")
                continue
            self.counters["connections_accepted"] += 1
            self._spawn(self.run_link, conn, False, None)

    # -- links ----------------------------------------------------------------------------------

    def _channel_filter(self, peer_id: bytes, name: bytes) -> bool:
        return self.node._document_by_channel(name) is not None

    def _register(self, link: Link) -> bool:
        """Rule 1. True if ``link`` is the peer's link now."""
        existing = self.links.get(link.peer_id)
        if existing is None or existing.closed.is_set():
            self.links[link.peer_id] = link
            return True

        def dialed_by(one: Link) -> bytes:
            return self.my_id if one.dialer else one.peer_id

        self.counters["duplicate_links"] += 1
        # Same dialer twice: the peer lost the old connection (it restarted, or its address
        # changed) before we noticed, so the new one replaces it. Both sides dialled: the
        # connection dialled by the smaller node ID wins, on both sides alike.
        if existing.dialer == link.dialer or dialed_by(link) < dialed_by(existing):
            existing.close("replaced by a newer connection")
            self.links[link.peer_id] = link
            return True
        return False

    async def run_link(self, conn: Connection, dialer: bool, address: tuple[str, int] | None = None) -> None:
        """Run one peer's link until its connection ends."""
        link = Link(
            conn=conn,
            dialer=dialer,
            budget=PeerBudget(self.limits, time.monotonic()),
            dialed_address=address,
        )
        if not self._register(link):
            with anyio.move_on_after(1.0):
                await conn.aclose()
            return
        self.counters["connections_opened"] += 1
        self.node._notify()
        try:
            async with anyio.create_task_group() as tg:
                link.task_group = tg
                tg.start_soon(self._control_loop, link)
                tg.start_soon(self._accept_channels, link)
                if dialer:
                    tg.start_soon(self.dialer.keep_upgrading, link)  # rule 8: only the dialer upgrades
                for document in list(self.node._documents.values()):
                    tg.start_soon(self._open_document, link, document)
        finally:
            self.counters["connections_closed"] += 1
            link.closed.set()
            if self.links.get(link.peer_id) is link:
                del self.links[link.peer_id]
            self.node._notify()
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(0.5),
                contextlib.suppress(AetherFlowError),
            ):
                await conn.aclose()

    def document_opened(self, document: Document) -> None:
        for link in list(self.links.values()):
            if link.task_group is not None and not link.closed.is_set():
                link.task_group.start_soon(self._open_document, link, document)

    async def close_all(self, grace: float = CLOSE_GRACE) -> None:
        """Shutdown: close every connection, waiting at most ``grace`` for peers to acknowledge."""
        links = list(self.links.values())

        async def close(link: Link) -> None:
            with contextlib.suppress(AetherFlowError):
                await link.conn.aclose()

        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as tg:
                for link in links:
                    tg.start_soon(close, link)
        for link in links:
            link.close("node shutting down")

    def drop(self, link: Link, reason: str) -> None:
        """Close a peer's link for breaking the rules, and keep it away for a while."""
        self.counters["peers_dropped"] += 1
        self.banned[link.peer_id] = time.monotonic() + self.limits.ban_seconds
        logger.warning("dropping peer %s: %s", link.peer_id.hex()[:12], reason)
        link.close(f"dropped: {reason}")

    def offence(self, link: Link, what: str) -> None:
        self.counters["offences"] += 1
        if link.budget.strike():
            self.drop(link, f"{what} ({link.budget.strikes} offences)")

    async def _accept_channels(self, link: Link) -> None:
        assert link.task_group is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                channel = await link.conn.accept_channel()
                document = self.node._document_by_channel(channel.name)
                if document is None:
                    await channel.aclose()
                    continue
                link.task_group.start_soon(self._serve_incoming, link, document, channel)

    # -- documents on a link ----------------------------------------------------------------------

    def _may_take(self, link: Link, document: Document, opener: bytes) -> bool:
        """Rules 2 and the per-document peer limit: may a channel opened by ``opener`` serve?"""
        current = link.docs.get(document.doc_id)
        if current is not None and current.opener < opener:
            return False
        if current is None and document.doc_id in link.opening and self.my_id < opener:
            link.refused_while_opening.add(document.doc_id)
            return False
        if current is None and len(document.sync.protocol.peers) >= self.limits.max_peers_per_document:
            self.counters["channels_refused"] += 1
            return False
        return True

    async def _open_document(self, link: Link, document: Document, delay: float = 0.0) -> None:
        if delay:
            await anyio.sleep(delay)
        doc_id = document.doc_id
        if doc_id in link.docs or doc_id in link.opening or document.closed or link.closed.is_set():
            return
        link.opening.add(doc_id)
        # Set when the attempt ends for a reason that passes (a timeout, a channel closed while the
        # session was being set up, a sync that ended while the link lives on): without another
        # try, both sides could stay linked with the document offline for good. A refusal (the
        # peer does not hold the document, or is full) and an AuthError are answers, not retried:
        # the peer opens the channel itself once it holds the document.
        transient = False
        try:
            try:
                channel = await link.conn.open_channel(document.record.channel_name)
            except (ChannelRefused, ConnectionClosed):
                return
            try:
                async with open_session(channel, document=doc_id, token=document.record.token) as session:
                    with anyio.fail_after(FIRST_MESSAGE_TIMEOUT):
                        first = await session.receive()
                    claims = self.verifier.verify(
                        first, document=doc_id, now=time.time(), holder=link.peer_id
                    )
                    link.opening.discard(doc_id)
                    if self._may_take(link, document, self.my_id):
                        link.retries.pop(doc_id, None)  # synced: the next failure starts afresh
                        await self._sync(
                            link, document, session, claims.permission, claims.token_id, self.my_id
                        )
                        transient = True  # the sync ended but the link lives on: open again
            except* AuthError as group:
                self.counters["handshakes_failed"] += 1
                peer = link.peer_id.hex()[:12]
                logger.info("document %s with %s: %s", document.name, peer, group.exceptions[0])
            except* (ConnectionClosed, TimeoutError, AetherFlowError):
                transient = True
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                    await channel.aclose()
        finally:
            link.opening.discard(doc_id)
            crossed = doc_id in link.refused_while_opening
            link.refused_while_opening.discard(doc_id)
            if (
                (crossed or transient)
                and doc_id not in link.docs
                and link.task_group is not None
                and not link.closed.is_set()
                and not document.closed
            ):
                if crossed:
                    delay = 0.0  # we refused the peer's channel for ours: at once, or nobody opens
                else:
                    self.counters["document_reopens"] += 1
                    backoff = link.retries.setdefault(
                        doc_id, Backoff(self.rng, base=self.limits.backoff_base, cap=self.limits.backoff_cap)
                    )
                    delay = backoff.next_delay()
                link.task_group.start_soon(self._open_document, link, document, delay)

    async def _serve_incoming(self, link: Link, document: Document, channel: Channel) -> None:
        try:
            if self._may_take(link, document, link.peer_id):
                await self._serve_session(link, document, channel)
        except* AuthError:
            self.counters["handshakes_failed"] += 1
        except* (ConnectionClosed, TimeoutError, AetherFlowError):
            pass
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                await channel.aclose()

    async def _serve_session(self, link: Link, document: Document, channel: Channel) -> None:
        doc_id = document.doc_id
        connection_id = (link.conn.connection_id, channel.channel_id)
        async with self.server.accept(channel, connection_id=connection_id) as session:
            record = self.server.manager.get(session.session_id)
            if session.document != doc_id or record is None:
                self.offence(link, "a session for another document")
                return
            await session.send(document.record.token.encode())
            if self._may_take(link, document, link.peer_id):
                await self._sync(link, document, session, session.permission, record.token_id, link.peer_id)

    async def _sync(
        self,
        link: Link,
        document: Document,
        session: Any,
        permission: Permission,
        token_id: str,
        opener: bytes,
    ) -> None:
        doc_id = document.doc_id
        previous = link.docs.get(doc_id)
        with anyio.CancelScope() as scope:
            entry = DocLink(
                doc_id=doc_id, opener=opener, peer_permission=permission, peer_token_id=token_id, scope=scope
            )
            if previous is not None:
                previous.scope.cancel()
            link.docs[doc_id] = entry
            self.node._notify()
            try:
                if link.address is not None:
                    self.node.catalog.add_holder(doc_id, link.peer_id, link.address)
                self._announce(link, document)
                gate = Gate(
                    self,
                    link,
                    session,
                    read_only_peer=permission is Permission.READ_ONLY,
                    read_only_here=document.read_only,
                    document=document,
                )
                await document.sync.serve(gate, can_write=permission.writes)
            finally:
                if link.docs.get(doc_id) is entry:
                    del link.docs[doc_id]
                self.node._notify()

    # -- the control channel ---------------------------------------------------------------------

    def _send_control(self, link: Link, message: dict[str, Any]) -> None:
        async def send() -> None:
            with contextlib.suppress(ConnectionClosed):
                await link.conn.send(msgpack.packb(message, use_bin_type=True))

        if link.task_group is not None and not link.closed.is_set():
            link.task_group.start_soon(send)

    async def _control_loop(self, link: Link) -> None:
        """Channel 0 carries control messages; when it ends, the connection is over."""
        hello: dict[str, Any] = {"k": "hello", "n": self.node.name}
        route = home_route(self.node.home_relay)
        if route is not None:
            hello["r"] = route
        self._send_control(link, hello)
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await link.conn.receive()
                try:
                    self._on_control_untrusted(link, data)
                except BadPacket as exc:
                    self.offence(link, f"bad control message ({exc})")
        assert link.task_group is not None
        link.task_group.cancel_scope.cancel()

    def _on_control_untrusted(self, link: Link, data: bytes) -> None:
        if len(data) > MAX_CONTROL_MESSAGE:
            raise BadPacket(f"control message of {len(data)} bytes")
        try:
            message = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_bin_len=4096, max_str_len=8192
            )
        except (ValueError, TypeError, msgpack.UnpackException):
            raise BadPacket("control message is not msgpack") from None
        if not isinstance(message, dict):
            raise BadPacket("control message is not a map")
        kind = message.get("k")
        if kind == "hello":
            name = message.get("n")
            if isinstance(name, str):
                link.peer_name = name[:64]
            if "r" in message:
                link.peer_relay = relay_route_untrusted(message["r"])
            return
        channel_name = message.get("c")
        document = self.node._document_by_channel(channel_name if isinstance(channel_name, bytes) else b"")
        if document is None:
            return  # a document we do not hold (or no longer): ignore
        if kind == "holders":
            # Not gated on this link's sync having started: the peer may announce the moment its
            # side of the document's channel is up, before ours is, and dropping that message
            # left the new holder never meeting the others. The channel name is a keyed hash of
            # the document's secret, so only a holder can send it, and a holder named here must
            # still present a valid token when we dial it.
            self.dialer.take_holders(document.doc_id, holders_untrusted(message, MAX_HOLDERS_IN_MESSAGE))
        elif kind == "revoke":
            if document.doc_id not in link.docs:
                return  # only from a peer we share the document with
            token_id, until, signature = message.get("j"), message.get("u"), message.get("s")
            if not (
                isinstance(token_id, str)
                and 0 < len(token_id) <= 256
                and isinstance(until, float | int)
                and isinstance(signature, bytes)
            ):
                raise BadPacket("a revocation is not [token ID, until, signature]")
            if self.apply_revocation(document, token_id, float(until), signature):
                self._spawn(self.end_revoked, document, token_id, float(until), signature)

    def _announce(self, link: Link, document: Document) -> None:
        """Rules 4 and 5: tell the new holder about the others, the others about it, and the revocations."""
        channel_name = document.record.channel_name
        others = [
            other
            for other in self.links.values()
            if other is not link and document.doc_id in other.docs and not other.closed.is_set()
        ]
        others = others[:MAX_HOLDERS_IN_MESSAGE]
        if others:
            self._send_control(link, self.dialer.holders_message(channel_name, others))
        for other in others:
            self._send_control(other, self.dialer.holders_message(channel_name, [link]))
        for token_id, until, signature in self.node.catalog.revocations(document.doc_id, time.time()):
            self._send_control(
                link, {"k": "revoke", "c": channel_name, "j": token_id, "u": until, "s": signature}
            )

    def apply_revocation(self, document: Document, token_id: str, until: float, signature: bytes) -> bool:
        """A revocation signed by the document's issuer: refuse the token from now on.

        Returns False if the signature is bad or the revocation was applied already; else the
        caller ends the token's sessions and passes it on with :meth:`end_revoked`.
        """
        payload = revocation_payload(document.doc_id, token_id, until)
        if token_id in self.applied or not verify_signature(document.record.issuer, signature, payload):
            return False
        self.applied.add(token_id)
        self.node.catalog.add_revocation(document.doc_id, token_id, until, signature)
        self.counters["revocations_applied"] += 1
        self.verifier.revoke(token_id)
        return True

    async def end_revoked(self, document: Document, token_id: str, until: float, signature: bytes) -> None:
        """End the sessions of a revoked token, here, and tell every holder we sync the document with."""
        await self.server.revoke(token_id, until=until if math.isfinite(until) else math.inf)
        channel_name = document.record.channel_name
        message = msgpack.packb(
            {"k": "revoke", "c": channel_name, "j": token_id, "u": until, "s": signature}, use_bin_type=True
        )
        for link in list(self.links.values()):
            entry = link.docs.get(document.doc_id)
            if entry is None:
                continue
            if entry.peer_token_id == token_id:
                entry.scope.cancel()
            else:
                with contextlib.suppress(ConnectionClosed):
                    await link.conn.send(message)
