"""A document and a node with fixed peers, for snapshots: the look must not depend on ports or RTTs.

The text is a real replica; only the peers' presence and the peers panel rows are given
(as the node would report them), so every run renders the same screen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aetherflow_sdk.replica import PeerPresence, Replica
from tui_editor._ports import PeerRow, Permission, SyncState


class FixedDocument:
    def __init__(self, text: str, peers: Sequence[PeerPresence], *, read_only: bool = False) -> None:
        self._replica = Replica("snapshot", client_id=1)
        self._replica.insert(0, text)
        self._peers = list(peers)
        self._read_only = read_only
        self.published: list[tuple[int | None, int | None]] = []

    name = "notes.py"
    read_only_reason = "read-only: the ticket you joined with grants 'ro'"

    @property
    def replica(self) -> Replica:
        return self._replica

    @property
    def read_only(self) -> bool:
        return self._read_only

    def set_presence(self, *, name: str, color: str, anchor: int | None, head: int | None) -> None:
        self.published.append((anchor, head))

    def presence_peers(self) -> Sequence[PeerPresence]:
        return self._peers

    def sync_state(self) -> SyncState:
        return SyncState(state="synced", pending=0)

    async def wait_activity(self) -> None:
        await asyncio.Event().wait()  # nothing ever changes here


class FixedNode:
    node_id = "k7xq2m4vbnr5tdw3fh6js8ecg9ya"
    address = ("192.168.1.20", 4433)

    def __init__(self, peers: Sequence[PeerRow]) -> None:
        self._peers = list(peers)

    def peers(self) -> Sequence[PeerRow]:
        return self._peers

    def share(self, *, user: str, perm: Permission) -> str:
        return f"af1-fixed-ticket-for-{user}-{perm}"


def presence(client_id: int, name: str, color: str, anchor: int, head: int) -> PeerPresence:
    return PeerPresence(client_id=client_id, name=name, color=color, anchor=anchor, head=head, state={})
