"""The editor's collaboration model, outside any widget: the replica, the rows, the local selection.

The replica is the truth. Every change -- typed here, undone here, or arriving from a
peer -- is read back from the replica's change stream in order (:meth:`EditorModel.pump`)
and becomes :class:`RowsReplaced` records that the widget applies verbatim. The widget
never edits its own text: it asks the model (:meth:`EditorModel.edit`), and shows what
the replica then says happened. So the two cannot drift apart, and undo/redo are the
replica's own (local transactions only: a peer's edit is never undone here).

The local selection is anchored to the text with the replica's sticky indices: after a
remote edit, the caret is wherever its character went, even when the edit deleted the
text around it, and never "kept at the same offset" (which would move it to another
character).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import attrs

from aetherflow_sdk import AetherFlowError
from aetherflow_sdk.replica import Replica
from tui_editor._lines import LineIndex, Location, RowsReplaced


class ReadOnlyDocument(AetherFlowError):
    """A write was attempted on a document this editor may only read."""


@attrs.frozen(kw_only=True)
class Pumped:
    """What one :meth:`EditorModel.pump` applied."""

    replaced: tuple[RowsReplaced, ...]
    """Row replacements, in order, for the widget."""
    remote: bool
    """True if any of them came from a peer."""
    local_end: int | None
    """For local changes (undo/redo), where the caret goes: the end of the last one."""


@attrs.frozen(kw_only=True)
class RemoteCursor:
    """A peer's caret and selection, in the widget's (row, column)."""

    client_id: int
    name: str
    color: str
    anchor: Location
    head: Location


class EditorModel:
    """Binds one replica to a widget's rows; owns the local selection's anchors."""

    def __init__(self, replica: Replica, *, read_only: bool = False, read_only_reason: str = "") -> None:
        self.replica = replica
        self.read_only = read_only
        self.read_only_reason = read_only_reason or "this document is shared with you read-only"
        self.lines = LineIndex(replica.text)
        self._changes = replica.changes()
        self._anchor, self._head = 0, 0
        self._sticky: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.remote_changes = 0

    def close(self) -> None:
        """Stop following the replica (the app calls it on exit)."""
        self._changes._unsubscribe()

    # -- positions ----------------------------------------------------------------------

    def location(self, offset: int) -> Location:
        return self.lines.location(offset)

    def offset(self, location: Location) -> int:
        return self.lines.offset(location)

    @property
    def selection(self) -> tuple[int, int]:
        """The local (anchor, head) in code points."""
        return self._anchor, self._head

    def set_selection(self, anchor: int, head: int) -> None:
        """Remember the local selection, anchored to its characters (sticky indices)."""
        if (anchor, head) == (self._anchor, self._head) and self._sticky is not None:
            return
        self._anchor, self._head = anchor, head
        sticky_anchor = self.replica.sticky_index(anchor)
        self._sticky = (sticky_anchor, sticky_anchor if head == anchor else self.replica.sticky_index(head))

    def _resolve_selection(self) -> None:
        if self._sticky is None:
            return
        anchor = self.replica.resolve_sticky_index(self._sticky[0])
        head = self.replica.resolve_sticky_index(self._sticky[1])
        size = len(self.replica)
        self._anchor = min(size, anchor if anchor is not None else self._anchor)
        self._head = min(size, head if head is not None else self._head)

    # -- writing ------------------------------------------------------------------------

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyDocument(self.read_only_reason)

    def edit(self, start: Location, end: Location, text: str) -> int:
        """Replace ``start``-``end`` by ``text`` in the replica; returns the caret offset after it.

        Call :meth:`pump` next to learn how the rows changed.
        """
        self.check_writable()
        a, b = sorted((self.offset(start), self.offset(end)))
        self.replica.replace(a, b - a, text)
        return a + len(text)

    def undo(self) -> bool:
        """Undo this editor's last edit (never a peer's)."""
        self.check_writable()
        return self.replica.undo()

    def redo(self) -> bool:
        self.check_writable()
        return self.replica.redo()

    # -- following the replica ----------------------------------------------------------

    def pump(self) -> Pumped:
        """Apply every change the replica reported since the last pump to the rows, in order."""
        replaced: list[RowsReplaced] = []
        remote = False
        local_end: int | None = None
        while True:
            try:
                change = self._changes.receive_nowait()
            except anyio.WouldBlock:
                break
            rows = self.lines.apply(change.delta)
            if rows is None:
                continue
            replaced.append(rows)
            if change.local:
                local_end = rows.new_end
            else:
                remote = True
                self.remote_changes += 1
        if remote:
            self._resolve_selection()
        return Pumped(replaced=tuple(replaced), remote=remote, local_end=local_end)

    def remote_cursors(self, peers: Sequence[Any]) -> list[RemoteCursor]:
        """Peers' presence (``name``, ``color``, ``anchor``, ``head`` in code points) as locations."""
        cursors = []
        for peer in peers:
            head = peer.head if peer.head is not None else peer.anchor
            if head is None:
                continue
            anchor = peer.anchor if peer.anchor is not None else head
            cursors.append(
                RemoteCursor(
                    client_id=peer.client_id,
                    name=peer.name or "peer",
                    color=peer.color or "#30bced",
                    anchor=self.location(anchor),
                    head=self.location(head),
                )
            )
        return cursors
