"""Durable storage of replicas: one SQLite file (WAL mode), many documents.

Layout (docs/replica.md has the full table):

* ``updates``   -- the append-only log: one row per group-committed Yjs update, with a CRC-32.
* ``snapshots`` -- per document, one full-state update that covers every log row up to ``upto``
                   (zlib-compressed or not), with a CRC-32 of the stored bytes.
* ``documents`` -- per document, the client ID that seeded it from outside the CRDT, if any.

Loading = the snapshot, then the log rows after it. Compaction writes a new
snapshot of the live document and deletes the rows it covers, in the same
transaction as the rows being appended, so a crash leaves either the old
state or the new one. The snapshot is always the full document update: with
compression off it is stored as is (pycrdt-store's squash dropped the
document in that case; we do not).

A CRC mismatch, a snapshot that does not decompress, or a file that is not a
SQLite database raises :class:`StorageError` naming the file and the row;
``salvage=True`` skips bad rows and keeps the rest readable.

Thread safety: the replica commits from a worker thread (``anyio.to_thread``), so
the connection allows any thread and a lock serialises its use.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from pathlib import Path

import attrs

from aetherflow_sdk._errors import StorageError

SCHEMA_VERSION = 1

DEFAULT_COMPACT_MIN_BYTES = 16 * 1024
"""Log bytes below which compaction never runs: a small log costs less than rewriting a snapshot.
Above it, compaction runs once the log outgrows the snapshot, so the log is never
more than about the snapshot's size (the 10x size bound depends on it)."""

DEFAULT_COMPACT_MAX_ROWS = 1000
"""Log rows after which compaction runs regardless of bytes (each row costs ~40 bytes of overhead)."""

# Small pages: an update row is tens of bytes, and every group commit writes
# whole pages to the WAL (about 3). With 4 KiB pages the WAL and the fixed
# tables dominated the file set of a small document (measured 70x a 1.6 kB
# snapshot); 1 KiB pages cut that fixed cost by 4. Snapshots are big blobs and
# simply use more overflow pages.
_PAGE_SIZE = 1024
# Checkpoint the WAL every 64 pages rather than SQLite's 1000, and truncate it
# back to that size, so the WAL never dwarfs the data.
_WAL_AUTOCHECKPOINT_PAGES = 64
_JOURNAL_SIZE_LIMIT = 64 * 1024


@attrs.frozen(kw_only=True)
class StoredDocument:
    """What :meth:`SqliteStore.load` found for one document."""

    updates: list[tuple[str, bytes]]
    """(label for error messages, Yjs update) in the order to apply: snapshot first, then the log."""
    seed_client_id: int | None
    """The client that seeded the document from outside the CRDT, if any."""
    seed_clock: int
    """That client's clock right after seeding (0 if not seeded)."""
    skipped: int
    """Corrupt rows skipped (only with ``salvage=True``)."""


@attrs.define(kw_only=True)
class _Counters:
    log_bytes: int = 0
    log_rows: int = 0
    snapshot_bytes: int = 0


class SqliteStore:
    """One SQLite file holding the update logs and snapshots of any number of documents."""

    def __init__(
        self,
        path: str | Path,
        *,
        compress: bool = True,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        compact_max_rows: int = DEFAULT_COMPACT_MAX_ROWS,
    ) -> None:
        self.path = Path(path)
        self.compress = compress
        self.compact_min_bytes = compact_min_bytes
        self.compact_max_rows = compact_max_rows
        self._lock = threading.Lock()
        self._counters: dict[str, _Counters] = {}
        # Bumped by clear(): a commit prepared before a clear must not write old rows back.
        self._generations: dict[str, int] = {}
        self._closed = False
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so that appending
            # rows and compacting are one atomic transaction.
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the replica store ({exc})") from exc
        self._conn = conn
        try:
            self._setup()
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(
                f"{self.path}: not a readable replica store ({exc}); move the file aside to start afresh"
            ) from exc

    def _setup(self) -> None:
        # Imported here: sqlite-utils takes ~0.2 s to import, and an in-memory replica
        # (or a CLI command that never opens a store) should not pay for it.
        import sqlite_utils

        conn = self._conn
        # auto_vacuum must be chosen before the first table exists; INCREMENTAL lets
        # compaction hand freed pages back to the file system.
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # only takes effect on a new file
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"could not switch to WAL mode (got {mode})")
        # FULL: a commit is on disk when it returns -- the durability promise of flush().
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        db = sqlite_utils.Database(conn)
        # AUTOINCREMENT: ids never go back, even after compaction deletes every row
        # (plain rowids restart at max+1, which would fall under the snapshot's `upto`).
        conn.execute(
            "CREATE TABLE IF NOT EXISTS updates (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "doc_id TEXT NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL)"
        )
        db["updates"].create_index(["doc_id", "id"], if_not_exists=True)  # type: ignore[union-attr]
        db["snapshots"].create(  # type: ignore[union-attr]
            {"doc_id": str, "data": bytes, "compressed": int, "crc": int, "upto": int, "raw_size": int},
            pk="doc_id",
            if_not_exists=True,
        )
        db["documents"].create(  # type: ignore[union-attr]
            {"doc_id": str, "seed_client": int, "seed_clock": int}, pk="doc_id", if_not_exists=True
        )
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)  # type: ignore[union-attr]
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {row[0]}, this code reads {SCHEMA_VERSION}")

    # -- reading ------------------------------------------------------------------------

    def load(self, doc_id: str, *, salvage: bool = False) -> StoredDocument:
        """Everything stored for ``doc_id``. Raises StorageError on corruption unless ``salvage``."""
        with self._lock:
            self._check_open()
            try:
                return self._load(doc_id, salvage)
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot read document {doc_id!r} ({exc})") from exc

    def _load(self, doc_id: str, salvage: bool) -> StoredDocument:
        conn = self._conn
        updates: list[tuple[str, bytes]] = []
        skipped = 0
        counters = _Counters()
        upto = 0
        row = conn.execute(
            "SELECT data, compressed, crc, upto FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is not None:
            data, compressed, crc, upto = row
            label = f"the snapshot row of document {doc_id!r}"
            problem = self._check_row(data, crc)
            if problem is None and compressed:
                try:
                    data = zlib.decompress(data)
                except zlib.error as exc:
                    problem = f"does not decompress ({exc})"
            if problem is None:
                updates.append(("the snapshot", bytes(data)))
                counters.snapshot_bytes = len(row[0])
            elif salvage:
                skipped += 1
            else:
                raise StorageError(f"{self.path}: {label} is corrupt: {problem}; open with salvage=True")
        for row_id, data, crc in conn.execute(
            "SELECT id, data, crc FROM updates WHERE doc_id = ? AND id > ? ORDER BY id", (doc_id, upto)
        ):
            problem = self._check_row(data, crc)
            if problem is not None:
                if salvage:
                    skipped += 1
                    continue
                raise StorageError(
                    f"{self.path}: update row {row_id} of document {doc_id!r} is corrupt: {problem}; "
                    "open with salvage=True to load the other rows"
                )
            updates.append((f"update row {row_id}", bytes(data)))
            counters.log_bytes += len(data)
            counters.log_rows += 1
        seed = conn.execute(
            "SELECT seed_client, seed_clock FROM documents WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        self._counters[doc_id] = counters
        return StoredDocument(
            updates=updates,
            seed_client_id=None if seed is None else seed[0],
            seed_clock=0 if seed is None else seed[1],
            skipped=skipped,
        )

    @staticmethod
    def _check_row(data: object, crc: object) -> str | None:
        if not isinstance(data, bytes):
            return f"data is {type(data).__name__}, not a blob"
        if zlib.crc32(data) != crc:
            return "checksum mismatch"
        return None

    def wants_compaction(self, doc_id: str, extra_bytes: int) -> bool:
        """Whether appending ``extra_bytes`` more makes the log worth folding into a snapshot."""
        counters = self._counters.setdefault(doc_id, _Counters())
        log_bytes = counters.log_bytes + extra_bytes
        return counters.log_rows + 1 > self.compact_max_rows or log_bytes > max(
            self.compact_min_bytes, counters.snapshot_bytes
        )

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(f"{self.path}{suffix}")
            if candidate.exists():
                total += candidate.stat().st_size
        return total

    def document_bytes(self, doc_id: str) -> int:
        """Stored bytes of ``doc_id``: its snapshot (compressed as stored) plus its update log.

        Compaction (:meth:`wants_compaction`) folds the log into the snapshot once the log outgrows
        ``max(compact_min_bytes, snapshot)`` or ``compact_max_rows``, so this stays under about
        twice the snapshot plus ``compact_min_bytes``.
        """
        counters = self._counters.get(doc_id, _Counters())
        return counters.snapshot_bytes + counters.log_bytes

    def snapshot_size(self, doc_id: str) -> int:
        """Stored size of ``doc_id``'s snapshot (0 if it has none yet)."""
        return self._counters.get(doc_id, _Counters()).snapshot_bytes

    # -- writing ------------------------------------------------------------------------

    def generation(self, doc_id: str) -> int:
        """How many times ``doc_id`` was cleared; pass it to :meth:`commit` with what was read."""
        return self._generations.get(doc_id, 0)

    def commit(
        self, doc_id: str, updates: list[bytes], snapshot: bytes | None, *, generation: int | None = None
    ) -> None:
        """Append ``updates`` durably; with ``snapshot`` (the full document), also compact. Blocking.

        With ``generation`` (from :meth:`generation`), nothing is written if ``doc_id``
        was cleared since: those updates belong to the history the clear dropped.
        """
        with self._lock:
            self._check_open()
            if generation is not None and generation != self.generation(doc_id):
                return
            try:
                self._commit(doc_id, updates, snapshot)
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot write document {doc_id!r} ({exc})") from exc

    def _commit(self, doc_id: str, updates: list[bytes], snapshot: bytes | None) -> None:
        conn = self._conn
        counters = self._counters.setdefault(doc_id, _Counters())
        stored = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO updates (doc_id, data, crc) VALUES (?, ?, ?)",
                [(doc_id, u, zlib.crc32(u)) for u in updates],
            )
            if snapshot is not None:
                (upto,) = conn.execute(
                    "SELECT COALESCE(MAX(id), 0) FROM updates WHERE doc_id = ?", (doc_id,)
                ).fetchone()
                stored = zlib.compress(snapshot, 6) if self.compress else snapshot
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (doc_id, data, compressed, crc, upto, raw_size) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (doc_id, stored, int(self.compress), zlib.crc32(stored), upto, len(snapshot)),
                )
                conn.execute("DELETE FROM updates WHERE doc_id = ? AND id <= ?", (doc_id, upto))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if stored is None:
            counters.log_bytes += sum(len(u) for u in updates)
            counters.log_rows += len(updates)
        else:
            counters.log_bytes = 0
            counters.log_rows = 0
            counters.snapshot_bytes = len(stored)
            # Give the pages of the deleted rows back and empty the WAL, so the file
            # set stays a small multiple of the snapshot.
            conn.execute("PRAGMA incremental_vacuum")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def set_seed_client(self, doc_id: str, client_id: int, clock: int) -> None:
        """Remember who seeded ``doc_id`` and that client's clock right after (durable at once)."""
        with self._lock:
            self._check_open()
            self._conn.execute(
                "INSERT OR REPLACE INTO documents (doc_id, seed_client, seed_clock) VALUES (?, ?, ?)",
                (doc_id, client_id, clock),
            )

    def clear(self, doc_id: str) -> None:
        """Forget everything stored for ``doc_id``."""
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            for table in ("updates", "snapshots", "documents"):
                conn.execute(f"DELETE FROM {table} WHERE doc_id = ?", (doc_id,))
            conn.execute("COMMIT")
            self._counters[doc_id] = _Counters()
            self._generations[doc_id] = self.generation(doc_id) + 1

    def document_ids(self) -> list[str]:
        """Every document with stored data."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT doc_id FROM updates UNION SELECT doc_id FROM snapshots ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: the store is closed")
