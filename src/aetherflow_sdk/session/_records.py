"""The frozen records of the session layer: sessions, events, configuration, permissions."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Hashable

import attrs

from aetherflow_sdk.session._state import SessionState, Trigger


class Permission(enum.StrEnum):
    """What a session may do with its document (the token's ``perm`` claim)."""

    READ_WRITE = "rw"
    """Read the document and send edits."""
    READ_ONLY = "ro"
    """Read the document and receive edits; any write it sends is dropped."""
    SERVE = "serve"
    """A persistence peer (a relay hosting the document): it stores every update and passes it
    on, so it syncs as ``rw`` does, but it is never a human editor (its node makes no edits)."""

    @property
    def writes(self) -> bool:
        """True if updates from a holder with this permission are accepted (``rw`` and ``serve``)."""
        return self is not Permission.READ_ONLY


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class SessionConfig:
    """Timing of sessions. All durations are in seconds."""

    ttl: float = attrs.field(default=60.0, validator=_positive)
    """A session with no heartbeat for this long is CLOSED (expired)."""
    quiet_period: float = attrs.field(default=30.0, validator=_positive)
    """An ACTIVE session with no application message for this long becomes IDLE."""
    heartbeat_interval: float = attrs.field(default=15.0, validator=_positive)
    """Told to clients in the handshake. ttl/4 so that three lost heartbeats in a row do not end a session."""
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    """A session still CONNECTING after this long is CLOSED."""
    timer_granularity: float = attrs.field(default=0.25, validator=_positive)
    """Width of a timer-wheel bucket: timers fire at most this late. Coarser is cheaper per sweep."""
    max_events: int = attrs.field(default=1_000_000, validator=attrs.validators.ge(1))
    """State-change events kept for :meth:`SessionManager.next_event`; beyond it the oldest are dropped."""
    resumption_grace: float = attrs.field(default=60.0, validator=_positive)
    """After a resumption the secret it used stays valid this long, or until the client is heard on
    the resumed connection (which proves it got the new one): an ``accept`` lost on the wire must
    not leave the client holding a dead secret. A stolen old secret is no good after it."""
    persist_slack: float = attrs.field(default=15.0, validator=attrs.validators.ge(0))
    """A heartbeat rewrites the stored expiry only when it moved by more than this, so that
    100k heartbeating sessions do not mean 100k disk writes per interval. After a restart a
    session may therefore expire up to this much earlier than it would have."""

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_interval >= self.ttl:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be shorter than ttl ({self.ttl}s),"
                " or every session expires between two heartbeats"
            )


@attrs.frozen(kw_only=True)
class Session:
    """A snapshot of one session. The manager replaces it on every change; it never mutates."""

    session_id: uuid.UUID
    """UUIDv7 (RFC 9562 §5.7): sorts by creation time."""
    user: str
    """The token's ``sub`` claim."""
    document: str
    """The document this session is for (never ``*``: a wildcard token opens one document per session)."""
    permission: Permission
    """Granted permission (``rw`` or ``ro``)."""
    holder: bytes
    """Node ID (32 bytes) of the peer that opened the session; only it may resume the session."""
    issuer: bytes
    """Node ID of the token's issuer."""
    token_id: str
    """The token's ``jti``, so that revoking the token can end its sessions."""
    state: SessionState
    """Current state (see :mod:`aetherflow_sdk.session._state`)."""
    connection_id: Hashable | None
    """The connection carrying the session; None while DISCONNECTING."""
    created_at: float
    """Unix time (seconds) the session was created."""
    last_activity: float
    """Unix time of the last application message (drives ACTIVE -> IDLE)."""
    expires_at: float
    """Unix time at which the session expires unless a heartbeat comes first."""
    not_after: float
    """The token's ``exp``: the session never outlives its token."""
    resumption_hash: bytes
    """Keyed BLAKE2b of the current resumption secret; the secret itself is never stored."""
    previous_resumption_hash: bytes | None = None
    """Keyed BLAKE2b of the secret the last resumption used, still accepted until
    ``previous_valid_until`` unless the client has been heard since (then None)."""
    previous_valid_until: float = 0.0
    """Unix time after which ``previous_resumption_hash`` no longer resumes the session."""

    @property
    def deadline(self) -> float:
        """When the session closes if nothing happens: the earlier of its expiry and its token's."""
        return min(self.expires_at, self.not_after)


@attrs.frozen(kw_only=True)
class SessionStateChanged:
    """A session changed state. The node and the relay observe sessions through these."""

    session_id: uuid.UUID
    """Which session."""
    user: str
    """Its user (the token's ``sub``)."""
    document: str
    """Its document."""
    old_state: SessionState | None
    """The state before; None when the session was just created (or restored from the store)."""
    new_state: SessionState
    """The state after."""
    trigger: Trigger | None
    """What caused the change; None on creation or restore."""
    at: float
    """Unix time of the change (the ``now`` the manager was given)."""


@attrs.frozen(kw_only=True)
class SessionManagerStatistics:
    """Counters of a :class:`SessionManager` (cumulative since it was made, except ``live``/``by_state``)."""

    live: int
    """Sessions not yet CLOSED."""
    by_state: dict[SessionState, int]
    """Live sessions per state (a fresh dict; changing it changes nothing)."""
    created: int
    """Sessions created."""
    resumed: int
    """Successful resumptions."""
    resumed_with_previous_secret: int
    """Resumptions proven with the previous secret: the client never got the last ``accept``."""
    expired: int
    """Sessions closed by their TTL, their token's expiry or the handshake timeout."""
    closed: int
    """Sessions closed on purpose (either side)."""
    restored: int
    """Sessions brought back from the store by :meth:`SessionManager.load`."""
