"""The session manager: sans-I/O, driven by ``now``.

It holds every live session of a node or relay, indexed three ways in dicts
(session ID, connection ID, user), so that each lookup is O(1). Time only moves
when the caller says so: every method that depends on time takes ``now``, and
expiry is driven the aioquic way, by :meth:`SessionManager.get_timer` and
:meth:`SessionManager.handle_timer`.

``now`` is **Unix time in seconds** (``time.time()`` in the async shell), not a
monotonic clock: sessions outlive the process (they are persisted) and end no
later than their token's ``exp``, which is Unix time too.

Timers are a timing wheel with lazy deletion: buckets of ``timer_granularity``
seconds (a dict of lists), plus a small heap of the bucket numbers in use. A
heartbeat does not touch the wheel: it only moves the session's expiry later.
When a bucket comes due, each session in it is checked; if its deadline moved,
it goes into a later bucket. So each session has at most two entries (expiry
and quiet period), a heartbeat is O(1), and a sweep of n due sessions is O(n)
plus O(log b) per bucket, with no per-session heap work (``aetherflow bench
sessions`` measures it: under 1 us per expired session on the project machine).
A sweep queues its expiries as one batch entry that :meth:`SessionManager.next_event`
unrolls into one event per session: a tuple per session made the garbage collector
walk every live object, most of a 100k sweep's time.
Timers fire at the end of their bucket, so at most one granularity late.
Internally sessions are keyed by ``session_id.int``: hashing an int is done in
C, hashing a ``uuid.UUID`` calls Python code.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import operator
import os
import uuid
from collections import Counter, deque
from collections.abc import Callable, Hashable

import attrs

from aetherflow_sdk._errors import AuthError, LocalProtocolError
from aetherflow_sdk._uuid7 import uuid7
from aetherflow_sdk.session._records import (
    Permission,
    Session,
    SessionConfig,
    SessionManagerStatistics,
    SessionStateChanged,
)
from aetherflow_sdk.session._state import TRANSITIONS, SessionState, Trigger, transition
from aetherflow_sdk.session._store import LoadedSessions, SessionStore

RESUMPTION_SECRET_LENGTH = 32  # 256 bits: not guessable within any TTL

_EXPIRY = 0
_QUIET = 1

# The states the EXPIRE trigger leaves, from the table: one set lookup per session in a sweep.
_EXPIRABLE = frozenset(state for state, trigger in TRANSITIONS if trigger is Trigger.EXPIRE)
_state_of = operator.attrgetter("state")
_session_id_of = operator.attrgetter("session_id")

# (session key, user, document, old state, new state, trigger, at): see SessionStateChanged.
_RawEvent = tuple[int, str, str, SessionState | None, SessionState, Trigger | None, float]


class _ExpiredBatch:
    """The events of one expiry sweep, as one queue entry: one SessionStateChanged per session.

    A tuple per expired session costs little to build, but 100k of them at once set off
    Python's cyclic garbage collector over every live object (most of a sweep's time);
    the expired sessions themselves (whose ``state`` is still the old state) carry it all.
    """

    __slots__ = ("at", "next", "sessions")

    def __init__(self, sessions: list[Session], at: float) -> None:
        self.sessions = sessions
        self.next = 0
        self.at = at


# Heard from the client on its (resumed) connection: it holds the newest secret, so the
# previous one is retired.
_CONFIRMED_FIELDS: dict[str, object] = {"previous_resumption_hash": None, "previous_valid_until": 0.0}


def resumption_hash(session_id: uuid.UUID, secret: bytes) -> bytes:
    """What is stored instead of a resumption secret: BLAKE2b keyed by the secret, over the session ID.

    Keying by the session ID's bytes binds the secret to that one session: the
    same secret presented for another session does not match.
    """
    return hashlib.blake2b(session_id.bytes, key=secret, digest_size=32, person=b"af-resume-v1").digest()


@attrs.frozen(kw_only=True)
class LoadReport:
    """What :meth:`SessionManager.load` found in the store."""

    restored: int
    """Sessions brought back, DISCONNECTING, waiting for their holders to resume them."""
    expired: int
    """Stored sessions already past their deadline (deleted from the store)."""
    corrupt: int
    """Rows skipped because they were unreadable (see the store's ``LoadedSessions.corrupt``)."""
    loaded: LoadedSessions
    """The raw result from the store, with each corrupt row and its problem."""


class SessionManager:
    """Every live session of this node, with its timers. Not thread-safe; one task drives it."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        store: SessionStore | None = None,
        new_session_id: Callable[[], uuid.UUID] = uuid7,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config or SessionConfig()
        self._store = store
        self._new_session_id = new_session_id
        self._random_bytes = random_bytes
        self._granularity = self.config.timer_granularity
        self._sessions: dict[int, Session] = {}
        self._by_connection: dict[Hashable, int] = {}
        self._by_user: dict[str, set[int]] = {}
        self._wheel: dict[int, list[tuple[int, int]]] = {}
        self._buckets: list[int] = []
        self._quiet_armed: set[int] = set()
        self._persisted_expiry: dict[int, float] = {}
        # Bounded: a node that never drains events must not grow without limit (oldest go first).
        self._events: deque[_RawEvent | _ExpiredBatch] = deque()
        self._pending_events = 0  # events in _events (a batch holds many)
        self._by_state = dict.fromkeys(SessionState, 0)
        self._created = self._resumed = self._expired = self._closed = self._restored = 0
        self._resumed_with_previous = 0

    # -- lookups (O(1)) ------------------------------------------------------------------------------

    def get(self, session_id: uuid.UUID) -> Session | None:
        """The live session with this ID, or None."""
        return self._sessions.get(session_id.int)

    def by_connection(self, connection_id: Hashable) -> Session | None:
        """The live session carried by this connection, or None."""
        key = self._by_connection.get(connection_id)
        return None if key is None else self._sessions[key]

    def by_user(self, user: str) -> tuple[Session, ...]:
        """Every live session of this user (one user may hold several), oldest first."""
        keys = self._by_user.get(user)
        if not keys:
            return ()
        sessions = self._sessions
        return tuple([sessions[k] for k in sorted(keys)])

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def store(self) -> SessionStore | None:
        """Where sessions (and revocations) are persisted, if anywhere."""
        return self._store

    def statistics(self) -> SessionManagerStatistics:
        """Counters: live sessions per state, and how many were created, resumed, expired, closed."""
        return SessionManagerStatistics(
            live=len(self._sessions),
            by_state={s: n for s, n in self._by_state.items() if s is not SessionState.CLOSED},
            created=self._created,
            resumed=self._resumed,
            resumed_with_previous_secret=self._resumed_with_previous,
            expired=self._expired,
            closed=self._closed,
            restored=self._restored,
        )

    def next_event(self) -> SessionStateChanged | None:
        """The oldest state change not yet taken, or None."""
        if not self._events:
            return None
        self._pending_events -= 1
        entry = self._events[0]
        if isinstance(entry, _ExpiredBatch):
            session = entry.sessions[entry.next]
            entry.next += 1
            if entry.next == len(entry.sessions):
                self._events.popleft()
            return SessionStateChanged(
                session_id=session.session_id,
                user=session.user,
                document=session.document,
                old_state=session.state,
                new_state=SessionState.CLOSED,
                trigger=Trigger.EXPIRE,
                at=entry.at,
            )
        self._events.popleft()
        key, user, document, old_state, new_state, trigger, at = entry
        # Built here, not when the change happened: a sweep of 100k sessions stays cheap.
        return SessionStateChanged(
            session_id=uuid.UUID(int=key),
            user=user,
            document=document,
            old_state=old_state,
            new_state=new_state,
            trigger=trigger,
            at=at,
        )

    # -- lifecycle ------------------------------------------------------------------------------------

    def create(
        self,
        *,
        user: str,
        document: str,
        permission: Permission,
        holder: bytes,
        issuer: bytes,
        token_id: str,
        not_after: float,
        connection_id: Hashable,
        now: float,
    ) -> tuple[Session, bytes]:
        """A new CONNECTING session for a verified token, and its resumption secret.

        The secret is returned once, to be sent to the holder; only its hash is
        kept (and stored). Call :meth:`establish` once the handshake reply is sent.
        """
        if connection_id in self._by_connection:
            raise LocalProtocolError(
                f"connection {connection_id!r} already carries session"
                f" {uuid.UUID(int=self._by_connection[connection_id])};"
                " close it before creating another on the same connection"
            )
        if not_after <= now:
            raise LocalProtocolError(f"cannot create a session whose token expired at {not_after}")
        session_id = self._new_session_id()
        if session_id.int in self._sessions:
            raise LocalProtocolError(f"session ID generator returned {session_id} twice")
        secret = self._random_bytes(RESUMPTION_SECRET_LENGTH)
        session = Session(
            session_id=session_id,
            user=user,
            document=document,
            permission=permission,
            holder=holder,
            issuer=issuer,
            token_id=token_id,
            state=SessionState.CONNECTING,
            connection_id=connection_id,
            created_at=now,
            last_activity=now,
            expires_at=now + self.config.handshake_timeout,
            not_after=not_after,
            resumption_hash=resumption_hash(session_id, secret),
        )
        self._add(session, now)
        self._created += 1
        self._persist(session)
        return session, secret

    def establish(self, session_id: uuid.UUID, now: float) -> Session:
        """CONNECTING -> ACTIVE: the handshake reply went out. The TTL starts now."""
        session = self._require(session_id)
        return self._change(
            session, Trigger.ESTABLISH, now, expires_at=now + self.config.ttl, last_activity=now
        )

    def heartbeat(self, session_id: uuid.UUID, now: float) -> float:
        """The holder is alive: the TTL restarts. Returns the seconds left before the session expires."""
        session = self._require(session_id)
        expires_at = max(session.expires_at, now + self.config.ttl)
        session = self._change(session, Trigger.HEARTBEAT, now, expires_at=expires_at, **_CONFIRMED_FIELDS)
        if expires_at - self._persisted_expiry.get(session_id.int, 0.0) > self.config.persist_slack:
            self._persist(session)
        return max(0.0, session.deadline - now)

    def touch(self, session_id: uuid.UUID, now: float) -> Session:
        """An application message arrived: activity (IDLE -> ACTIVE), which also proves liveness."""
        session = self._require(session_id)
        expires_at = max(session.expires_at, now + self.config.ttl)
        return self._change(
            session, Trigger.ACTIVITY, now, last_activity=now, expires_at=expires_at, **_CONFIRMED_FIELDS
        )

    def detach(self, session_id: uuid.UUID, now: float) -> Session:
        """The connection ended without a session close: keep the session for resumption until its TTL."""
        session = self._require(session_id)
        return self._change(session, Trigger.DETACH, now, connection_id=None)

    def resume(
        self,
        session_id: uuid.UUID,
        secret: bytes,
        *,
        holder: bytes,
        connection_id: Hashable,
        now: float,
    ) -> tuple[Session, bytes]:
        """Move a session to a new connection, proven by its resumption secret.

        Returns the session (ACTIVE) and a *new* secret. The secret used stays valid
        (as the *previous* one) until the client is heard on the new connection
        (:meth:`heartbeat`, :meth:`touch`: it got the new secret) or for
        ``config.resumption_grace`` seconds, whichever comes first: if the ``accept``
        carrying the new secret is lost, the client resumes with what it holds.
        Resuming with the previous secret does not extend its window.

        Raises :class:`AuthError` (``unknown_session``) if there is no such live
        session or the secret is wrong (the two are not told apart), and
        ``wrong_holder`` if another node presents it.
        """
        session = self._sessions.get(session_id.int)
        # A CONNECTING session has not handed out its secret yet: nothing can prove it.
        if session is None or session.deadline <= now or session.state is SessionState.CONNECTING:
            raise AuthError(
                f"no live session {session_id} to resume (it expired or was closed);"
                " open a new one with a token",
                reason="unknown_session",
            )
        presented = resumption_hash(session_id, secret)
        current = hmac.compare_digest(session.resumption_hash, presented)
        previous = session.previous_resumption_hash
        with_previous = (
            not current
            and previous is not None
            and now < session.previous_valid_until
            and hmac.compare_digest(previous, presented)
        )
        if not current and not with_previous:
            raise AuthError(
                f"the resumption secret for session {session_id} is wrong; open a new session with a token",
                reason="unknown_session",
            )
        if not hmac.compare_digest(session.holder, holder):
            raise AuthError(
                f"session {session_id} belongs to another node; only the node that opened it may resume it",
                reason="wrong_holder",
            )
        key = session_id.int
        if self._by_connection.get(connection_id, key) != key:
            raise LocalProtocolError(f"connection {connection_id!r} already carries another session")
        new_secret = self._random_bytes(RESUMPTION_SECRET_LENGTH)
        old_connection = session.connection_id
        if old_connection is not None:
            self._by_connection.pop(old_connection, None)
        self._by_connection[connection_id] = key
        if current:
            # The secret just used becomes the previous one, for a lost accept.
            previous, valid_until = session.resumption_hash, now + self.config.resumption_grace
        else:
            # The last accept never arrived: the previous secret keeps its window, no longer.
            previous, valid_until = session.previous_resumption_hash, session.previous_valid_until
            self._resumed_with_previous += 1
        session = self._change(
            session,
            Trigger.RESUME,
            now,
            connection_id=connection_id,
            last_activity=now,
            expires_at=max(session.expires_at, now + self.config.ttl),
            resumption_hash=resumption_hash(session_id, new_secret),
            previous_resumption_hash=previous,
            previous_valid_until=valid_until,
        )
        self._resumed += 1
        self._persist(session)
        return session, new_secret

    def close(self, session_id: uuid.UUID, now: float) -> Session:
        """End a session on purpose (either side asked). Returns its final, CLOSED snapshot."""
        session = self._require(session_id)
        session = self._change(session, Trigger.CLOSE, now)
        self._closed += 1
        if self._store is not None:
            self._store.delete([session_id])
        return session

    def close_token(self, token_id: str, now: float) -> list[uuid.UUID]:
        """Close every live session opened with the token ``token_id`` (after revoking it); returns their IDs.

        O(n): revocation is rare, and a per-token index would cost every session memory."""
        doomed = [s.session_id for s in self._sessions.values() if s.token_id == token_id]
        for session_id in doomed:
            self.close(session_id, now)
        return doomed

    # -- timers ---------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The Unix time at which :meth:`handle_timer` has work, or None if no session is live.

        It may be early (a heartbeat moved a deadline later); calling
        :meth:`handle_timer` early is harmless.
        """
        return self._buckets[0] * self._granularity if self._buckets else None

    def handle_timer(self, now: float) -> list[uuid.UUID]:
        """Expire sessions past their deadline and make quiet ones IDLE.

        Returns the IDs of the sessions it expired (each also reported as an
        event), so that the shell can close their connections.

        Two passes: the first walks the due buckets and collects the sessions to
        expire (checking each one's transition before any is removed); the second
        removes them from the indexes, in bulk when they are most of the live
        sessions (a mass expiry: after a restart, a network partition).
        """
        granularity = self._granularity
        buckets = self._buckets
        sessions = self._sessions
        quiet_armed = self._quiet_armed
        quiet_period = self.config.quiet_period
        due: dict[int, Session] = {}
        while buckets and buckets[0] * granularity <= now:
            for kind, key in self._wheel.pop(heapq.heappop(buckets)):
                session = sessions.get(key)
                if session is None or key in due:
                    continue  # closed since (lazy deletion), or already expiring
                if kind == _QUIET:
                    quiet_armed.discard(key)
                    if session.state is not SessionState.ACTIVE:
                        continue  # re-armed when it becomes ACTIVE again
                    quiet_at = session.last_activity + quiet_period
                    if quiet_at <= now:
                        self._change(session, Trigger.QUIET, now)
                    else:
                        self._arm_quiet(key, quiet_at)
                    continue
                deadline = session.expires_at
                if session.not_after < deadline:
                    deadline = session.not_after
                if deadline > now:
                    self._schedule(deadline, _EXPIRY, key)  # a heartbeat moved it: lazy re-arm
                    continue
                if session.state not in _EXPIRABLE:
                    transition(session.state, Trigger.EXPIRE)  # raises the clear error
                due[key] = session
        return self._expire(due, now) if due else []

    def _expire(self, due: dict[int, Session], now: float) -> list[uuid.UUID]:
        """Remove ``due`` (key -> session) from every index: one SessionStateChanged each, in order."""
        sessions = self._sessions
        if 2 * len(due) < len(sessions):
            for key, session in due.items():
                self._remove(key, session)
        else:
            # Most sessions are expiring: rebuilding the indexes from the survivors (or clearing
            # them) is cheaper than a dozen dict and set operations per expired session.
            survivors = (
                {k: s for k, s in sessions.items() if k not in due} if len(due) < len(sessions) else {}
            )
            by_user: dict[str, set[int]] = {}
            for key, session in survivors.items():
                by_user.setdefault(session.user, set()).add(key)
            sessions.clear()
            sessions.update(survivors)
            self._by_user = by_user
            self._by_connection = {c: k for c, k in self._by_connection.items() if k not in due}
            self._quiet_armed -= due.keys()
            persisted = self._persisted_expiry
            self._persisted_expiry = {k: v for k, v in persisted.items() if k not in due} if survivors else {}
        batch = list(due.values())
        by_state = self._by_state
        for state, count in Counter(map(_state_of, batch)).items():
            by_state[state] -= count
        by_state[SessionState.CLOSED] += len(batch)
        expired: list[uuid.UUID] = list(map(_session_id_of, batch))
        self._record(_ExpiredBatch(batch, now), len(batch))
        self._expired += len(expired)
        if self._store is not None:
            self._store.delete(expired)
        return expired

    # -- persistence ----------------------------------------------------------------------------------

    def load(self, now: float) -> LoadReport:
        """Bring back the stored sessions still valid at ``now`` (DISCONNECTING). Call once, at start."""
        if self._store is None:
            raise LocalProtocolError("this SessionManager has no store to load from")
        if self._sessions:
            raise LocalProtocolError("load() must run before any session is created")
        loaded = self._store.load()
        dead: list[uuid.UUID] = []
        for stored in loaded.sessions:
            if (
                stored.state is SessionState.CLOSED
                or stored.deadline <= now
                or stored.session_id.int in self._sessions
            ):
                dead.append(stored.session_id)
                continue
            session = attrs.evolve(stored, state=SessionState.DISCONNECTING, connection_id=None)
            self._add(session, now)
            self._persisted_expiry[session.session_id.int] = session.expires_at
            self._restored += 1
        if dead:
            self._store.delete(dead)
        return LoadReport(
            restored=self._restored, expired=len(dead), corrupt=len(loaded.corrupt), loaded=loaded
        )

    # -- internals ------------------------------------------------------------------------------------

    def _require(self, session_id: uuid.UUID) -> Session:
        session = self._sessions.get(session_id.int)
        if session is None:
            raise LocalProtocolError(f"no live session {session_id} (never created, or already CLOSED)")
        return session

    def _schedule(self, deadline: float, kind: int, key: int) -> None:
        # The bucket whose end is at or after the deadline, so a timer never fires early.
        bucket = math.ceil(deadline / self._granularity)
        entries = self._wheel.get(bucket)
        if entries is None:
            self._wheel[bucket] = entries = []
            heapq.heappush(self._buckets, bucket)
        entries.append((kind, key))

    def _arm_quiet(self, key: int, at: float) -> None:
        if key not in self._quiet_armed:
            self._quiet_armed.add(key)
            self._schedule(at, _QUIET, key)

    def _add(self, session: Session, now: float) -> None:
        key = session.session_id.int
        self._sessions[key] = session
        if session.connection_id is not None:
            self._by_connection[session.connection_id] = key
        self._by_user.setdefault(session.user, set()).add(key)
        self._by_state[session.state] += 1
        self._schedule(session.deadline, _EXPIRY, key)
        self._record((key, session.user, session.document, None, session.state, None, now))

    def _remove(self, key: int, session: Session) -> None:
        del self._sessions[key]
        connection_id = session.connection_id
        if connection_id is not None and self._by_connection.get(connection_id) == key:
            del self._by_connection[connection_id]
        keys = self._by_user[session.user]
        keys.discard(key)
        if not keys:
            del self._by_user[session.user]
        self._quiet_armed.discard(key)
        self._persisted_expiry.pop(key, None)

    def _change(self, session: Session, trigger: Trigger, now: float, **fields: object) -> Session:
        """Apply one row of the transition table (raising if there is none) plus field updates."""
        old_state = session.state
        new_state = transition(old_state, trigger)
        key = session.session_id.int
        if (
            trigger is Trigger.DETACH
            and session.connection_id is not None
            and self._by_connection.get(session.connection_id) == key
        ):
            del self._by_connection[session.connection_id]
        updated = attrs.evolve(session, state=new_state, **fields)  # type: ignore[arg-type]
        if new_state is SessionState.CLOSED:
            self._remove(key, session)
        else:
            self._sessions[key] = updated
            if new_state is SessionState.ACTIVE and old_state is not SessionState.ACTIVE:
                self._arm_quiet(key, updated.last_activity + self.config.quiet_period)
        if new_state is not old_state:
            self._by_state[old_state] -= 1
            self._by_state[new_state] += 1
            self._record((key, session.user, session.document, old_state, new_state, trigger, now))
        return updated

    def _record(self, entry: _RawEvent | _ExpiredBatch, count: int = 1) -> None:
        """Queue ``count`` events; beyond ``max_events`` the oldest are dropped."""
        events = self._events
        events.append(entry)
        self._pending_events += count
        excess = self._pending_events - self.config.max_events
        while excess > 0:
            oldest = events[0]
            if isinstance(oldest, _ExpiredBatch):
                dropped = min(excess, len(oldest.sessions) - oldest.next)
                oldest.next += dropped
                if oldest.next == len(oldest.sessions):
                    events.popleft()
            else:
                dropped = 1
                events.popleft()
            self._pending_events -= dropped
            excess -= dropped

    def _persist(self, session: Session) -> None:
        if self._store is not None:
            self._store.put(session)
            self._persisted_expiry[session.session_id.int] = session.expires_at
