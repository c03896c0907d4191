"""``Replica``: one text document held locally, wrapping a pycrdt ``Doc``.

The CRDT is pycrdt's (Yjs/yrs); this module adds what an app needs on top:

* indices in Python code points (pycrdt counts UTF-8 bytes, see ``_index``);
* local edits grouped into transactions (``batch()``), so a burst of typing is
  one Yjs update, one log row and one undo step;
* undo/redo of *local* edits only (remote transactions carry an origin the undo
  manager does not track);
* change events with code-point deltas, marked local or remote;
* update listeners, which the sync protocol and the store hang off;
* durability through an optional :class:`SqliteStore` (``flush()``).

Bookkeeping for speed: while the text is known to be ASCII, byte offsets are
code-point offsets and the Python copy of the text is built only on demand.
Once it holds non-ASCII text, ``_text`` is kept current on every change
(invariant: ``_ascii or _text is not None``).

pycrdt's text observer costs more than the edit itself and grows with the
document (measured: 56k -> 20k edits/s on automerge-paper with an empty
callback), so it is attached only around transactions whose effect we do not
know (remote updates, undo/redo, seeding). Local edits' deltas are ours.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from pycrdt import Doc, Text, UndoManager, merge_updates
from pycrdt._transaction import hash_origin

from aetherflow_sdk._errors import BadPacket, ReplicaError, StorageError
from aetherflow_sdk.replica._deps import update_needs_untrusted
from aetherflow_sdk.replica._events import (
    ChangeStream,
    Delete,
    DeltaOp,
    Insert,
    ReplicaStatistics,
    Retain,
    TextChange,
)
from aetherflow_sdk.replica._index import (
    apply_ops,
    byte_offset,
    delta_to_code_points,
)
from aetherflow_sdk.replica._sticky import make_sticky, resolve_sticky
from aetherflow_sdk.replica._store import SqliteStore
from aetherflow_sdk.replica._wire import parse_state_vector_untrusted

TEXT_ROOT = "text"
"""Name of the shared ``Y.Text`` in the Yjs document (JS peers: ``ydoc.getText("text")``)."""

# Transaction origins. Only _LOCAL_ORIGIN is tracked by the undo manager, so
# remote and seeding transactions never enter the local undo history.
_LOCAL_ORIGIN = "aetherflow.replica.local"
_REMOTE_ORIGIN = "aetherflow.replica.remote"
_SEED_ORIGIN = "aetherflow.replica.seed"
_LOCAL_ORIGIN_HASH = hash_origin(_LOCAL_ORIGIN)

DEFAULT_MAX_UNDO_STEPS = 1000
"""Local transactions kept for undo (older ones are forgotten)."""

UpdateListener = Callable[[bytes, object, bool], None]
"""Called with ``(update, origin, local)`` after every transaction that changed the document."""


class Replica:
    """A local replica of one text document. Edits are immediate; sync and storage hang off it.

    ``Replica(doc_id)`` lives in memory; ``Replica.open(path, doc_id)`` is durable.
    Not thread-safe: use it from one thread (one event loop).
    """

    def __init__(
        self,
        doc_id: str,
        store: SqliteStore | None = None,
        *,
        client_id: int | None = None,
        salvage: bool = False,
        undo_capture_ms: int = 0,
        max_undo_steps: int = DEFAULT_MAX_UNDO_STEPS,
    ) -> None:
        if not isinstance(doc_id, str) or not doc_id:
            raise ReplicaError(f"doc_id must be a non-empty str, got {doc_id!r}")
        self._doc_id = doc_id
        self._store = store
        self._owns_store = False
        self._closed = False
        self._undo_capture_ms = undo_capture_ms
        self._max_undo_steps = max(1, max_undo_steps)
        self._undo_steps = 0
        self._subscribers: list[MemoryObjectSendStream[TextChange]] = []
        self._listeners: list[UpdateListener] = []
        self._pending: list[bytes] = []
        # Durability bookkeeping: updates ever queued for the store, and how many of
        # them are committed; `wait_flushed` waits for the second to reach the first.
        self._queued_total = 0
        self._durable_total = 0
        self._durable_changed: anyio.Event | None = None
        self._flush_lock: anyio.Lock | None = None
        self._seed_client: int | None = None
        self._seed_clock = 0
        self._local_transactions = 0
        self._remote_applied = 0
        self._skipped = 0
        self._salvage = salvage
        # Transaction bookkeeping: which kind of transaction is running (None means
        # one we did not start: undo/redo), and the text before a local one.
        self._txn_kind: Literal["local", "remote", "seed"] | None = None
        self._local_ops: list[TextChange] = []
        self._unnotified: list[tuple[bytes, object, bool]] = []
        self._remote_origin: object = None
        self._batch_depth = 0
        self._changed = False
        history: list[tuple[str, bytes]] = []
        if store is not None:
            loaded = store.load(doc_id, salvage=salvage)
            history = loaded.updates
            self._seed_client = loaded.seed_client_id
            self._seed_clock = loaded.seed_clock
            self._skipped = loaded.skipped
        self._install(history, client_id)

    @classmethod
    def open(
        cls,
        path: str | Path,
        doc_id: str,
        *,
        compress: bool = True,
        salvage: bool = False,
        undo_capture_ms: int = 0,
    ) -> Replica:
        """Open (or create) the durable replica of ``doc_id`` in the SQLite file ``path``.

        ``salvage=True`` skips corrupt rows (counted in ``statistics()``) instead
        of raising :class:`StorageError`.
        """
        store = SqliteStore(path, compress=compress)
        try:
            replica = cls(doc_id, store, salvage=salvage, undo_capture_ms=undo_capture_ms)
        except BaseException:
            store.close()
            raise
        replica._owns_store = True
        return replica

    # -- setup --------------------------------------------------------------------------

    def _install(self, history: list[tuple[str, bytes]], client_id: int | None) -> None:
        doc: Doc[Any] = Doc(client_id=client_id) if client_id is not None else Doc()
        ytext = doc.get(TEXT_ROOT, type=Text)
        self._ytext = ytext
        self._undo_steps = 0
        for label, update in history:
            try:
                doc.apply_update(update)
            except ValueError as exc:
                if self._salvage:
                    self._skipped += 1
                    continue
                path = self._store.path if self._store is not None else "<memory>"
                raise StorageError(
                    f"{path}: {label} of document {self._doc_id!r} is not a valid Yjs update ({exc}); "
                    "open with salvage=True to load the rest"
                ) from exc
        self._doc = doc
        self._ytext = ytext
        # The yrs objects under pycrdt's wrappers, for the per-edit hot path.
        self._raw_doc = doc._doc
        self._raw_text = ytext.integrated
        text = str(ytext)
        self._ascii = text.isascii()
        self._text: str | None = text
        self._len = len(text)
        self._undo = self._new_undo_manager(None, None)
        self._doc_subscription = doc.observe(self._on_transaction)

    def _new_undo_manager(self, undo_stack: list[Any] | None, redo_stack: list[Any] | None) -> UndoManager:
        manager = UndoManager(
            scopes=[self._ytext],
            capture_timeout_millis=self._undo_capture_ms,
            undo_stack=undo_stack,
            redo_stack=redo_stack,
        )
        manager.include_origin(_LOCAL_ORIGIN)
        return manager

    def _trim_undo_history(self) -> None:
        # yrs slows down as its undo stack grows (automerge-paper: 64k -> 38k edits/s
        # over 150k edits), and it cannot drop old items in place. So once the stack
        # may hold 2x the limit, rebuild a manager holding the newest `limit` items:
        # amortised O(1) per edit.
        self._undo = self._new_undo_manager(
            self._undo.undo_stack[-self._max_undo_steps :], self._undo.redo_stack
        )
        self._undo_steps = self._max_undo_steps

    # -- reading ------------------------------------------------------------------------

    @property
    def doc_id(self) -> str:
        return self._doc_id

    @property
    def client_id(self) -> int:
        """This replica's Yjs client ID."""
        return int(self._doc.client_id)

    @property
    def text(self) -> str:
        """The current text."""
        if self._text is None:
            self._text = str(self._ytext)
        return self._text

    def __len__(self) -> int:
        return self._len

    @property
    def seeded_by(self) -> int | None:
        """The client ID that seeded this document from outside the CRDT (``seed()``), if any."""
        return self._seed_client

    def holds_only_seed(self) -> bool:
        """True if the document holds its seed and nothing else (no edit, local or remote, since)."""
        if self._seed_client is None:
            return False
        held = parse_state_vector_untrusted(self.state_vector())
        if held != {self._seed_client: self._seed_clock}:
            return False
        # Deletions leave the state vector alone, so also require an empty delete set:
        # a v1 update ends with the delete set, whose last byte is 0 only when it is
        # empty (otherwise it ends with a range length, a varuint >= 1).
        return self.encode_update().endswith(b"\x00")

    @property
    def closed(self) -> bool:
        return self._closed

    def state_vector(self) -> bytes:
        """The encoded Yjs state vector (what this replica holds, per client)."""
        self._check_open()
        return bytes(self._doc.get_state())

    def state_vector_dict(self) -> dict[int, int]:
        """The state vector as ``{client ID: clock}``. Compare these, not :meth:`state_vector`
        bytes: the encoding lists clients in no fixed order, so two replicas holding exactly
        the same edits may encode it differently."""
        self._check_open()
        return parse_state_vector_untrusted(self.state_vector())

    def encode_update(self, since: bytes | None = None) -> bytes:
        """A Yjs v1 update with everything not covered by the state vector ``since`` (all if None)."""
        self._check_open()
        try:
            return bytes(self._doc.get_update(since))
        except ValueError as exc:
            raise ReplicaError(f"since= is not a valid state vector: {exc}") from exc

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            doc_id=self._doc_id,
            client_id=self.client_id,
            length=self._len,
            local_transactions=self._local_transactions,
            remote_updates_applied=self._remote_applied,
            unflushed_updates=self._queued_total - self._durable_total,
            corrupt_rows_skipped=self._skipped,
        )

    # -- local edits --------------------------------------------------------------------

    def insert(self, index: int, text: str) -> None:
        """Insert ``text`` before code point ``index``."""
        self._edit(index, 0, text)

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` code points starting at ``index``."""
        self._edit(index, length, "")

    def replace(self, index: int, length: int, text: str) -> None:
        """Replace ``length`` code points at ``index`` by ``text`` (one transaction)."""
        self._edit(index, length, text)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the edits made inside into one transaction: one update, one undo step."""
        self._check_open()
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        self._begin_local()
        try:
            with self._doc.transaction(origin=_LOCAL_ORIGIN):
                yield
        finally:
            self._end_local()

    def _begin_local(self) -> None:
        self._txn_kind = "local"
        self._batch_depth = 1

    def _end_local(self) -> None:
        self._batch_depth = 0
        self._txn_kind = None
        if self._undo_steps >= 2 * self._max_undo_steps:
            self._trim_undo_history()
        if self._local_ops:
            changes, self._local_ops = self._local_ops, []
            for change in changes:
                self._emit(change)
        if self._unnotified:
            self._notify()

    @contextmanager
    def _observing_text(self) -> Iterator[None]:
        # The integrated (yrs) observer directly: pycrdt's Text.observe inspects the
        # callback's signature on every call and builds four event attributes we do
        # not use (measured: half the cost of a remote apply).
        subscription = self._ytext.integrated.observe(self._on_text_event)
        try:
            yield
        finally:
            subscription.drop()

    def _edit(self, index: int, length: int, text: str) -> None:
        self._check_open()
        index = operator.index(index)
        length = operator.index(length)
        if not isinstance(text, str):
            raise ReplicaError(f"text must be a str, got {type(text).__name__}")
        if index < 0 or length < 0 or index + length > self._len:
            raise ReplicaError(
                f"range [{index}, {index + length}) is outside the text (length {self._len} code points)"
            )
        if not length and not text:
            return
        if self._batch_depth:
            # Inside batch(): pycrdt's running transaction.
            self._edit_in_transaction(self._doc._txn._txn, index, length, text)  # type: ignore[union-attr]
            return
        # A lone edit runs in a yrs transaction made directly: pycrdt's Python
        # Transaction wrapper costs ~3 us per edit (10 % of an edit on the paper
        # trace). It carries the same origin hash, so the undo manager tracks it;
        # observer errors are raised the way pycrdt raises them.
        self._begin_local()
        raw_txn = self._raw_doc.create_transaction_with_origin(_LOCAL_ORIGIN_HASH)
        try:
            self._edit_in_transaction(raw_txn, index, length, text)
        finally:
            try:
                raw_txn.commit()
            finally:
                raw_txn.drop()
                self._end_local()
        if self._doc._exceptions:
            errors = tuple(self._doc._exceptions)
            self._doc._exceptions.clear()
            raise ExceptionGroup("Observer callback error", errors)

    def _edit_in_transaction(self, raw_txn: Any, index: int, length: int, text: str) -> None:
        if self._subscribers:
            delta: list[DeltaOp] = [Retain(count=index)] if index else []
            if length:
                delta.append(Delete(count=length))
            if text:
                delta.append(Insert(text=text))
            self._local_ops.append(TextChange(delta=tuple(delta), local=True, origin=None))
        # Calling the integrated yrs text with the running transaction skips pycrdt's
        # per-call Python transaction wrappers, which cost as much as the edit itself.
        raw_text = self._raw_text
        if self._ascii and text.isascii():
            if length:
                raw_text.remove_range(raw_txn, index, length)
            if text:
                raw_text.insert(raw_txn, index, text, None)
            self._text = None
            self._len += len(text) - length
            return
        current = self._text if self._text is not None else str(raw_text.get_string(raw_txn))
        start = byte_offset(current, index)
        if length:
            end = start + len(current[index : index + length].encode("utf-8"))
            raw_text.remove_range(raw_txn, start, end - start)
        if text:
            raw_text.insert(raw_txn, start, text, None)
        self._text = current[:index] + text + current[index + length :]
        self._ascii = self._text.isascii()
        self._len = len(self._text)

    def seed(self, text: str) -> None:
        """Fill an empty, never-synced replica with ``text`` from outside the CRDT (a file on disk).

        Remembered (and stored), so that a peer whose history never contained this
        seed is recognised on connect instead of merged twice (jupyter-collaboration#621).
        Not undoable.
        """
        self._check_open()
        if self._len or self._doc.get_state() != b"\x00":
            raise ReplicaError("seed() needs a replica that has never held content")
        self._txn_kind = "seed"
        try:
            with self._observing_text(), self._doc.transaction(origin=_SEED_ORIGIN):
                self._ytext.insert(0, text)
        finally:
            self._txn_kind = None
        self._notify()
        self._seed_client = self.client_id
        self._seed_clock = parse_state_vector_untrusted(self.state_vector()).get(self.client_id, 0)
        if self._store is not None:
            self._store.set_seed_client(self._doc_id, self._seed_client, self._seed_clock)

    def undo(self) -> bool:
        """Undo the last local transaction not yet undone; remote edits are never undone."""
        self._check_open()
        self._check_not_in_batch("undo()")
        with self._observing_text():
            done = bool(self._undo.undo())
        self._notify()
        return done

    def redo(self) -> bool:
        """Redo the last undone local transaction."""
        self._check_open()
        self._check_not_in_batch("redo()")
        with self._observing_text():
            done = bool(self._undo.redo())
        self._notify()
        return done

    def can_undo(self) -> bool:
        return bool(self._undo.can_undo())

    def can_redo(self) -> bool:
        return bool(self._undo.can_redo())

    # -- remote updates -----------------------------------------------------------------

    def apply_update(self, update: bytes, origin: object = None) -> bool:
        """Apply a Yjs v1 update from elsewhere. Returns True if it changed the document.

        ``origin`` is passed to update listeners and change events (the sync layer
        uses the peer, so it never echoes an update back to where it came from).
        """
        return self._apply_remote(bytes(update), origin, None)

    def _apply_remote(self, update: bytes, origin: object, plain_ascii: bool | None) -> bool:
        """``apply_update``; the sync protocol passes ``plain_ascii`` (it decoded the update already)."""
        self._check_open()
        self._check_not_in_batch("apply_update()")
        # Fast path: nobody wants deltas and the text stays ASCII, so the only
        # bookkeeping is the length (byte length = code points), and the text
        # observer -- whose delta costs grow with the document -- can stay off.
        fast = False
        if not self._subscribers and self._ascii:
            if plain_ascii is None:
                try:
                    plain_ascii = update_needs_untrusted(update).plain_ascii
                except BadPacket:
                    plain_ascii = False  # let yrs reject it below, with its own message
            fast = plain_ascii
        self._txn_kind = "remote"
        self._remote_origin = origin
        self._changed = False
        try:
            if fast:
                with self._doc.transaction(origin=_REMOTE_ORIGIN):
                    self._doc.apply_update(update)
                if self._changed:
                    self._text = None
                    self._len = len(self._ytext)
            else:
                with self._observing_text(), self._doc.transaction(origin=_REMOTE_ORIGIN):
                    self._doc.apply_update(update)
        except ValueError as exc:
            raise ReplicaError(f"not a valid Yjs update: {exc}") from exc
        finally:
            self._txn_kind = None
            self._remote_origin = None
        if self._changed:
            self._remote_applied += 1
        self._notify()
        return self._changed

    # -- positions that follow the text -------------------------------------------------

    def sticky_index(self, index: int, *, before: bool = False) -> dict[str, Any]:
        """A relative position (pycrdt ``StickyIndex``, Yjs RelativePosition JSON) for ``index``.

        It stays attached to the character after ``index`` (or before it, with
        ``before=True``) however the text changes around it.
        """
        self._check_open()
        if not 0 <= index <= self._len:
            raise ReplicaError(f"index {index} is outside the text (length {self._len})")
        return make_sticky(self._ytext, TEXT_ROOT, self.text, index, before)

    def resolve_sticky_index(self, position: object) -> int | None:
        """The current code-point index of a relative position, or None if it cannot be resolved."""
        self._check_open()
        if not isinstance(position, dict):
            return None
        known = parse_state_vector_untrusted(self.state_vector())
        return resolve_sticky(self._ytext, TEXT_ROOT, self.text, known, position)

    # -- listeners and events -----------------------------------------------------------

    def subscribe_updates(self, listener: UpdateListener) -> Callable[[], None]:
        """Call ``listener(update, origin, local)`` after each transaction; returns an unsubscriber."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def changes(self) -> ChangeStream:
        """An async iterator of :class:`TextChange`, from now until the replica closes."""
        self._check_open()
        send, receive = anyio.create_memory_object_stream[TextChange](math.inf)
        self._subscribers.append(send)

        def unsubscribe() -> None:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

        return ChangeStream(receive, unsubscribe)

    def _on_transaction(self, event: Any) -> None:
        update = bytes(event.update)
        self._changed = True
        kind = self._txn_kind
        if kind == "local":
            self._local_transactions += 1
            self._undo_steps += 1
        if self._store is not None:
            self._pending.append(update)
            self._queued_total += 1
        local = kind != "remote"
        origin = self._remote_origin if kind == "remote" else None
        # Listeners run after the transaction (see _notify): inside pycrdt's commit
        # the document cannot be read, and a listener that reads it would fail.
        if self._listeners:
            self._unnotified.append((update, origin, local))

    def _notify(self) -> None:
        """Run update listeners for the transactions that just committed."""
        if not self._unnotified:
            return
        pending, self._unnotified = self._unnotified, []
        listeners = tuple(self._listeners)
        for update, origin, local in pending:
            for listener in listeners:
                listener(update, origin, local)

    def _on_text_event(self, event: Any) -> None:
        # Only attached around remote, undo/redo and seed transactions (never local edits).
        old = None if self._ascii else self._text
        ops = delta_to_code_points(old, event.delta)
        inserted_ascii = True
        for op, value in ops:
            if op == "insert":
                self._len += len(value)
                inserted_ascii = inserted_ascii and value.isascii()
            elif op == "delete":
                self._len -= value
        if self._ascii and inserted_ascii:
            self._text = None
        else:
            if old is None:
                # Inside the commit only the event's own (raw) transaction may read.
                self._text = str(event.target.get_string(event.transaction))
            else:
                self._text = apply_ops(old, ops)
            self._ascii = self._text.isascii()
            self._len = len(self._text)
        if self._subscribers:
            delta = tuple(
                Retain(count=v) if op == "retain" else Delete(count=v) if op == "delete" else Insert(text=v)
                for op, v in ops
            )
            remote = self._txn_kind == "remote"
            self._emit(TextChange(delta=delta, local=not remote, origin=self._remote_origin))

    def _emit(self, change: TextChange) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(change)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(send)

    # -- adopting a peer's history (see the sync protocol's foreign-history guard) ------

    def reset(self) -> None:
        """Drop everything this replica holds (memory and store) and start empty.

        The sync protocol calls it to adopt a peer's history instead of merging a
        parallel copy of a seeded document. Emits a remote change deleting the text.
        """
        self._check_open()
        self._check_not_in_batch("reset()")
        old_length = self._len
        self._doc.unobserve(self._doc_subscription)
        # Dropped, never to be written: settled for wait_flushed(), like a commit.
        self._durable_total += len(self._pending)
        self._pending.clear()
        if self._durable_changed is not None:
            self._durable_changed.set()
            self._durable_changed = None
        self._seed_client = None
        self._seed_clock = 0
        if self._store is not None:
            self._store.clear(self._doc_id)
        self._install([], None)
        if old_length:
            self._emit(TextChange(delta=(Delete(count=old_length),), local=False, origin=None))

    # -- durability ---------------------------------------------------------------------

    async def flush(self) -> None:
        """Make every edit made so far durable. **The durability promise**: once this returns,
        the edits survive a crash of the process or the machine (SQLite WAL, synchronous=FULL).

        Pending updates are group-committed in one SQLite transaction, off the event
        loop thread. Compaction happens here when the log has grown. No-op in memory.
        """
        self._check_open()
        store = self._store
        if store is None:
            return
        if self._flush_lock is None:
            self._flush_lock = anyio.Lock()
        async with self._flush_lock:
            taken, self._pending = self._pending, []
            if not taken:
                return
            # reset() may clear the store while we commit: the generation makes the
            # store discard these rows then, instead of writing the old history back.
            generation = store.generation(self._doc_id)
            # One row per group commit, however many transactions it holds.
            pending = [bytes(merge_updates(*taken))] if len(taken) > 1 else taken
            snapshot = None
            if store.wants_compaction(self._doc_id, sum(len(u) for u in pending)):
                # Taken together with `pending`, so it covers every row being written.
                snapshot = bytes(self._doc.get_update())
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(store.commit, self._doc_id, pending, snapshot, generation=generation)
                )
            except BaseException:
                if generation == store.generation(self._doc_id):
                    self._pending[:0] = taken
                else:
                    self._durable_total += len(taken)  # dropped by reset(): settled
                raise
            self._durable_total += len(taken)
            if self._durable_changed is not None:
                self._durable_changed.set()
                self._durable_changed = None

    async def wait_flushed(self) -> None:
        """Wait until every edit made before this call is durable (committed by ``flush()``
        or ``autoflush()``; this call commits nothing itself). Returns at once in memory."""
        if self._store is None:
            return
        target = self._queued_total
        while self._durable_total < target and not self._closed:
            if self._durable_changed is None:
                self._durable_changed = anyio.Event()
            await self._durable_changed.wait()

    async def autoflush(self, interval: float = 0.1) -> None:
        """Group commit: flush every ``interval`` seconds while edits are pending, until closed.

        Run it in a task group next to the app; then every edit is durable within about
        ``interval`` plus one commit, without the app calling ``flush()``.
        """
        while not self._closed:
            await anyio.sleep(interval)
            if self._pending and not self._closed:
                await self.flush()

    def close(self) -> None:
        """Write what is pending (blocking), close the store if ``open()`` made it, end change streams.

        For sync callers; in async code use ``await aclose()`` or ``async with Replica.open(...)``.
        """
        if self._closed:
            return
        try:
            if self._store is not None and self._pending:
                pending, self._pending = self._pending, []
                self._store.commit(self._doc_id, pending, None)
                self._durable_total += len(pending)
        finally:
            self._closed = True
            if self._store is not None and self._owns_store:
                self._store.close()
            if self._durable_changed is not None:
                self._durable_changed.set()
            for send in self._subscribers:
                send.close()
            self._subscribers.clear()
            self._listeners.clear()

    async def aclose(self) -> None:
        """Like :meth:`close`, but writes what is pending in a worker thread (never blocks the loop)."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self.close()  # nothing left pending: does not touch the disk but to close it

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close()

    async def __aenter__(self) -> Replica:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ReplicaError(f"replica {self._doc_id!r} is closed")

    def _check_not_in_batch(self, what: str) -> None:
        if self._batch_depth:
            raise ReplicaError(f"{what} is not allowed inside batch(); call it after the batch")

    def __repr__(self) -> str:
        return f"<Replica {self._doc_id!r} client={self.client_id} length={self._len}>"
