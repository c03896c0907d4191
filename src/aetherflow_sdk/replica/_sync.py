"""The Yjs sync protocol between one replica and any number of peers, sans-I/O.

Feed it what arrives (``receive_message``) and ask it what to send
(``messages_for``); it never touches a socket or reads a clock -- every call
that depends on time takes ``now``. ``_shell.py`` runs it over MessageChannels.

Rules (each one is tested):

1. On connect each side sends sync step 1 (its state vector); each answers a
   step 1 with step 2 (exactly what the asker lacks). Both go *ordered*; live
   updates go *unordered* (one lost packet holds nothing back).
2. Nothing is pushed to a peer before we have answered its step 1: the step 2
   covers everything up to then, so earlier pushes would be duplicates.
3. Mesh: an update is never sent back to the peer it came from, and an update
   that changed nothing (already held) is not forwarded at all -- forwarding
   hangs off the replica's update listener, which only fires on change. Each
   update crosses each link at most once in a full mesh (rule 8).
4. Updates queued for one peer are merged into one message when drained, so a
   burst of typing becomes one message (batching under load). The queue is
   bounded in bytes: over ``max_queued_bytes`` it is merged, and if that is still
   too big it is dropped and replaced, at send time, by a fresh step 2 computed
   against what we know the peer holds. Received updates pass through a causal
   buffer (below).
5. Read-only peers (``can_write=False``): their step 2 / updates are dropped,
   counted, and answered with auth permission-denied. We never ask them for
   their state (no step 1 to them).
6. Foreign history guard (jupyter-collaboration#621): if we *seeded* the document
   from outside the CRDT and a peer's state vector names clients we never saw
   while lacking our seed, the two histories hold the same text twice. If we
   hold only the seed, we drop it and adopt the peer's history; otherwise we
   refuse to sync with that peer (``statistics().history_conflicts``).
7. Untrusted bytes: a malformed message is counted and dropped, never raised.
8. Mesh forwarding. Each side tells its peers its mesh ID and its neighbours
   (``MeshNeighbors``, re-sent when they change). We do not forward an update
   received from ``s`` to ``q`` when someone else is bound to deliver it:
   ``s`` and ``q`` both name each other (``s`` delivers everything it holds to
   its neighbours, by induction on who held the update first), or every author
   of the update names ``q`` (an author delivers its own edits to all its
   neighbours), or we know ``q`` holds it already (its state vector, and what
   it sent us or we sent it). When a link goes away, whoever may have been
   skipped on its account is resynced: the side that lost a peer sends step 1
   to all its others, and a peer that hears a neighbour drop a link asks the
   parties for a step 1 (``MESH_RESYNC``).

Rule 4 -- the causal buffer. Yjs updates commute in theory, but the installed
yrs (pycrdt 0.14.13) mis-integrates an update that arrives before what it
references: applying a complete set of updates in a shuffled order gave a
different text in 277 of 300 random two-writer scenarios (0 of 100 when merged
first). So every received update is decoded (``_deps.py``) and held until
everything it references is present; yrs only sees causal order (0 of 300
shuffled scenarios diverge). ``ordered_updates=True`` also sends them ordered.
The buffer (``_causal.py``) is bounded per peer, purged when the peer goes, and
indexed by what each update waits for.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal

import attrs
from pycrdt import merge_updates

from aetherflow_sdk._errors import BadPacket, LocalProtocolError, ReplicaError
from aetherflow_sdk.replica._awareness import DEFAULT_AWARENESS_TIMEOUT, Awareness, AwarenessChange
from aetherflow_sdk.replica._causal import CausalBuffer
from aetherflow_sdk.replica._deps import UpdateNeeds, update_needs_untrusted
from aetherflow_sdk.replica._replica import Replica
from aetherflow_sdk.replica._wire import (
    MAX_MESH_NEIGHBORS,
    AwarenessUpdate,
    MeshNeighbors,
    Message,
    PermissionDenied,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_awareness,
    encode_mesh_neighbors,
    encode_permission_denied,
    encode_state_vector,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_message_untrusted,
    parse_state_vector_untrusted,
)

PeerKey = Hashable
"""How the caller names a peer (the shell uses the channel's ``peer_id``)."""

DEFAULT_PRESENCE_INTERVAL = 0.05
"""Seconds between presence sends to a peer (20 per second at most): cursors look live
without flooding the link while someone holds an arrow key."""

MAX_BUFFERED_BEFORE_STEP1 = 4096
"""Writes we hold from a peer whose step 1 has not arrived (only when we seeded the document)."""

MAX_HELD_UPDATES = 16_384
"""Updates the causal buffer holds *per peer* before it drops them and resyncs with that peer."""

MAX_HELD_BYTES = 8 << 20
"""Bytes the causal buffer holds per peer before it drops them and resyncs with that peer."""

MAX_QUEUED_BYTES = 1 << 20
"""Bytes of updates queued for one peer (its send is blocked) before they are merged; a merged
queue still over half of this is replaced by a fresh step 2 at send time."""

# Empty Yjs v1 update: no structs, empty delete set.
_EMPTY_UPDATE = b"\x00\x00"

# -- the peer state machine (h11 style: every transition is in this table) --------------
AWAITING_STEP1 = "awaiting-step1"
SYNCED = "synced"
REFUSED = "refused"

PeerState = Literal["awaiting-step1", "synced", "refused"]

_TRANSITIONS: dict[tuple[str, str], str] = {
    (AWAITING_STEP1, "step1-accepted"): SYNCED,
    (AWAITING_STEP1, "step1-foreign"): REFUSED,
    (AWAITING_STEP1, "buffer-overflow"): REFUSED,
    (SYNCED, "step1-accepted"): SYNCED,  # a peer may ask again (resync); we answer again
    (SYNCED, "step1-foreign"): REFUSED,
    (REFUSED, "step1-accepted"): REFUSED,
    (REFUSED, "step1-foreign"): REFUSED,
}


@attrs.frozen(kw_only=True)
class Outgoing:
    """One message the shell must send to a peer."""

    data: bytes
    """The y-protocols message."""
    kind: Literal["ordered", "unordered", "datagram"]
    """How to send it: reliable ordered, reliable unordered, or unreliable datagram."""


@attrs.frozen(kw_only=True)
class PeerPresence:
    """One remote user's presence, with cursor positions resolved to code points."""

    client_id: int
    """The user's Yjs client ID."""
    name: str | None
    """Display name (``state["user"]["name"]``)."""
    color: str | None
    """Display colour, e.g. ``"#30bced"`` (``state["user"]["color"]``)."""
    anchor: int | None
    """Selection anchor as a code-point index now, or None (no cursor / unresolvable)."""
    head: int | None
    """Selection head (the caret) as a code-point index now, or None."""
    state: dict[str, Any]
    """The raw awareness state."""


@attrs.frozen(kw_only=True)
class SyncStatistics:
    """Counters of one :class:`SyncProtocol`."""

    peers: int
    """Peers currently attached."""
    held_updates: int
    """Updates waiting in the causal buffer now."""
    messages_received: int
    """Messages fed to ``receive_message``."""
    bad_messages: int
    """Messages dropped as malformed (BadPacket) or as invalid Yjs updates, and awareness
    messages naming our own client at the maximum clock (that entry is ignored)."""
    updates_applied: int
    """Received step 2 / updates that changed the document."""
    updates_redundant: int
    """Received step 2 / updates that changed nothing (already held)."""
    updates_sent: int
    """Update and step 2 messages handed to the shell."""
    writes_denied: int
    """Writes from read-only peers dropped (each answered with permission-denied)."""
    permission_denied_received: int
    """Permission-denied messages peers sent us."""
    history_conflicts: int
    """Peers refused by the foreign-history guard."""
    histories_adopted: int
    """Times our seed-only document was replaced by a peer's history."""
    awareness_received: int
    """Awareness messages applied."""
    updates_deferred: int
    """Updates that arrived before what they reference and were held (causal buffer)."""
    resyncs: int
    """Times the causal buffer overflowed and we asked a peer for a fresh step 2."""
    held_bytes: int
    """Bytes of the updates waiting in the causal buffer now."""
    held_wakeups: int
    """Held updates looked at again because a clock they wait for moved (the buffer's work)."""
    queued_bytes: int
    """Bytes of updates queued for all peers now (not yet handed to the shell)."""
    updates_not_forwarded: int
    """Per-peer copies not sent because another peer delivers them, or the peer holds them."""
    queue_merges: int
    """Times a peer's queue went over ``max_queued_bytes`` and was merged."""
    queue_overflows: int
    """Times a merged queue was still too big and was replaced by a fresh step 2."""
    mesh_resyncs: int
    """Step 1s sent because a mesh link went away (we may have been skipped on its account)."""


@attrs.define(kw_only=True, eq=False)
class _Peer:
    key: PeerKey
    can_write: bool
    state: str = AWAITING_STEP1
    control: list[Outgoing] = attrs.Factory(list)
    updates: list[bytes] = attrs.Factory(list)
    buffered: list[Message] = attrs.Factory(list)
    awareness_clients: set[int] = attrs.Factory(set)
    awareness_dirty: set[int] = attrs.Factory(set)
    next_presence: float = 0.0
    write_denied_by_peer: bool = False
    mesh_id: int | None = None
    neighbors: frozenset[int] = frozenset()
    known: dict[int, int] = attrs.Factory(dict)  # what we know the peer holds (a lower bound)
    queued_bytes: int = 0
    queued_provides: dict[int, int] = attrs.Factory(dict)  # what ``updates`` gives, once sent
    stale: bool = False  # queue dropped: send a fresh step 2 against ``known``


class SyncProtocol:
    """Sync + awareness state of one replica towards its peers."""

    def __init__(
        self,
        replica: Replica,
        *,
        now: float,
        awareness_timeout: float = DEFAULT_AWARENESS_TIMEOUT,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
        presence_as_datagrams: bool = False,
        max_datagram_size: int = 1200,
        on_foreign_history: Literal["adopt", "refuse"] = "adopt",
        ordered_updates: bool = False,
        mesh_id: int | None = None,
        max_held_bytes: int | None = None,
        max_held_updates: int | None = None,
        max_queued_bytes: int | None = None,
    ) -> None:
        self.replica = replica
        self.mesh_id = replica.client_id if mesh_id is None else mesh_id
        """Who we are in the mesh (rule 8); default: the replica's client ID now."""
        self.max_queued_bytes = MAX_QUEUED_BYTES if max_queued_bytes is None else max_queued_bytes
        self.ordered_updates = ordered_updates
        self.awareness = Awareness(replica.client_id, now=now, timeout=awareness_timeout)
        self.presence_interval = presence_interval
        self.presence_as_datagrams = presence_as_datagrams
        self.max_datagram_size = max_datagram_size
        self.on_foreign_history = on_foreign_history
        self._peers: dict[PeerKey, _Peer] = {}
        self._counters = dict.fromkeys(
            (
                "messages_received",
                "bad_messages",
                "updates_applied",
                "updates_redundant",
                "updates_sent",
                "writes_denied",
                "permission_denied_received",
                "history_conflicts",
                "histories_adopted",
                "awareness_received",
                "updates_deferred",
                "resyncs",
                "updates_not_forwarded",
                "queue_merges",
                "queue_overflows",
                "mesh_resyncs",
            ),
            0,
        )
        self._held = CausalBuffer(
            max_bytes_per_peer=MAX_HELD_BYTES if max_held_bytes is None else max_held_bytes,
            max_updates_per_peer=MAX_HELD_UPDATES if max_held_updates is None else max_held_updates,
        )
        self._have = replica.state_vector_dict()  # our state vector, kept up to date
        self._applying: tuple[_Peer, UpdateNeeds] | None = None
        self._announced: frozenset[int] = frozenset()
        self._unsubscribe = replica.subscribe_updates(self._on_replica_update)

    # -- peers ----------------------------------------------------------------------------

    def add_peer(self, peer: PeerKey, *, can_write: bool = True) -> None:
        """A channel to ``peer`` is up: queue step 1 and our presence."""
        if peer in self._peers:
            raise LocalProtocolError(f"peer {peer!r} is already attached")
        state = _Peer(key=peer, can_write=can_write)
        self._peers[peer] = state
        state.control.append(self._mesh_message())
        if can_write:
            # Read-only peers cannot give us anything, so we never ask.
            state.control.append(self._step1())
        entries = self.awareness.entries(list(self.awareness.states))
        if entries:
            state.control.append(Outgoing(data=encode_awareness(entries), kind="unordered"))

    def remove_peer(self, peer: PeerKey) -> AwarenessChange:
        """The channel to ``peer`` is gone: forget it and the presence that came through it."""
        state = self._peers.pop(peer, None)
        if state is None:
            return AwarenessChange()
        self._held.drop_peer(peer)
        if state.mesh_id is not None and state.mesh_id in self._announced:
            # Others may have skipped us counting on this link (rule 8): ask them again.
            for other in self._peers.values():
                if other.can_write and other.state != REFUSED:
                    other.control.append(self._step1())
                    self._counters["mesh_resyncs"] += 1
        self._announce()
        change = self.awareness.remove(sorted(state.awareness_clients))
        for other in self._peers.values():
            other.awareness_dirty.update(change.removed)
        return change

    def peer_state(self, peer: PeerKey) -> PeerState:
        state: Any = self._peers[peer].state
        return state  # type: ignore[no-any-return]

    @property
    def peers(self) -> list[PeerKey]:
        return list(self._peers)

    def _transition(self, peer: _Peer, event: str) -> None:
        try:
            peer.state = _TRANSITIONS[(peer.state, event)]
        except KeyError:
            raise LocalProtocolError(f"no transition from peer state {peer.state!r} on {event!r}") from None

    # -- receiving ------------------------------------------------------------------------

    def receive_message(self, peer: PeerKey, data: bytes, now: float) -> None:
        """Process one message (or datagram) from ``peer``. Malformed input is counted, never raised."""
        state = self._peers.get(peer)
        if state is None:
            raise LocalProtocolError(f"receive_message() from unknown peer {peer!r}; call add_peer() first")
        self._counters["messages_received"] += 1
        try:
            message = parse_message_untrusted(data)
        except BadPacket:
            self._counters["bad_messages"] += 1
            return
        self._dispatch(state, message, now)
        self._announce()

    def _dispatch(self, peer: _Peer, message: Message, now: float) -> None:
        if isinstance(message, SyncStep1):
            self._on_step1(peer, message, now)
        elif isinstance(message, SyncStep2 | SyncUpdate):
            self._on_write(peer, message)
        elif isinstance(message, AwarenessUpdate):
            self._counters["awareness_received"] += 1
            change = self.awareness.apply_entries(message.entries, now)
            if change.rejected:
                self._counters["bad_messages"] += 1
            peer.awareness_clients.update(change.added + change.updated)
            if self.awareness.client_id in change.updated:
                # A peer announced our client: re-announce ours to everyone.
                self._mark_presence_dirty([self.awareness.client_id], origin=None)
            self._mark_presence_dirty(
                [c for c in change.changed if c != self.awareness.client_id], origin=peer.key
            )
        elif isinstance(message, PermissionDenied):
            self._counters["permission_denied_received"] += 1
            peer.write_denied_by_peer = True
            self._clear_queue(peer)
        elif isinstance(message, MeshNeighbors):
            self._on_mesh(peer, message)

    # -- the mesh (rule 8) ----------------------------------------------------------------

    def _neighbor_ids(self) -> frozenset[int]:
        return frozenset(
            peer.mesh_id
            for peer in self._peers.values()
            if peer.mesh_id is not None
            and peer.can_write
            and peer.state != REFUSED
            and not peer.write_denied_by_peer
        )

    def _mesh_message(self, *, resync: bool = False) -> Outgoing:
        neighbors = sorted(self._announced)[:MAX_MESH_NEIGHBORS]
        return Outgoing(data=encode_mesh_neighbors(self.mesh_id, neighbors, resync=resync), kind="ordered")

    def _announce(self) -> None:
        """Tell every peer our neighbours when they changed."""
        neighbors = self._neighbor_ids()
        if neighbors == self._announced:
            return
        self._announced = neighbors
        for peer in self._peers.values():
            peer.control.append(self._mesh_message())

    def _on_mesh(self, peer: _Peer, message: MeshNeighbors) -> None:
        if message.node == self.mesh_id or any(
            other is not peer and other.mesh_id == message.node for other in self._peers.values()
        ):
            self._counters["bad_messages"] += 1  # an ID already taken: ignore the claim
            return
        peer.mesh_id = message.node
        old, peer.neighbors = peer.neighbors, frozenset(message.neighbors)
        gone = old - peer.neighbors
        if gone:
            # We may have skipped ``peer`` (or the peers it dropped) counting on those
            # links: each should ask us for a step 1, and we answer with what it lacks.
            by_id = {other.mesh_id: other for other in self._peers.values() if other.mesh_id is not None}
            for party in [peer, *(by_id[i] for i in sorted(gone) if i in by_id)]:
                party.control.append(self._mesh_message(resync=True))
        if message.resync and peer.can_write and peer.state != REFUSED:
            peer.control.append(self._step1())
            self._counters["mesh_resyncs"] += 1

    def _delivered_elsewhere(self, source: _Peer | None, peer: _Peer, needs: UpdateNeeds | None) -> bool:
        """True if ``peer`` gets (or has) this update without us (rule 8)."""
        if needs is not None and needs.provides and not needs.deletes:
            known = peer.known
            if all(known.get(client, 0) >= clock for client, clock in needs.provides.items()):
                return True
        if peer.mesh_id is None:
            return False
        if (
            source is not None
            and source.mesh_id is not None
            and peer.mesh_id in source.neighbors
            and source.mesh_id in peer.neighbors
        ):
            return True
        if needs is None or not needs.provides or needs.deletes:
            return False  # a delete set names no author
        return all(client == peer.mesh_id or client in peer.neighbors for client in needs.provides)

    def _on_step1(self, peer: _Peer, message: SyncStep1, now: float) -> None:
        try:
            peer_vector = parse_state_vector_untrusted(message.state_vector)
        except BadPacket:
            self._counters["bad_messages"] += 1
            return
        if peer.state != REFUSED and self._is_foreign_history(peer_vector):
            if self.on_foreign_history == "adopt" and self.replica.holds_only_seed():
                # Drop our seed; the peer's history (which holds the same text) wins.
                self.replica.reset()
                self._have = self.replica.state_vector_dict()
                self._held.reset_index(self._have)
                self._counters["histories_adopted"] += 1
                peer.control.append(self._step1())
                # Anything the peer sent before was computed against our old state
                # vector, which named none of its clients: it is its full history.
            else:
                self._counters["history_conflicts"] += 1
                self._transition(peer, "step1-foreign")
                peer.buffered.clear()
                return
        if peer.state == REFUSED:
            return
        try:
            missing = self.replica.encode_update(message.state_vector)
        except ReplicaError:
            self._counters["bad_messages"] += 1
            return
        # One step 2 waiting per peer is enough: the newest covers the older ones (a peer
        # that repeats step 1 while our send is blocked cannot pile up copies).
        peer.control = [out for out in peer.control if not out.data.startswith(_STEP2_PREFIX)]
        peer.control.append(Outgoing(data=encode_sync_step2(missing), kind="ordered"))
        self._counters["updates_sent"] += 1
        # Step 2 covers every update queued so far (rule 2).
        self._clear_queue(peer)
        _merge_vector(peer.known, peer_vector)
        _merge_vector(peer.known, self._have)
        self._transition(peer, "step1-accepted")
        buffered, peer.buffered = peer.buffered, []
        for held in buffered:
            self._dispatch(peer, held, now)

    def _step1(self) -> Outgoing:
        return Outgoing(data=encode_sync_step1(self.replica.state_vector()), kind="ordered")

    def _is_foreign_history(self, peer_vector: dict[int, int]) -> bool:
        seed = self.replica.seeded_by
        if seed is None or peer_vector.get(seed, 0) > 0:
            return False
        ours = parse_state_vector_untrusted(self.replica.state_vector())
        return any(clock > 0 and client not in ours for client, clock in peer_vector.items())

    def _on_write(self, peer: _Peer, message: SyncStep2 | SyncUpdate) -> None:
        if peer.state == REFUSED:
            return
        if message.update == _EMPTY_UPDATE:
            return
        if not peer.can_write:
            self._counters["writes_denied"] += 1
            peer.control.append(
                Outgoing(
                    data=encode_permission_denied("read-only session: your edits were not applied"),
                    kind="unordered",
                )
            )
            return
        if peer.state == AWAITING_STEP1 and self.replica.seeded_by is not None:
            # The foreign-history guard needs the peer's state vector first.
            if len(peer.buffered) >= MAX_BUFFERED_BEFORE_STEP1:
                self._transition(peer, "buffer-overflow")
                peer.buffered.clear()
                return
            peer.buffered.append(message)
            return
        try:
            needs = update_needs_untrusted(message.update)
        except BadPacket:
            self._counters["bad_messages"] += 1
            return
        _merge_vector(peer.known, needs.provides)  # the peer holds what it sends
        if not needs.ready(self._have):
            # Hold it until what it references has arrived (rule 4): yrs would
            # mis-integrate it now.
            self._counters["updates_deferred"] += 1
            if not self._held.hold(peer.key, message.update, needs, self._have):
                self._resync_after_overflow(peer)
            return
        self._apply(peer, message.update, needs)
        # Each applied update releases what waited for it, which may release more:
        # bounded, since every held update is released at most once.
        for _ in range(self._held.count + 1):
            held = self._held.pop_ready()
            if held is None:
                break
            source = self._peers.get(held.origin)
            if source is not None:
                self._apply(source, held.update, held.needs)

    def _apply(self, source: _Peer, update: bytes, needs: UpdateNeeds) -> None:
        self._applying = (source, needs)
        try:
            changed = self.replica._apply_remote(update, source.key, needs.plain_ascii)
        except ReplicaError:
            self._counters["bad_messages"] += 1
            return
        finally:
            self._applying = None
        self._counters["updates_applied" if changed else "updates_redundant"] += 1
        self._advance(needs.provides)

    def _advance(self, provides: dict[int, int]) -> None:
        moved = [client for client, clock in provides.items() if clock > self._have.get(client, 0)]
        if moved:
            _merge_vector(self._have, provides)
            self._held.advanced(moved, self._have)

    def _resync_after_overflow(self, peer: _Peer) -> None:
        # Too much is waiting for something that did not come: drop what this peer
        # sent and ask it again for everything we lack (its step 2 covers it all).
        self._held.drop_peer(peer.key)
        self._counters["resyncs"] += 1
        peer.control.append(self._step1())

    def _on_replica_update(self, update: bytes, origin: object, local: bool) -> None:
        applying = self._applying
        source: _Peer | None = None
        needs: UpdateNeeds | None = None
        if applying is not None and not local:
            source, needs = applying
        else:
            # A local edit, or an update applied to the replica by someone else.
            try:
                needs = update_needs_untrusted(update)
            except BadPacket:
                needs = None
            if needs is not None:
                self._advance(needs.provides)
            if local:
                needs = None  # only we have it: send it to everyone
        for key, peer in self._peers.items():
            if not local and key == origin:
                continue  # never echo back to where it came from
            if peer.state != SYNCED or peer.write_denied_by_peer:
                continue
            if not local and self._delivered_elsewhere(source, peer, needs):
                self._counters["updates_not_forwarded"] += 1
                continue
            self._enqueue(peer, update, needs)

    def _enqueue(self, peer: _Peer, update: bytes, needs: UpdateNeeds | None) -> None:
        if peer.stale:
            return  # the fresh step 2 at send time will carry it
        peer.updates.append(update)
        peer.queued_bytes += len(update)
        if needs is not None:
            _merge_vector(peer.queued_provides, needs.provides)
        if peer.queued_bytes <= self.max_queued_bytes:
            return
        # The peer's send is blocked and edits pile up: merge them (typing merges well).
        self._counters["queue_merges"] += 1
        merged = bytes(merge_updates(*peer.updates))
        if len(merged) <= self.max_queued_bytes // 2:
            peer.updates, peer.queued_bytes = [merged], len(merged)
            return
        # Still too big: send a fresh step 2 (against what we know it holds) instead.
        self._counters["queue_overflows"] += 1
        self._clear_queue(peer)
        peer.stale = True

    def _clear_queue(self, peer: _Peer) -> None:
        peer.updates.clear()
        peer.queued_bytes = 0
        peer.queued_provides.clear()
        peer.stale = False

    # -- presence -------------------------------------------------------------------------

    def set_local_state(self, state: dict[str, Any] | None, now: float) -> None:
        """Publish our presence state (None: we left). Sent at most every ``presence_interval``."""
        self.awareness.set_local_state(state, now)
        self._mark_presence_dirty([self.awareness.client_id], origin=None)

    def set_presence(
        self,
        *,
        name: str,
        color: str,
        anchor: int | None = None,
        head: int | None = None,
        now: float,
    ) -> None:
        """Publish user name, colour and selection (code points; stored as sticky indices)."""
        state: dict[str, Any] = {"user": {"name": name, "color": color}, "cursor": None}
        if anchor is not None:
            head = anchor if head is None else head
            state["cursor"] = {
                "anchor": self.replica.sticky_index(anchor),
                "head": self.replica.sticky_index(head),
            }
        self.set_local_state(state, now)

    def presence(self) -> dict[int, PeerPresence]:
        """Every *remote* user's presence, cursors resolved against the current text."""
        result = {}
        for client, state in self.awareness.states.items():
            if client == self.awareness.client_id:
                continue
            user = state.get("user") if isinstance(state.get("user"), dict) else {}
            cursor = state.get("cursor") if isinstance(state.get("cursor"), dict) else {}
            assert isinstance(user, dict) and isinstance(cursor, dict)
            name, color = user.get("name"), user.get("color")
            result[client] = PeerPresence(
                client_id=client,
                name=name if isinstance(name, str) else None,
                color=color if isinstance(color, str) else None,
                anchor=self.replica.resolve_sticky_index(cursor.get("anchor")),
                head=self.replica.resolve_sticky_index(cursor.get("head")),
                state=state,
            )
        return result

    def _mark_presence_dirty(self, clients: list[int], origin: PeerKey | None) -> None:
        if not clients:
            return
        for key, peer in self._peers.items():
            if key != origin:
                peer.awareness_dirty.update(clients)

    def close(self, now: float) -> None:
        """We are leaving: queue our null presence to every peer at once (reliable, not rate-limited)."""
        self.awareness.set_local_state(None, now)
        entries = self.awareness.entries([self.awareness.client_id])
        for peer in self._peers.values():
            peer.awareness_dirty.discard(self.awareness.client_id)
            peer.control.append(Outgoing(data=encode_awareness(entries), kind="unordered"))
        self._unsubscribe()

    # -- sending and timers ---------------------------------------------------------------

    def messages_for(self, peer: PeerKey, now: float) -> list[Outgoing]:
        """Everything due to ``peer`` now, in send order. Clears what it returns."""
        state = self._peers.get(peer)
        if state is None:
            return []
        out, state.control = state.control, []
        if state.stale:
            fresh = self.replica.encode_update(encode_state_vector(state.known))
            _merge_vector(state.known, self._have)
            self._clear_queue(state)
            out.append(Outgoing(data=encode_sync_step2(fresh), kind="ordered"))
            self._counters["updates_sent"] += 1
        elif state.updates:
            updates = state.updates
            merged = updates[0] if len(updates) == 1 else bytes(merge_updates(*updates))
            _merge_vector(state.known, state.queued_provides)
            self._clear_queue(state)
            order: Literal["ordered", "unordered"] = "ordered" if self.ordered_updates else "unordered"
            out.append(Outgoing(data=encode_sync_update(merged), kind=order))
            self._counters["updates_sent"] += 1
        if state.awareness_dirty and now >= state.next_presence:
            entries = self.awareness.entries(sorted(state.awareness_dirty))
            state.awareness_dirty.clear()
            state.next_presence = now + self.presence_interval
            data = encode_awareness(entries)
            small = len(data) <= self.max_datagram_size
            kind: Literal["datagram", "unordered"] = (
                "datagram" if self.presence_as_datagrams and small else "unordered"
            )
            out.append(Outgoing(data=data, kind=kind))
        return out

    def get_timer(self) -> float | None:
        """The next time ``handle_timer`` has work (presence pacing, renewal, expiry), or None."""
        deadlines = [p.next_presence for p in self._peers.values() if p.awareness_dirty]
        awareness_deadline = self.awareness.next_deadline()
        if awareness_deadline is not None:
            deadlines.append(awareness_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> AwarenessChange:
        """Expire vanished peers' presence and renew ours. Returns the presence removed."""
        change, renewed = self.awareness.handle_timer(now)
        if renewed:
            self._mark_presence_dirty([self.awareness.client_id], origin=None)
        for peer in self._peers.values():
            peer.awareness_clients.difference_update(change.removed)
        return change

    def statistics(self) -> SyncStatistics:
        return SyncStatistics(
            peers=len(self._peers),
            held_updates=self._held.count,
            held_bytes=self._held.bytes,
            held_wakeups=self._held.wakeups,
            queued_bytes=sum(peer.queued_bytes for peer in self._peers.values()),
            **self._counters,
        )


_STEP2_PREFIX = encode_sync_step2(b"")[:2]


def _merge_vector(into: dict[int, int], more: dict[int, int]) -> None:
    """``into`` becomes the per-client maximum of both state vectors."""
    for client, clock in more.items():
        if clock > into.get(client, 0):
            into[client] = clock
