"""Where sessions survive a restart: the :class:`SessionStore` interface and two implementations.

A relay restart must not log everyone out. The manager writes a session when it
is created or resumed (the resumption hash changes then) and when a heartbeat
moved its expiry far enough; it deletes it when it closes. After a restart
:meth:`SessionManager.load` brings back every stored session that is still
valid, DISCONNECTING, so that its holder can resume it with its secret.

Rows read back from disk are untrusted: a row that does not decode into a valid
:class:`Session` is skipped, logged and listed in :attr:`LoadedSessions.corrupt`,
never a crash.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
import sqlite_utils

from aetherflow_sdk.session._records import Permission, Session
from aetherflow_sdk.session._state import SessionState

logger = logging.getLogger(__name__)

NODE_ID_LENGTH = 32
RESUMPTION_HASH_LENGTH = 32


@attrs.frozen(kw_only=True)
class CorruptRow:
    """A stored row that could not be turned back into a session."""

    key: str
    """The row's primary key as text (or ``rowid=N`` when even the key is unreadable)."""
    problem: str
    """What was wrong with it."""


@attrs.frozen(kw_only=True)
class LoadedSessions:
    """What a store holds: the sessions that decoded, and the rows that did not."""

    sessions: tuple[Session, ...]
    """Every readable session, in no particular order (the manager drops expired ones)."""
    corrupt: tuple[CorruptRow, ...]
    """Rows skipped because they were unreadable; each was also logged as a warning."""


class SessionStore(Protocol):
    """Durable (or not) storage of sessions, keyed by session ID."""

    def put(self, session: Session) -> None:
        """Insert or replace one session."""

    def delete(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Remove sessions (missing ones are ignored). Batched, because an expiry sweep removes many."""

    def load(self) -> LoadedSessions:
        """Every stored session, skipping (and reporting) corrupt rows."""

    def add_revocation(self, token_id: str, until: float) -> None:
        """Remember that token ``token_id`` is revoked until Unix time ``until`` (its ``exp``, or inf)."""

    def revocations(self, now: float) -> list[str]:
        """Token IDs still revoked at ``now`` (older entries are forgotten: those tokens expired anyway)."""

    def close(self) -> None:
        """Release the store; later calls are errors."""


class MemorySessionStore:
    """A :class:`SessionStore` in a dict: for tests and for nodes that need no persistence."""

    def __init__(self) -> None:
        # Keyed by the UUID's int: hashing an int is done in C (a sweep deletes 100k at once).
        self._sessions: dict[int, Session] = {}
        self._revoked: dict[str, float] = {}

    def put(self, session: Session) -> None:
        self._sessions[session.session_id.int] = session

    def put_many(self, sessions: Iterable[Session]) -> None:
        """Insert or replace many sessions (bulk loading, migrations)."""
        for session in sessions:
            self.put(session)

    def delete(self, session_ids: Iterable[uuid.UUID]) -> None:
        sessions = self._sessions
        for session_id in session_ids:
            sessions.pop(session_id.int, None)

    def load(self) -> LoadedSessions:
        return LoadedSessions(sessions=tuple(self._sessions.values()), corrupt=())

    def add_revocation(self, token_id: str, until: float) -> None:
        self._revoked[token_id] = max(until, self._revoked.get(token_id, until))

    def revocations(self, now: float) -> list[str]:
        self._revoked = {jti: until for jti, until in self._revoked.items() if until > now}
        return sorted(self._revoked)

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._sessions)


_TABLE = "sessions"
_REVOKED_TABLE = "revoked_tokens"
_COLUMNS: dict[str, Any] = {
    "session_id": str,
    "user": str,
    "document": str,
    "permission": str,
    "holder": bytes,
    "issuer": bytes,
    "token_id": str,
    "state": str,
    "created_at": float,
    "last_activity": float,
    "expires_at": float,
    "not_after": float,
    "resumption_hash": bytes,
    "previous_resumption_hash": bytes,
    "previous_valid_until": float,
}
# Columns added after the first release, with the value an older row gets.
_ADDED_COLUMNS: dict[str, tuple[Any, object]] = {
    "previous_resumption_hash": (bytes, None),
    "previous_valid_until": (float, 0.0),
}


class SqliteSessionStore:
    """A :class:`SessionStore` in one SQLite file, through sqlite-utils, in WAL mode.

    ``synchronous="FULL"`` (the default) makes every write durable against
    power loss before :meth:`put` returns; ``"NORMAL"`` is durable against a
    crash of the process only, and faster (SQLite docs, "PRAGMA synchronous":
    in WAL mode NORMAL can lose the last commits on power loss, never corrupt).
    """

    def __init__(self, path: Path | str, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        self.path = Path(path)
        # isolation_level=None: autocommit, so each put() is its own durable transaction.
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = sqlite_utils.Database(self._connection)
        self._db.enable_wal()
        self._connection.execute(f"PRAGMA synchronous={synchronous}")
        table = self._db.table(_TABLE)
        if not table.exists():
            table.create(_COLUMNS, pk="session_id")
        else:
            present = set(table.columns_dict)
            for name, (kind, default) in _ADDED_COLUMNS.items():
                if name not in present:  # a store written before this column existed
                    table.add_column(name, kind, not_null_default=default)
        revoked = self._db.table(_REVOKED_TABLE)
        if not revoked.exists():
            revoked.create({"token_id": str, "until": float}, pk="token_id")
        # The replace statement is built once; sqlite-utils' upsert() re-inspects the table per call.
        self._put_sql = (
            f"INSERT OR REPLACE INTO [{_TABLE}] ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )

    def put(self, session: Session) -> None:
        self._connection.execute(self._put_sql, _row(session))

    def put_many(self, sessions: Iterable[Session]) -> None:
        """Insert or replace many sessions in one transaction (bulk loading, migrations)."""
        with self._connection:
            self._connection.execute("BEGIN")
            self._connection.executemany(self._put_sql, map(_row, sessions))

    def delete(self, session_ids: Iterable[uuid.UUID]) -> None:
        keys = [(str(session_id),) for session_id in session_ids]
        if not keys:
            return
        with self._connection:  # one transaction (one fsync) for the whole batch
            self._connection.execute("BEGIN")
            self._connection.executemany(f"DELETE FROM [{_TABLE}] WHERE session_id = ?", keys)

    def load(self) -> LoadedSessions:
        sessions: list[Session] = []
        corrupt: list[CorruptRow] = []
        cursor = self._connection.execute(f"SELECT rowid, {', '.join(_COLUMNS)} FROM [{_TABLE}]")
        for row in cursor:
            rowid, values = row[0], dict(zip(_COLUMNS, row[1:], strict=True))
            try:
                sessions.append(_parse_row(values))
            except ValueError as exc:
                key = values["session_id"] if isinstance(values["session_id"], str) else f"rowid={rowid}"
                logger.warning("skipping corrupt session row %s in %s: %s", key, self.path, exc)
                corrupt.append(CorruptRow(key=key, problem=str(exc)))
        return LoadedSessions(sessions=tuple(sessions), corrupt=tuple(corrupt))

    def add_revocation(self, token_id: str, until: float) -> None:
        # SQLite stores inf as a REAL fine; MAX keeps the longest revocation of a token.
        self._connection.execute(
            f"INSERT INTO [{_REVOKED_TABLE}] (token_id, until) VALUES (?, ?)"
            " ON CONFLICT(token_id) DO UPDATE SET until = MAX(until, excluded.until)",
            (token_id, until),
        )

    def revocations(self, now: float) -> list[str]:
        self._connection.execute(f"DELETE FROM [{_REVOKED_TABLE}] WHERE until <= ?", (now,))
        rows = self._connection.execute(f"SELECT token_id FROM [{_REVOKED_TABLE}] ORDER BY token_id")
        return [row[0] for row in rows if isinstance(row[0], str)]

    def close(self) -> None:
        self._connection.close()


def _row(session: Session) -> tuple[object, ...]:
    return (
        str(session.session_id),
        session.user,
        session.document,
        session.permission.value,
        session.holder,
        session.issuer,
        session.token_id,
        session.state.value,
        session.created_at,
        session.last_activity,
        session.expires_at,
        session.not_after,
        session.resumption_hash,
        session.previous_resumption_hash,
        session.previous_valid_until,
    )


def _text(values: dict[str, Any], name: str) -> str:
    value = values[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} is {type(value).__name__}, not text")
    return value


def _blob(values: dict[str, Any], name: str, length: int) -> bytes:
    value = values[name]
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{name} is not a {length}-byte blob")
    return value


def _time(values: dict[str, Any], name: str) -> float:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return float(value)


def _parse_row(values: dict[str, Any]) -> Session:
    """Rebuild a session from a stored row; raises ValueError, and only that, if the row is bad.

    Not ``*_untrusted`` (STYLE §3): that suffix promises BadPacket, for network bytes; a bad row is a
    ValueError that :meth:`SqliteSessionStore.load` turns into a :class:`CorruptRow`.
    """
    try:
        session_id = uuid.UUID(_text(values, "session_id"))
        permission = Permission(_text(values, "permission"))
        state = SessionState(_text(values, "state"))
    except ValueError as exc:
        raise ValueError(f"unreadable field: {exc}") from None
    return Session(
        session_id=session_id,
        user=_text(values, "user"),
        document=_text(values, "document"),
        permission=permission,
        holder=_blob(values, "holder", NODE_ID_LENGTH),
        issuer=_blob(values, "issuer", NODE_ID_LENGTH),
        token_id=_text(values, "token_id"),
        state=state,
        connection_id=None,
        created_at=_time(values, "created_at"),
        last_activity=_time(values, "last_activity"),
        expires_at=_time(values, "expires_at"),
        not_after=_time(values, "not_after"),
        resumption_hash=_blob(values, "resumption_hash", RESUMPTION_HASH_LENGTH),
        previous_resumption_hash=(
            None
            if values["previous_resumption_hash"] is None
            else _blob(values, "previous_resumption_hash", RESUMPTION_HASH_LENGTH)
        ),
        previous_valid_until=_time(values, "previous_valid_until"),
    )
