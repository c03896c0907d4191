"""The session state machine: five states, one transition table.

Rule 1: every change of a session's state goes through :func:`transition`,
and every allowed change is a row of :data:`TRANSITIONS`. Nothing else in the
package assigns a state.

Rule 2: a missing row is a bug in the caller (asking to heartbeat a CLOSED
session, resuming a session still CONNECTING), so it raises
:class:`InvalidTransition`, a :class:`LocalProtocolError` that names the state
and the trigger.

The states (docs/sessions.md has the same table with the reasons):

* CONNECTING -- the token was verified and the session created, but the
  handshake reply has not yet been delivered.
* ACTIVE -- connected, with application traffic within the quiet period.
* IDLE -- connected and heartbeating, but no application traffic for the quiet
  period.
* DISCONNECTING -- the connection dropped (or the node restarted); the session
  waits for its holder to resume it until its TTL runs out.
* CLOSED -- over for good: closed, expired, or never completed.
"""

from __future__ import annotations

import enum

from aetherflow_sdk._errors import LocalProtocolError


class SessionState(enum.StrEnum):
    """The five states of a session."""

    CONNECTING = "connecting"
    ACTIVE = "active"
    IDLE = "idle"
    DISCONNECTING = "disconnecting"
    CLOSED = "closed"


class Trigger(enum.StrEnum):
    """What happened to a session: the column of the transition table."""

    ESTABLISH = "establish"
    """The handshake reply reached the connection."""
    HEARTBEAT = "heartbeat"
    """A heartbeat arrived: the holder is alive (does not count as activity)."""
    ACTIVITY = "activity"
    """An application message arrived."""
    QUIET = "quiet"
    """The quiet period passed without application messages."""
    DETACH = "detach"
    """The connection carrying the session ended without a session close."""
    RESUME = "resume"
    """The holder presented the resumption secret on a (new) connection."""
    EXPIRE = "expire"
    """The TTL (or the token's expiry, or the handshake timeout) ran out."""
    CLOSE = "close"
    """Either side closed the session on purpose."""


_S = SessionState
_T = Trigger

TRANSITIONS: dict[tuple[SessionState, Trigger], SessionState] = {
    (_S.CONNECTING, _T.ESTABLISH): _S.ACTIVE,
    (_S.CONNECTING, _T.DETACH): _S.CLOSED,  # nothing was handed out, so nothing to resume
    (_S.CONNECTING, _T.EXPIRE): _S.CLOSED,
    (_S.CONNECTING, _T.CLOSE): _S.CLOSED,
    (_S.ACTIVE, _T.HEARTBEAT): _S.ACTIVE,
    (_S.ACTIVE, _T.ACTIVITY): _S.ACTIVE,
    (_S.ACTIVE, _T.QUIET): _S.IDLE,
    (_S.ACTIVE, _T.DETACH): _S.DISCONNECTING,
    # The holder may come back on a new connection before this side noticed
    # that the old one is gone (its idle timeout has not fired yet).
    (_S.ACTIVE, _T.RESUME): _S.ACTIVE,
    (_S.ACTIVE, _T.EXPIRE): _S.CLOSED,
    (_S.ACTIVE, _T.CLOSE): _S.CLOSED,
    (_S.IDLE, _T.HEARTBEAT): _S.IDLE,
    (_S.IDLE, _T.ACTIVITY): _S.ACTIVE,
    (_S.IDLE, _T.DETACH): _S.DISCONNECTING,
    (_S.IDLE, _T.RESUME): _S.ACTIVE,
    (_S.IDLE, _T.EXPIRE): _S.CLOSED,
    (_S.IDLE, _T.CLOSE): _S.CLOSED,
    (_S.DISCONNECTING, _T.RESUME): _S.ACTIVE,
    (_S.DISCONNECTING, _T.EXPIRE): _S.CLOSED,
    (_S.DISCONNECTING, _T.CLOSE): _S.CLOSED,
}
"""``(state, trigger) -> new state``. Pairs that are absent are not allowed."""


class InvalidTransition(LocalProtocolError):
    """A session was asked to do something its current state does not allow."""

    def __init__(self, state: SessionState, trigger: Trigger) -> None:
        allowed = sorted(t.value for (s, t) in TRANSITIONS if s is state)
        hint = f"allowed there: {', '.join(allowed)}" if allowed else "a closed session allows nothing"
        super().__init__(
            f"session in state {state.value.upper()} cannot take event {trigger.value!r} ({hint})"
        )
        self.state = state
        self.trigger = trigger


def transition(state: SessionState, trigger: Trigger) -> SessionState:
    """The state after ``trigger``; raises :class:`InvalidTransition` if the table has no such row."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidTransition(state, trigger) from None
