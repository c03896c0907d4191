"""The editor's ports over the node: one :class:`aetherflow_node.Document` and its :class:`Node`.

Also where a file becomes a document: the data directory keeps a small map from a
file's absolute path to the document made for it, so opening the same file again
reopens the same document (and its history), never a second copy.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio

from aetherflow_sdk import AetherFlowError
from aetherflow_sdk.replica import PeerPresence, Replica
from tui_editor._ports import PeerRow, Permission, SyncState

if TYPE_CHECKING:
    from aetherflow_node import Document, Node

FILES_MAP = "editor-files.json"
"""In the node's data directory: ``{absolute path: document ID}`` for files opened in the editor."""
_ACTIVITY_POLL = 1.0  # seconds: RTT and loss change without an event


class NodeDocument:
    """:class:`~tui_editor._ports.EditorDocument` and :class:`~tui_editor._ports.EditorNode` over the node."""

    def __init__(self, node: Node, document: Document, *, label: str | None = None) -> None:
        self.node_runtime = node
        self.doc = document
        self._label = label or document.name

    # -- EditorDocument -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._label

    @property
    def replica(self) -> Replica:
        return self.doc.replica

    @property
    def read_only(self) -> bool:
        return self.doc.read_only

    @property
    def read_only_reason(self) -> str:
        return "read-only: the ticket you joined with grants 'ro' (you see every edit, and cannot write)"

    def set_presence(self, *, name: str, color: str, anchor: int | None, head: int | None) -> None:
        selection = (anchor, head) if anchor is not None and head is not None else None
        self.doc.presence.set(selection=selection, name=name, color=color)

    def presence_peers(self) -> Sequence[PeerPresence]:
        own = self.doc.replica.client_id
        return sorted((p for p in self.doc.presence.peers if p.client_id != own), key=lambda p: p.client_id)

    def sync_state(self) -> SyncState:
        stats = self.doc.statistics()
        state: Literal["synced", "syncing", "offline"]
        state = "offline" if stats.offline else "synced" if stats.synced else "syncing"
        return SyncState(state=state, pending=stats.pending_updates)

    async def wait_activity(self) -> None:
        presence, node = self.doc.sync.activity, self.node_runtime.activity
        async with anyio.create_task_group() as tg:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait, presence)
            tg.start_soon(wait, node)
            with anyio.move_on_after(_ACTIVITY_POLL):
                await anyio.sleep_forever()
            tg.cancel_scope.cancel()

    # -- EditorNode -----------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.node_runtime.node_id

    @property
    def address(self) -> tuple[str, int]:
        return self.node_runtime.address

    def peers(self) -> Sequence[PeerRow]:
        rows = []
        for peer in self.node_runtime.peers:
            path: Literal["lan", "direct", "relayed"] = (
                peer.path if peer.path in ("lan", "direct", "relayed") else "direct"  # type: ignore[assignment]
            )
            rows.append(
                PeerRow(
                    name=peer.name or peer.node_id[:8],
                    node_id=peer.node_id,
                    path=path,
                    rtt=peer.rtt or None,
                    loss=peer.loss,
                )
            )
        return rows

    def share(self, *, user: str, perm: Permission) -> str:
        return self.node_runtime.share(self.doc, user=user, perm=perm)


def _load_map(data_dir: Path) -> dict[str, str]:
    try:
        loaded = json.loads((data_dir / FILES_MAP).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return (
        {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(loaded, dict)
        else {}
    )


def _save_map(data_dir: Path, files: dict[str, str]) -> None:
    temporary = data_dir / (FILES_MAP + ".tmp")
    temporary.write_text(json.dumps(files, indent=1, sort_keys=True))
    os.replace(temporary, data_dir / FILES_MAP)


async def open_file_document(node: Node, path: Path, text: str) -> Document:
    """The document for the file at ``path``: the one made last time, or a new one seeded with ``text``."""
    key = str(path.resolve())
    files = _load_map(node.data_dir)
    known = files.get(key)
    if known is not None:
        with contextlib.suppress(AetherFlowError):  # forgotten since: make a new one
            document = await node.open_document(known)
            if document.doc_id == known:
                return document
    document = await node.open_document(_fresh_name(node, path.name))
    if text and not len(document):
        document.replica.seed(text)  # the file's text, imported once: not an edit to undo
    files[key] = document.doc_id
    _save_map(node.data_dir, files)
    return document


def _fresh_name(node: Node, name: str) -> str:
    """``name``, or ``name (2)``... when the node already holds documents with that label."""
    taken = {record.name for record in node.catalog.documents()}
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"
