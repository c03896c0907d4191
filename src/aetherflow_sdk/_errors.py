"""The one exception hierarchy of AetherFlow.

Every error is an :class:`AetherFlowError`. The split follows h11 and trio:

* :class:`LocalProtocolError` -- *you* called the API wrong (send on a closed
  connection, a message over the size limit). Fix the calling code.
* :class:`RemoteProtocolError` -- the *peer* broke the protocol. Nothing in
  your code is wrong; the connection to that peer is closed.
* :class:`BadPacket` -- raised only by ``*_untrusted`` parsers. It never
  reaches application code: endpoints count and drop the datagram.
* :class:`ConnectionClosed` and its subclasses -- the connection is over, and
  the message says why and who ended it.

Messages say what happened and what to do about it.
"""

from __future__ import annotations


class AetherFlowError(Exception):
    """Base class of every error AetherFlow raises on purpose."""


class LocalProtocolError(AetherFlowError):
    """The local application used the API in a way it does not allow."""


class MessageTooLarge(LocalProtocolError):
    """A message is larger than the negotiated maximum message size."""


class WouldBlock(AetherFlowError):
    """A ``*_nowait`` call could not complete without waiting."""


class RemoteProtocolError(AetherFlowError):
    """The remote peer violated the protocol."""


class BadPacket(AetherFlowError):
    """Untrusted bytes could not be accepted. Only ``*_untrusted`` code raises it."""


class ConnectionClosed(AetherFlowError):
    """The connection is closed; the message says why.

    ``error_code`` is the wire close code (0 = normal close) and ``reason``
    the human-readable text that travelled with it, when there was one.
    """

    def __init__(self, message: str, *, error_code: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code
        self.reason = reason


class ClosedLocally(ConnectionClosed):
    """This side closed or aborted the connection."""


class ClosedByPeer(ConnectionClosed):
    """The peer closed the connection (gracefully, or with an error code)."""


class ConnectionTimeout(ConnectionClosed):
    """The peer stopped answering: handshake timeout or idle timeout."""


class HandshakeFailed(ConnectionClosed):
    """The transport handshake failed: wrong peer identity, bad signature, version mismatch."""


class ChannelRefused(AetherFlowError):
    """The peer refused a channel this side opened (or this side's own channel limit is reached).

    ``reason`` is the human-readable text: the peer's channel filter refused the name, the
    peer's limit of open channels is reached, or the connection is closing.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class AuthError(AetherFlowError):
    """Authentication or authorization failed: a token, a ticket's token or a session resumption.

    ``reason`` is a stable machine-readable code (the values of
    :class:`aetherflow_sdk.session.AuthReason`: ``"expired"``, ``"bad_signature"``,
    ``"unknown_issuer"``, ``"revoked"``, ``"forbidden_document"``, ``"malformed"`` ...);
    the message says what happened and what to do.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReplicaError(AetherFlowError):
    """A document replica was used wrongly or was given an update it cannot apply."""


class StorageError(ReplicaError):
    """A replica's SQLite store is unreadable or corrupt; the message names the file and the row."""


class ClosedByProtocolViolation(ConnectionClosed, RemoteProtocolError):
    """The connection was closed because the peer broke the protocol."""
