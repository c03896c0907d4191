"""What the editor needs from the node, and nothing more: one document and the node around it.

The app is written against these two protocols. :mod:`tui_editor._direct` implements
them with the SDK alone (Quantum + sessions + ReplicaSync); a node document fits them
through a thin adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import attrs

from aetherflow_sdk.replica import PeerPresence, Replica

Permission = Literal["rw", "ro"]


@attrs.frozen(kw_only=True)
class PeerRow:
    """One connected peer, as the peers panel shows it."""

    name: str
    """The peer's user name."""
    node_id: str
    """The peer's node ID (text)."""
    path: Literal["lan", "direct", "relayed"]
    """How we reach it."""
    rtt: float | None
    """Smoothed round-trip time in seconds, None before the first sample."""
    loss: float | None
    """Fraction of our packets to it that were lost."""


@attrs.frozen(kw_only=True)
class SyncState:
    """The status bar's sync state."""

    state: Literal["synced", "syncing", "offline"]
    """``offline``: no peer is connected; edits are kept locally and sent on reconnect."""
    pending: int
    """Updates not yet exchanged (syncing), or local edits kept while offline."""


class EditorDocument(Protocol):
    """One open document."""

    @property
    def name(self) -> str: ...
    @property
    def replica(self) -> Replica: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def read_only_reason(self) -> str: ...
    def set_presence(self, *, name: str, color: str, anchor: int | None, head: int | None) -> None: ...
    def presence_peers(self) -> Sequence[PeerPresence]: ...
    def sync_state(self) -> SyncState: ...
    async def wait_activity(self) -> None:
        """Return when presence, peers or sync state may have changed (or after a short while)."""


class EditorNode(Protocol):
    """The node the document lives on."""

    @property
    def node_id(self) -> str: ...
    @property
    def address(self) -> tuple[str, int]: ...
    def peers(self) -> Sequence[PeerRow]: ...
    def share(self, *, user: str, perm: Permission) -> str:
        """A ticket (``af1…``) that lets ``user`` open the document with ``perm``."""
