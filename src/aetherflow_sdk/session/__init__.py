"""Sessions and authentication: who the user is, and which document they may read or write.

A Quantum connection proves *which node* is on the other end. This package adds:

* EdDSA (Ed25519) tokens issued by document owners (:func:`issue_token`,
  :class:`TokenVerifier`), and tickets that carry one (:class:`Ticket`,
  :func:`share_ticket`);
* the session manager, sans-I/O (:class:`SessionManager`, five states in a
  transition table, O(1) lookups, expiry by timers) with persistence
  (:class:`MemorySessionStore`, :class:`SqliteSessionStore`);
* the session handshake and resumption over any message channel
  (:func:`open_session`, :class:`SessionServer`), whose result
  (:class:`SessionChannel`) enforces read-only at the receiver.

docs/sessions.md explains the states, the claims, the ticket format and the
handshake messages.
"""

from aetherflow_sdk._errors import AuthError
from aetherflow_sdk.session._handshake import (
    ClientHello,
    FrameKind,
    ResumeRequest,
    SessionAccept,
    SessionReject,
)
from aetherflow_sdk.session._manager import LoadReport, SessionManager
from aetherflow_sdk.session._records import (
    Permission,
    Session,
    SessionConfig,
    SessionManagerStatistics,
    SessionStateChanged,
)
from aetherflow_sdk.session._shell import (
    Resumption,
    SessionChannel,
    SessionChannelStatistics,
    SessionServer,
    SessionServerStatistics,
    open_session,
)
from aetherflow_sdk.session._state import TRANSITIONS, InvalidTransition, SessionState, Trigger
from aetherflow_sdk.session._store import (
    CorruptRow,
    LoadedSessions,
    MemorySessionStore,
    SessionStore,
    SqliteSessionStore,
)
from aetherflow_sdk.session._ticket import InvalidTicket, Ticket, describe_ticket, share_ticket
from aetherflow_sdk.session._tokens import AuthReason, TokenClaims, TokenVerifier, issue_token

__all__ = [
    "TRANSITIONS",
    "AuthError",
    "AuthReason",
    "ClientHello",
    "CorruptRow",
    "FrameKind",
    "InvalidTicket",
    "InvalidTransition",
    "LoadReport",
    "LoadedSessions",
    "MemorySessionStore",
    "Permission",
    "ResumeRequest",
    "Resumption",
    "Session",
    "SessionAccept",
    "SessionChannel",
    "SessionChannelStatistics",
    "SessionConfig",
    "SessionManager",
    "SessionManagerStatistics",
    "SessionReject",
    "SessionServer",
    "SessionServerStatistics",
    "SessionState",
    "SessionStateChanged",
    "SessionStore",
    "SqliteSessionStore",
    "Ticket",
    "TokenClaims",
    "TokenVerifier",
    "Trigger",
    "describe_ticket",
    "issue_token",
    "open_session",
    "share_ticket",
]
