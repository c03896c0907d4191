"""What a replica tells the world: change events (Quill-style deltas in code points) and statistics."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream


@attrs.frozen(kw_only=True)
class Retain:
    """Keep ``count`` code points unchanged."""

    count: int
    """Number of code points skipped."""


@attrs.frozen(kw_only=True)
class Insert:
    """Insert ``text`` at the current position."""

    text: str
    """The inserted text."""


@attrs.frozen(kw_only=True)
class Delete:
    """Delete ``count`` code points at the current position."""

    count: int
    """Number of code points removed."""


DeltaOp = Retain | Insert | Delete


@attrs.frozen(kw_only=True)
class TextChange:
    """One transaction's effect on the text, as a Quill-style delta in code points."""

    delta: tuple[DeltaOp, ...]
    """Retain/Insert/Delete ops applied left to right to the text before the change."""
    local: bool
    """True for this replica's own edits (including undo/redo); False for remote updates."""
    origin: object
    """For remote changes, the ``origin`` given to ``apply_update`` (the sync layer passes the peer)."""


@attrs.frozen(kw_only=True)
class ReplicaStatistics:
    """Counters of one replica (read by metrics and status bars)."""

    doc_id: str
    """The document's ID."""
    client_id: int
    """This replica's Yjs client ID (new on every open)."""
    length: int
    """Length of the text in code points."""
    local_transactions: int
    """Local transactions committed (a batch counts once)."""
    remote_updates_applied: int
    """Remote updates that changed the document."""
    unflushed_updates: int
    """Updates not yet durable (written at the next ``flush()``)."""
    corrupt_rows_skipped: int
    """Stored rows skipped as corrupt when the replica was opened with ``salvage=True``."""


class ChangeStream:
    """Async iterator of :class:`TextChange`; ends when the replica closes.

    Events are buffered without bound from the moment ``changes()`` is called, so
    consume them or ``aclose()`` the stream.
    """

    def __init__(
        self, receive: MemoryObjectReceiveStream[TextChange], unsubscribe: Callable[[], None]
    ) -> None:
        self._receive = receive
        self._unsubscribe = unsubscribe

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> TextChange:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def receive_nowait(self) -> TextChange:
        """The next buffered change; raises ``anyio.WouldBlock`` if there is none."""
        return self._receive.receive_nowait()

    async def aclose(self) -> None:
        self._unsubscribe()
        await self._receive.aclose()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
