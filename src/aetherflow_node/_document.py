"""A document as an app holds it through a node: the replica, its sync, its presence.

Everything for one document runs on the node's event loop (pycrdt objects never cross
threads). Edits go straight into the local replica; the node's mesh carries them to every
other holder it is connected to.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from aetherflow_node._catalog import DocumentRecord
from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk.replica import ChangeStream, PeerPresence, Replica, ReplicaSync
from aetherflow_sdk.session import Permission

if TYPE_CHECKING:
    from aetherflow_node._node import Node


@attrs.frozen(kw_only=True)
class DocumentStatistics:
    """Sync state of one document, for a status bar."""

    peers: int
    """Holders this node is syncing the document with right now."""
    offline: bool
    """True when no holder is connected: edits stay local until one is."""
    pending_updates: int
    """Updates not yet known to be shared: local edits made while offline, plus received updates
    still waiting for what they depend on."""
    synced: bool
    """Connected and nothing pending."""
    unflushed_updates: int
    """Edits not yet durable on this node's disk."""
    writes_denied: int
    """Writes from read-only peers dropped, this document."""
    bad_messages: int
    """Malformed sync messages dropped, this document."""
    storage_bytes: int = 0
    """Bytes the document takes in this node's store: snapshot plus update log."""
    quota_bytes: int | None = None
    """The byte quota this node keeps the document to (a persistence peer's), or None."""
    over_quota: bool = False
    """True while the document is at or over its quota: remote updates are refused."""
    quota_refusals: int = 0
    """Remote updates refused because the document was over its quota."""


class Presence:
    """Our cursor, selection, name and colour on one document, and everyone else's."""

    def __init__(self, sync: ReplicaSync, default_name: str) -> None:
        self._sync = sync
        self._name = default_name
        self._color = "#30bced"

    def set(
        self,
        *,
        cursor: int | None = None,
        selection: tuple[int, int] | None = None,
        name: str | None = None,
        color: str | None = None,
    ) -> None:
        """Publish our presence. ``selection`` is (anchor, head) in code points; ``cursor`` alone is
        an empty selection there. Unnamed fields keep their last value."""
        if name is not None:
            self._name = name
        if color is not None:
            self._color = color
        anchor: int | None
        head: int | None
        if selection is not None:
            anchor, head = selection
        elif cursor is not None:
            anchor = head = cursor
        else:
            anchor = head = None
        self._sync.set_presence(name=self._name, color=self._color, anchor=anchor, head=head)

    @property
    def peers(self) -> tuple[PeerPresence, ...]:
        """Other users' presence, their cursors resolved to code points now."""
        return tuple(self._sync.presence().values())


class Document:
    """One shared text document. Made by :meth:`Node.open_document`, never directly."""

    def __init__(self, node: Node, record: DocumentRecord, replica: Replica, sync: ReplicaSync) -> None:
        self._node = node
        self.record = record
        self.replica = replica
        """The SDK :class:`~aetherflow_sdk.replica.Replica` underneath (for everything else it offers)."""
        self.sync = sync
        self.presence = Presence(sync, node.name)
        self.offline_edits = 0
        self._pending_since = 0.0
        self._unsubscribe = replica.subscribe_updates(self._on_update)
        self.closed = False
        self.quota_bytes: int | None = None
        """Refuse remote updates once :meth:`storage_bytes` reaches this (a persistence peer's quota)."""
        self.quota_refusals = 0

    def _on_update(self, update: bytes, origin: object, local: bool) -> None:
        if local and not self.sync.protocol.peers:
            if not self.offline_edits:
                self._pending_since = time.monotonic()
            self.offline_edits += 1

    def sync_lag(self) -> float:
        """Seconds since the oldest edit not yet shared was made; 0 when in sync."""
        self.statistics()
        return time.monotonic() - self._pending_since if self.offline_edits else 0.0

    @property
    def doc_id(self) -> str:
        """The document's identity (carried by tickets)."""
        return self.record.doc_id

    @property
    def name(self) -> str:
        """The document's label."""
        return self.record.name

    @property
    def read_only(self) -> bool:
        return self.record.permission is Permission.READ_ONLY

    def storage_bytes(self) -> int:
        """Bytes the document takes in the node's store (snapshot plus update log), not counting
        the updates of the current group commit (durable within ~50 ms)."""
        return self._node._store.document_bytes(self.doc_id)

    @property
    def over_quota(self) -> bool:
        """True when the document has a quota and its stored bytes reached it."""
        return self.quota_bytes is not None and self.storage_bytes() >= self.quota_bytes

    @property
    def text(self) -> str:
        return self.replica.text

    def __len__(self) -> int:
        return len(self.replica)

    def _check_writable(self) -> None:
        if self.record.permission is Permission.SERVE:
            raise LocalProtocolError(
                f"document {self.name!r} is served here (a serve ticket): this node stores and passes"
                " on its updates, it does not edit it"
            )
        if self.read_only:
            raise LocalProtocolError(
                f"document {self.name!r} is read-only on this node (its ticket grants ro);"
                " ask for an rw ticket"
            )

    def insert(self, index: int, text: str) -> None:
        """Insert ``text`` at code-point ``index``."""
        self._check_writable()
        self.replica.insert(index, text)

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` code points from ``index``."""
        self._check_writable()
        self.replica.delete(index, length)

    def replace(self, index: int, length: int, text: str) -> None:
        self._check_writable()
        self.replica.replace(index, length, text)

    def changes(self) -> ChangeStream:
        """Every change from now on, local and remote (:class:`~aetherflow_sdk.replica.TextChange`)."""
        return self.replica.changes()

    async def flush(self) -> None:
        """Make every edit so far durable on this node."""
        await self.replica.flush()

    def share(self, *, user: str, perm: str = "rw", expires_in: float = 7 * 86_400) -> str:
        """Same as :meth:`Node.share` for this document."""
        return self._node.share(self, user=user, perm=perm, expires_in=expires_in)

    def statistics(self) -> DocumentStatistics:
        protocol = self.sync.protocol
        sync = protocol.statistics()
        peers = protocol.peers
        if peers and self.offline_edits and all(protocol.peer_state(p) == "synced" for p in peers):
            self.offline_edits = 0  # every connected peer asked for our state and was answered
        pending = self.offline_edits + sync.held_updates
        return DocumentStatistics(
            peers=len(peers),
            offline=not peers,
            pending_updates=pending,
            synced=bool(peers) and pending == 0,
            unflushed_updates=self.replica.statistics().unflushed_updates,
            writes_denied=sync.writes_denied,
            bad_messages=sync.bad_messages,
            storage_bytes=self.storage_bytes(),
            quota_bytes=self.quota_bytes,
            over_quota=self.over_quota,
            quota_refusals=self.quota_refusals,
        )

    def __repr__(self) -> str:
        return f"Document(name={self.name!r}, doc_id={self.doc_id!r}, read_only={self.read_only})"
