"""The session manager on a virtual clock: lifecycle, indexes, events, idle and expiry at scale."""

from __future__ import annotations

import random
import uuid

import pytest

from aetherflow_sdk import AuthError, LocalProtocolError
from aetherflow_sdk.session import (
    InvalidTransition,
    MemorySessionStore,
    Permission,
    SessionConfig,
    SessionManager,
    SessionState,
    SessionStateChanged,
    Trigger,
)
from tests.session._helpers import T0, counting_ids, create_session, fixed_random

CONFIG = SessionConfig(ttl=60, quiet_period=30, heartbeat_interval=15, handshake_timeout=10)


def drain(manager: SessionManager) -> list[SessionStateChanged]:
    events = []
    for _ in range(1_000_000):
        event = manager.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("event queue never drained")


def make(store: MemorySessionStore | None = None, seed: int = 1) -> SessionManager:
    return SessionManager(CONFIG, store=store, new_session_id=counting_ids(), random_bytes=fixed_random(seed))


def test_lifecycle_emits_an_event_per_state_change() -> None:
    manager = make()
    sid = create_session(manager, now=T0)
    manager.establish(sid, T0 + 1)
    manager.heartbeat(sid, T0 + 2)  # no state change, no event
    manager.handle_timer(T0 + 31)  # quiet period passed: IDLE
    manager.touch(sid, T0 + 32)  # activity: ACTIVE again
    manager.detach(sid, T0 + 33)
    manager.close(sid, T0 + 34)
    changes = [(e.old_state, e.new_state, e.trigger) for e in drain(manager)]
    S, T = SessionState, Trigger
    assert changes == [
        (None, S.CONNECTING, None),
        (S.CONNECTING, S.ACTIVE, T.ESTABLISH),
        (S.ACTIVE, S.IDLE, T.QUIET),
        (S.IDLE, S.ACTIVE, T.ACTIVITY),
        (S.ACTIVE, S.DISCONNECTING, T.DETACH),
        (S.DISCONNECTING, S.CLOSED, T.CLOSE),
    ]
    assert manager.get(sid) is None and len(manager) == 0


def test_indexes_by_id_connection_and_user() -> None:
    manager = make()
    a1 = create_session(manager, user="alice", connection_id="c1")
    a2 = create_session(manager, user="alice", connection_id="c2")
    b1 = create_session(manager, user="bob", connection_id="c3")
    session = manager.get(a1)
    assert session is not None and session.user == "alice"
    by_connection = manager.by_connection("c2")
    assert by_connection is not None and by_connection.session_id == a2
    assert [s.session_id for s in manager.by_user("alice")] == [a1, a2]
    assert [s.session_id for s in manager.by_user("bob")] == [b1]
    assert manager.by_user("carol") == ()
    manager.close(a1, T0)
    assert [s.session_id for s in manager.by_user("alice")] == [a2]
    assert manager.by_connection("c1") is None
    manager.establish(a2, T0)
    manager.detach(a2, T0)
    assert manager.by_connection("c2") is None  # a detached session has no connection
    assert [s.session_id for s in manager.by_user("alice")] == [a2]  # but is still alice's


def test_heartbeat_returns_remaining_ttl_capped_by_token_expiry() -> None:
    manager = make()
    sid = create_session(manager, not_after=T0 + 100)
    manager.establish(sid, T0)
    assert manager.heartbeat(sid, T0 + 10) == pytest.approx(60)
    assert manager.heartbeat(sid, T0 + 70) == pytest.approx(30)  # the token ends at T0+100
    manager.handle_timer(T0 + 100)
    assert manager.get(sid) is None
    assert manager.statistics().expired == 1


def test_misuse_raises_clear_errors() -> None:
    manager = make()
    sid = create_session(manager)
    with pytest.raises(InvalidTransition, match="CONNECTING cannot take event 'heartbeat'"):
        manager.heartbeat(sid, T0)
    with pytest.raises(LocalProtocolError, match="already carries session"):
        create_session(manager, connection_id="c1")
    manager.close(sid, T0)
    with pytest.raises(LocalProtocolError, match="no live session"):
        manager.touch(sid, T0)


def test_connecting_session_times_out() -> None:
    manager = make()
    sid = create_session(manager, now=T0)
    assert manager.get_timer() == pytest.approx(T0 + 10)
    manager.handle_timer(T0 + 9.9)
    assert manager.get(sid) is not None
    manager.handle_timer(T0 + 10)
    assert manager.get(sid) is None


def test_resume_checks_secret_and_holder_and_rotates_secret() -> None:
    manager = make()
    session, secret = manager.create(
        user="alice",
        document="d",
        permission=Permission.READ_ONLY,
        holder=b"\x01" * 32,
        issuer=b"\x09" * 32,
        token_id="j",
        not_after=T0 + 1000,
        connection_id="c1",
        now=T0,
    )
    sid = session.session_id
    manager.establish(sid, T0)
    manager.detach(sid, T0 + 1)
    with pytest.raises(AuthError) as wrong_secret:
        manager.resume(sid, b"\x00" * 32, holder=b"\x01" * 32, connection_id="c2", now=T0 + 2)
    assert wrong_secret.value.reason == "unknown_session"
    with pytest.raises(AuthError) as wrong_node:
        manager.resume(sid, secret, holder=b"\x02" * 32, connection_id="c2", now=T0 + 2)
    assert wrong_node.value.reason == "wrong_holder"
    resumed, new_secret = manager.resume(sid, secret, holder=b"\x01" * 32, connection_id="c2", now=T0 + 2)
    assert resumed.state is SessionState.ACTIVE and resumed.connection_id == "c2"
    assert new_secret != secret
    # Once the client is heard on the new connection it holds the new secret: the old one is dead.
    manager.touch(sid, T0 + 2.5)
    with pytest.raises(AuthError):
        manager.resume(sid, secret, holder=b"\x01" * 32, connection_id="c3", now=T0 + 3)
    # A secret is bound to its session: presenting it for another one fails.
    other = create_session(manager, connection_id="c9")
    manager.establish(other, T0)
    with pytest.raises(AuthError):
        manager.resume(other, new_secret, holder=b"\x01" * 32, connection_id="c4", now=T0 + 3)
    # Resuming from a still-ACTIVE session moves it to the new connection.
    moved, _ = manager.resume(sid, new_secret, holder=b"\x01" * 32, connection_id="c5", now=T0 + 4)
    assert moved.connection_id == "c5" and manager.by_connection("c2") is None
    # Past the TTL there is nothing to resume.
    manager.detach(sid, T0 + 5)
    manager.handle_timer(T0 + 4 + 60)
    with pytest.raises(AuthError) as gone:
        manager.resume(sid, new_secret, holder=b"\x01" * 32, connection_id="c6", now=T0 + 70)
    assert gone.value.reason == "unknown_session"


def test_close_token_closes_its_sessions() -> None:
    manager = make()
    create_session(manager, connection_id="x")
    create_session(manager, connection_id="y")
    assert len(manager.close_token("jti-x", T0)) == 1
    assert len(manager) == 1


@pytest.mark.parametrize("seed", [7, 2024])
def test_idle_and_expiry_for_10k_sessions_on_a_virtual_clock(seed: int) -> None:
    """10,000 sessions with random heartbeat and activity habits: each ends exactly when it should."""
    rng = random.Random(seed)
    manager = make(seed=seed)
    n = 10_000
    expected_idle_at: dict[uuid.UUID, float] = {}
    expected_close_at: dict[uuid.UUID, float] = {}
    last_heartbeat: dict[uuid.UUID, float] = {}
    for i in range(n):
        start = T0 + rng.uniform(0, 10)
        sid = create_session(manager, user=f"u{i % 997}", connection_id=i, now=start)
        manager.establish(sid, start)
        last_heartbeat[sid] = start
    ids = list(last_heartbeat)
    # For 200 virtual seconds, a random half of the sessions heartbeat every 15 s; a tenth also send
    # application messages. Time advances by the manager's own timer, never by sleeping.
    heartbeaters = set(rng.sample(ids, n // 2))
    chatty = set(rng.sample(sorted(heartbeaters), n // 10))
    last_activity = {sid: last_heartbeat[sid] for sid in ids}
    now = T0
    step = 0
    try:
        for step in range(1, 14):
            now = T0 + 15 * step
            manager.handle_timer(now)
            for sid in heartbeaters:
                manager.heartbeat(sid, now)
                last_heartbeat[sid] = now
            for sid in chatty:
                manager.touch(sid, now)
                last_activity[sid] = now
        # Let everything run out: jump timer by timer, bounded.
        for _ in range(100_000):
            timer = manager.get_timer()
            if timer is None:
                break
            now = timer
            manager.handle_timer(now)
        assert len(manager) == 0
    except AssertionError:
        print(f"seed={seed} step={step}")
        raise
    for sid in ids:
        expected_close_at[sid] = last_heartbeat[sid] + 60
        expected_idle_at[sid] = last_activity[sid] + 30
    events = drain(manager)
    closed_at = {e.session_id: e.at for e in events if e.new_state is SessionState.CLOSED}
    idle_at = {e.session_id: e.at for e in events if e.new_state is SessionState.IDLE}
    assert set(closed_at) == set(ids), f"seed={seed}"
    for sid in ids:
        # Timers fire exactly at their deadline (or at the next handle_timer call during the 15 s steps).
        assert expected_close_at[sid] <= closed_at[sid] <= expected_close_at[sid] + 15, f"seed={seed}"
        if expected_idle_at[sid] < expected_close_at[sid]:
            assert sid in idle_at, f"seed={seed}"
            assert expected_idle_at[sid] <= idle_at[sid] <= expected_idle_at[sid] + 15, f"seed={seed}"
    statistics = manager.statistics()
    assert statistics.created == n and statistics.expired == n and statistics.live == 0
    # Lazy deletion keeps the heap bounded: at most two entries per live session ever.
    assert manager._wheel == {} and manager._buckets == []


def test_statistics_count_states() -> None:
    manager = make()
    a = create_session(manager, connection_id=1)
    create_session(manager, connection_id=2)
    manager.establish(a, T0)
    stats = manager.statistics()
    assert stats.by_state[SessionState.ACTIVE] == 1 and stats.by_state[SessionState.CONNECTING] == 1
    assert SessionState.CLOSED not in stats.by_state


def test_load_needs_a_store() -> None:
    with pytest.raises(LocalProtocolError, match="no store"):
        make().load(T0)


def test_a_connecting_session_cannot_be_resumed() -> None:
    manager = make()
    session, secret = manager.create(
        user="a",
        document="d",
        permission=Permission.READ_WRITE,
        holder=b"\x01" * 32,
        issuer=b"\x09" * 32,
        token_id="j",
        not_after=T0 + 100,
        connection_id="c1",
        now=T0,
    )
    with pytest.raises(AuthError) as info:
        manager.resume(session.session_id, secret, holder=b"\x01" * 32, connection_id="c2", now=T0)
    assert info.value.reason == "unknown_session"


@pytest.mark.parametrize("expiring", [1, 3, 6])  # of 6: removal one by one, and rebuilt indexes
def test_a_sweep_emits_an_event_per_expired_session_and_keeps_the_indexes(expiring: int) -> None:
    manager = make()
    ids = []
    for i in range(6):
        not_after = T0 + 5 if i < expiring else T0 + 86_400
        sid = create_session(manager, user=f"u{i % 2}", connection_id=i, not_after=not_after)
        manager.establish(sid, T0)
        ids.append(sid)
    drain(manager)
    assert manager.handle_timer(T0 + 10) == ids[:expiring]
    S = SessionState
    assert [(e.session_id, e.user, e.old_state, e.new_state, e.trigger, e.at) for e in drain(manager)] == [
        (sid, f"u{i % 2}", S.ACTIVE, S.CLOSED, Trigger.EXPIRE, T0 + 10)
        for i, sid in enumerate(ids[:expiring])
    ]
    survivors = ids[expiring:]
    for i, sid in enumerate(ids):
        alive = sid in survivors
        assert (manager.get(sid) is not None) is alive and (manager.by_connection(i) is not None) is alive
    for user in ("u0", "u1"):
        assert [s.session_id for s in manager.by_user(user)] == [
            sid for i, sid in enumerate(ids) if sid in survivors and f"u{i % 2}" == user
        ]
    statistics = manager.statistics()
    assert statistics.live == len(survivors) == statistics.by_state[S.ACTIVE]
    assert statistics.expired == expiring
    keys = {sid.int for sid in survivors}
    assert manager._quiet_armed <= keys and set(manager._persisted_expiry) <= keys
    manager.handle_timer(T0 + 86_400)
    assert len(manager) == 0 and manager._by_user == {} and manager._by_connection == {}
    assert [e.session_id for e in drain(manager) if e.new_state is S.CLOSED] == survivors


@pytest.mark.parametrize("max_events", [4, 2])
def test_the_event_queue_keeps_the_last_max_events_across_a_sweep(max_events: int) -> None:
    config = SessionConfig(ttl=60, quiet_period=30, heartbeat_interval=15, max_events=max_events)
    manager = SessionManager(config, new_session_id=counting_ids(), random_bytes=fixed_random(1))
    ids = [
        create_session(manager, connection_id=i, not_after=T0 + 5 if i < 3 else T0 + 86_400) for i in range(4)
    ]
    manager.handle_timer(T0 + 6)  # 4 creations, then 3 expiries in one sweep: the oldest 3 (or 5) go
    kept = [(e.session_id, e.new_state) for e in drain(manager)]
    everything = [(ids[3], SessionState.CONNECTING)] + [(sid, SessionState.CLOSED) for sid in ids[:3]]
    assert kept == everything[-max_events:]
    assert manager.next_event() is None
