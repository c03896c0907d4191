"""The node's catalog (``node.sqlite``): which documents it holds, and what it knows about them.

A document's identity is its ID (a UUIDv7, made when the document is created and carried by
every ticket); its name is only a label, so two unrelated documents called "notes" never
merge. Each document also has a 32-byte secret that only its holders have (tickets carry it):
discovery advertises keyed hashes of it, and channel names are derived from it, so neither
reveals which document is meant to anyone who does not hold it.

Tables: ``documents`` (one row per held document), ``holders`` (addresses of other nodes
known to hold a document, to dial again after a restart), ``issued`` (tokens this node
issued, so that it can revoke them by user), ``revocations`` (signed by the document's
issuer; passed on to every holder met later, so revocation reaches nodes that were away).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from aetherflow_sdk import StorageError
from aetherflow_sdk.session import Permission

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, name TEXT NOT NULL, issuer BLOB NOT NULL, secret BLOB NOT NULL,
    token TEXT NOT NULL, permission TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holders (
    doc_id TEXT NOT NULL, node_id BLOB NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,
    seen REAL NOT NULL, PRIMARY KEY (doc_id, node_id, host, port));
CREATE TABLE IF NOT EXISTS issued (
    token_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, user TEXT NOT NULL, permission TEXT NOT NULL,
    expires REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS revocations (
    doc_id TEXT NOT NULL, token_id TEXT NOT NULL, until REAL NOT NULL, signature BLOB NOT NULL,
    PRIMARY KEY (doc_id, token_id));
"""

MAX_HOLDERS_PER_DOCUMENT = 64
"""Known holder addresses kept per document (the most recently seen)."""


@attrs.frozen(kw_only=True)
class DocumentRecord:
    """What the node keeps about one held document."""

    doc_id: str
    """The document's identity (a UUIDv7 text)."""
    name: str
    """A human label; not unique."""
    issuer: bytes
    """The node ID that issues tokens for this document (its creator)."""
    secret: bytes
    """32 bytes only holders have: keys discovery tags and channel names."""
    token: str
    """The token this node presents to other holders."""
    permission: Permission
    """This node's permission on the document."""

    @property
    def channel_name(self) -> bytes:
        """The channel this document travels on: a keyed hash, meaningless to a non-holder."""
        digest = hashlib.blake2b(
            self.doc_id.encode(), key=self.secret, digest_size=16, person=b"af-channel-v1"
        )
        return b"doc/" + digest.hexdigest().encode()


@attrs.frozen(kw_only=True)
class IssuedToken:
    token_id: str
    doc_id: str
    user: str
    permission: Permission
    expires: float
    revoked: bool


class Catalog:
    """The ``node.sqlite`` file. Small synchronous writes (a document opened, a holder seen)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(
                f"{path}: not a readable node catalog ({exc}); move it aside to start afresh"
            ) from None

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from None

    # -- documents ----------------------------------------------------------------------------

    def add_document(self, record: DocumentRecord) -> None:
        self._rows(
            "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
            record.doc_id,
            record.name,
            record.issuer,
            record.secret,
            record.token,
            record.permission.value,
            time.time(),
        )

    def documents(self) -> list[DocumentRecord]:
        rows = self._rows(
            "SELECT doc_id, name, issuer, secret, token, permission FROM documents ORDER BY created"
        )
        records = []
        for doc_id, name, issuer, secret, token, permission in rows:
            try:
                records.append(
                    DocumentRecord(
                        doc_id=str(doc_id),
                        name=str(name),
                        issuer=bytes(issuer),
                        secret=bytes(secret),
                        token=str(token),
                        permission=Permission(permission),
                    )
                )
            except (TypeError, ValueError):
                continue  # a damaged row: that document is not offered
        return records

    def document(self, doc_id: str) -> DocumentRecord | None:
        return next((r for r in self.documents() if r.doc_id == doc_id), None)

    def by_name(self, name: str) -> list[DocumentRecord]:
        return [r for r in self.documents() if r.name == name]

    # -- holders ------------------------------------------------------------------------------

    def add_holder(self, doc_id: str, node_id: bytes, address: tuple[str, int]) -> None:
        self._rows(
            "INSERT OR REPLACE INTO holders VALUES (?, ?, ?, ?, ?)",
            doc_id,
            node_id,
            address[0],
            address[1],
            time.time(),
        )
        self._rows(
            "DELETE FROM holders WHERE doc_id = ? AND rowid NOT IN"
            " (SELECT rowid FROM holders WHERE doc_id = ? ORDER BY seen DESC LIMIT ?)",
            doc_id,
            doc_id,
            MAX_HOLDERS_PER_DOCUMENT,
        )

    def holders(self, doc_id: str) -> list[tuple[bytes, tuple[str, int]]]:
        rows = self._rows(
            "SELECT node_id, host, port FROM holders WHERE doc_id = ? ORDER BY seen DESC", doc_id
        )
        return [(bytes(n), (str(h), int(p))) for n, h, p in rows]

    # -- issued tokens ------------------------------------------------------------------------

    def add_issued(
        self, token_id: str, doc_id: str, user: str, permission: Permission, expires: float
    ) -> None:
        self._rows(
            "INSERT OR REPLACE INTO issued VALUES (?, ?, ?, ?, ?, 0)",
            token_id,
            doc_id,
            user,
            permission.value,
            expires,
        )

    def issued(self, doc_id: str, user: str | None = None) -> list[IssuedToken]:
        rows = self._rows(
            "SELECT token_id, doc_id, user, permission, expires, revoked FROM issued WHERE doc_id = ?", doc_id
        )
        return [
            IssuedToken(
                token_id=str(t),
                doc_id=str(d),
                user=str(u),
                permission=Permission(p),
                expires=float(e),
                revoked=bool(r),
            )
            for t, d, u, p, e, r in rows
            if user is None or u == user
        ]

    def mark_revoked(self, token_id: str) -> None:
        self._rows("UPDATE issued SET revoked = 1 WHERE token_id = ?", token_id)

    # -- revocations --------------------------------------------------------------------------

    def add_revocation(self, doc_id: str, token_id: str, until: float, signature: bytes) -> bool:
        """Record a signed revocation; False if it was known already."""
        known = self._rows("SELECT 1 FROM revocations WHERE doc_id = ? AND token_id = ?", doc_id, token_id)
        if known:
            return False
        self._rows("INSERT INTO revocations VALUES (?, ?, ?, ?)", doc_id, token_id, until, signature)
        return True

    def revocations(self, doc_id: str, now: float) -> list[tuple[str, float, bytes]]:
        """(token ID, until, signature) of the revocations still in force for ``doc_id``."""
        rows = self._rows(
            "SELECT token_id, until, signature FROM revocations WHERE doc_id = ? AND until > ?", doc_id, now
        )
        return [(str(t), float(u), bytes(s)) for t, u, s in rows]
