"""Persistence: sessions survive closing and reopening the store; corrupt rows are skipped and reported."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from aetherflow_sdk import AuthError
from aetherflow_sdk.session import (
    MemorySessionStore,
    Permission,
    SessionConfig,
    SessionManager,
    SessionState,
    SqliteSessionStore,
)
from tests.session._helpers import T0, counting_ids, fixed_random

CONFIG = SessionConfig(ttl=60, quiet_period=30, heartbeat_interval=15, handshake_timeout=10, persist_slack=0)
HOLDER = b"\x01" * 32


def _open(store: SqliteSessionStore | MemorySessionStore, seed: int = 1) -> SessionManager:
    return SessionManager(CONFIG, store=store, new_session_id=counting_ids(), random_bytes=fixed_random(seed))


def _populate(manager: SessionManager, n: int) -> dict[str, bytes]:
    secrets = {}
    for i in range(n):
        session, secret = manager.create(
            user=f"user{i % 3}",
            document=f"doc{i}",
            permission=Permission.READ_ONLY if i % 2 else Permission.READ_WRITE,
            holder=HOLDER,
            issuer=b"\x09" * 32,
            token_id=f"jti{i}",
            not_after=T0 + 3600,
            connection_id=i,
            now=T0,
        )
        manager.establish(session.session_id, T0)
        secrets[str(session.session_id)] = secret
    return secrets


def test_sqlite_round_trip_and_resume_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    manager = _open(store)
    secrets = _populate(manager, 20)
    first = manager.by_user("user0")
    closed = first[0].session_id
    manager.close(closed, T0 + 1)
    heartbeating = first[1].session_id
    manager.heartbeat(heartbeating, T0 + 50)  # persisted (persist_slack=0): lives until T0+110
    store.close()

    # "Restart": a new process would do exactly this.
    store = SqliteSessionStore(path)
    assert store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    restarted = _open(store, seed=2)
    report = restarted.load(T0 + 61)  # past the TTL of all but the heartbeating session
    assert report.restored == 1 and report.expired == 18 and report.corrupt == 0
    session = restarted.get(heartbeating)
    assert session is not None and session.state is SessionState.DISCONNECTING
    assert session.permission is Permission.READ_ONLY or session.permission is Permission.READ_WRITE
    assert restarted.get(closed) is None
    # Its holder resumes it with the secret it was given before the restart.
    resumed, _ = restarted.resume(
        heartbeating, secrets[str(heartbeating)], holder=HOLDER, connection_id="new", now=T0 + 62
    )
    assert resumed.state is SessionState.ACTIVE
    store.close()

    # The expired ones were deleted from disk.
    store = SqliteSessionStore(path)
    assert len(store.load().sessions) == 1
    store.close()


def test_sessions_come_back_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path, synchronous="NORMAL")
    manager = _open(store)
    _populate(manager, 5)
    before = {
        s.session_id: s for s in (manager.get(e.session_id) for e in iter(manager.next_event, None)) if s
    }
    store.close()
    store = SqliteSessionStore(path)
    loaded = {s.session_id: s for s in store.load().sessions}
    assert set(loaded) == set(before)
    for session_id, session in before.items():
        # State and connection are not what matters after a restart; everything else must match.
        assert loaded[session_id].user == session.user
        assert loaded[session_id].document == session.document
        assert loaded[session_id].permission is session.permission
        assert loaded[session_id].resumption_hash == session.resumption_hash
        assert loaded[session_id].not_after == session.not_after
        assert loaded[session_id].holder == session.holder
    store.close()


def test_corrupt_rows_are_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    manager = _open(store)
    _populate(manager, 6)
    store.close()
    raw = sqlite3.connect(path)
    ids = [row[0] for row in raw.execute("SELECT session_id FROM sessions ORDER BY session_id")]
    raw.execute("UPDATE sessions SET permission = 'admin' WHERE session_id = ?", (ids[0],))
    raw.execute("UPDATE sessions SET holder = x'0102' WHERE session_id = ?", (ids[1],))
    raw.execute("UPDATE sessions SET expires_at = 'soon' WHERE session_id = ?", (ids[2],))
    raw.execute("UPDATE sessions SET session_id = 'not-a-uuid' WHERE session_id = ?", (ids[3],))
    raw.commit()
    raw.close()

    store = SqliteSessionStore(path)
    restarted = _open(store)
    with caplog.at_level(logging.WARNING):
        report = restarted.load(T0 + 1)
    assert report.restored == 2
    assert report.corrupt == 4
    problems = {row.key: row.problem for row in report.loaded.corrupt}
    assert set(problems) == {ids[0], ids[1], ids[2], "not-a-uuid"}
    assert "permission" in problems[ids[0]] or "admin" in problems[ids[0]]
    assert "holder" in problems[ids[1]]
    assert "expires_at" in problems[ids[2]]
    assert sum("corrupt session row" in r.getMessage() for r in caplog.records) == 4
    store.close()


def test_memory_store_round_trip() -> None:
    store = MemorySessionStore()
    manager = _open(store)
    secrets = _populate(manager, 3)
    restarted = _open(store)
    assert restarted.load(T0 + 1).restored == 3
    for session_id, secret in secrets.items():
        session = next(s for s in store.load().sessions if str(s.session_id) == session_id)
        restarted.resume(session.session_id, secret, holder=HOLDER, connection_id=session_id, now=T0 + 2)
    with pytest.raises(AuthError):
        restarted.resume(session.session_id, b"x" * 32, holder=HOLDER, connection_id="z", now=T0 + 2)


def test_expiry_sweep_deletes_from_sqlite_in_one_batch(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    manager = _open(store)
    _populate(manager, 50)
    manager.handle_timer(T0 + 61)
    assert len(manager) == 0
    assert store.load().sessions == ()
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_revocations_survive_a_restart_until_they_lapse(tmp_path: Path, kind: str) -> None:
    from aetherflow_sdk.session import TokenVerifier

    def open_store() -> SqliteSessionStore | MemorySessionStore:
        return SqliteSessionStore(tmp_path / "r.db") if kind == "sqlite" else memory

    memory = MemorySessionStore()
    store = open_store()
    store.add_revocation("jti-forever", float("inf"))
    store.add_revocation("jti-short", T0 + 10)
    store.add_revocation("jti-short", T0 + 5)  # a shorter second entry does not shorten it
    store.close()
    store = open_store()
    assert store.revocations(T0) == ["jti-forever", "jti-short"]
    assert TokenVerifier(revoked=store.revocations(T0)).is_revoked("jti-short")
    assert store.revocations(T0 + 10) == ["jti-forever"]  # lapsed with the token it revoked
    store.close()
