"""The session handshake, sans-I/O: message encoding and the server's decision.

Right after the Quantum handshake (which proved *which node* is on the other
end), the client sends one message and the server answers with one:

* ``hello`` -- a token for a document; or ``resume`` -- a session ID and its
  resumption secret (no token needed within the TTL).
* ``accept`` -- session ID, user, granted permission, heartbeat interval, TTL,
  and a fresh resumption secret; or ``reject`` -- a reason code and a message.

Every message is a msgpack map with ``v`` (schema version, 1) and ``k`` (kind).
Unknown keys are ignored, so a newer peer can add fields; a known key with the
wrong type, an unknown kind, or another version is rejected. Decoders of
network bytes are named ``*_untrusted`` and raise only :class:`BadPacket`.

After ``accept``, each message on the connection starts with one *frame kind*
byte (:class:`FrameKind`): application data, or session control (heartbeats,
write-denied notices, close). docs/sessions.md lists every field.
"""

from __future__ import annotations

import enum
import math
import struct
import uuid
from collections.abc import Hashable
from typing import Any

import attrs
import msgpack

from aetherflow_sdk._errors import AuthError, BadPacket
from aetherflow_sdk.session._manager import RESUMPTION_SECRET_LENGTH, SessionManager
from aetherflow_sdk.session._records import Permission, Session
from aetherflow_sdk.session._tokens import MAX_TEXT_CLAIM, MAX_TOKEN_LENGTH, AuthReason, TokenVerifier

SCHEMA_VERSION = 1
MAX_HANDSHAKE_MESSAGE = 8192
"""Handshake messages larger than this are refused unread (a token is at most 4 KiB)."""
MAX_REASON_TEXT = 512


@attrs.frozen(kw_only=True)
class ClientHello:
    """Client -> server: open a session with a token."""

    document: str
    """The document the client wants."""
    token: str
    """The access token (EdDSA JWT)."""


@attrs.frozen(kw_only=True)
class ResumeRequest:
    """Client -> server: take back a session whose connection dropped."""

    document: str
    """The session's document (must match)."""
    session_id: uuid.UUID
    """The session to resume."""
    secret: bytes
    """The resumption secret from the last ``accept`` (32 bytes)."""


@attrs.frozen(kw_only=True)
class SessionAccept:
    """Server -> client: the session is open."""

    session_id: uuid.UUID
    """The session's UUIDv7."""
    user: str
    """The user the token named."""
    permission: Permission
    """What the session may do."""
    heartbeat_interval: float
    """Seconds between client heartbeats."""
    ttl: float
    """Seconds without a heartbeat after which the server closes the session."""
    secret: bytes
    """Resumption secret (32 bytes) for the next reconnect; it supersedes the one just used
    (which stays valid only until we are heard on this connection, or a short grace period)."""
    resumed: bool
    """True if an existing session was resumed."""


@attrs.frozen(kw_only=True)
class SessionReject:
    """Server -> client: no session. The connection is closed after this."""

    reason: str
    """An :class:`AuthReason` value (kept as text: a newer server may send a code this client lacks)."""
    message: str
    """Human-readable explanation."""


ClientMessage = ClientHello | ResumeRequest
ServerMessage = SessionAccept | SessionReject


def encode_message(message: ClientMessage | ServerMessage) -> bytes:
    """The msgpack bytes of a handshake message."""
    fields: dict[str, Any]
    if isinstance(message, ClientHello):
        fields = {"k": "hello", "doc": message.document, "tok": message.token}
    elif isinstance(message, ResumeRequest):
        fields = {
            "k": "resume",
            "doc": message.document,
            "sid": message.session_id.bytes,
            "sec": message.secret,
        }
    elif isinstance(message, SessionAccept):
        fields = {
            "k": "accept",
            "sid": message.session_id.bytes,
            "user": message.user,
            "perm": message.permission.value,
            "hb": float(message.heartbeat_interval),
            "ttl": float(message.ttl),
            "sec": message.secret,
            "res": message.resumed,
        }
    else:
        fields = {"k": "reject", "why": message.reason, "msg": message.message}
    return bytes(msgpack.packb({"v": SCHEMA_VERSION, **fields}, use_bin_type=True))


def _map_untrusted(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_HANDSHAKE_MESSAGE:
        raise BadPacket(
            f"handshake message of {len(data)} bytes is over the {MAX_HANDSHAKE_MESSAGE}-byte limit"
        )
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadPacket(f"handshake message is not msgpack ({exc})") from None
    if not isinstance(fields, dict):
        raise BadPacket("handshake message is not a map")
    version = fields.get("v")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BadPacket(
            f"handshake schema version {version!r} is not supported (this side speaks {SCHEMA_VERSION})"
        )
    return fields


def _get(fields: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = fields.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadPacket(f"handshake field {key!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def _text(fields: dict[str, Any], key: str, limit: int) -> str:
    value: str = _get(fields, key, str)
    if not value or len(value) > limit:
        raise BadPacket(f"handshake field {key!r} must be 1 to {limit} characters")
    return value


def _bytes(fields: dict[str, Any], key: str, length: int) -> bytes:
    value: bytes = _get(fields, key, bytes)
    if len(value) != length:
        raise BadPacket(f"handshake field {key!r} must be {length} bytes, got {len(value)}")
    return value


def _duration(fields: dict[str, Any], key: str) -> float:
    value = float(_get(fields, key, (int, float)))
    if not math.isfinite(value) or value <= 0:
        raise BadPacket(f"handshake field {key!r} must be a positive number of seconds")
    return value


def decode_client_message_untrusted(data: bytes) -> ClientMessage:
    """Parse the client's first message; raises only :class:`BadPacket`."""
    fields = _map_untrusted(data)
    kind = fields.get("k")
    document = _text(fields, "doc", MAX_TEXT_CLAIM)
    if kind == "hello":
        return ClientHello(document=document, token=_text(fields, "tok", MAX_TOKEN_LENGTH))
    if kind == "resume":
        return ResumeRequest(
            document=document,
            session_id=uuid.UUID(bytes=_bytes(fields, "sid", 16)),
            secret=_bytes(fields, "sec", RESUMPTION_SECRET_LENGTH),
        )
    raise BadPacket(f"unknown client handshake message kind {kind!r}")


def decode_server_message_untrusted(data: bytes) -> ServerMessage:
    """Parse the server's answer; raises only :class:`BadPacket`."""
    fields = _map_untrusted(data)
    kind = fields.get("k")
    if kind == "accept":
        try:
            permission = Permission(_get(fields, "perm", str))
        except ValueError:
            raise BadPacket("handshake field 'perm' must be 'rw', 'ro' or 'serve'") from None
        return SessionAccept(
            session_id=uuid.UUID(bytes=_bytes(fields, "sid", 16)),
            user=_text(fields, "user", MAX_TEXT_CLAIM),
            permission=permission,
            heartbeat_interval=_duration(fields, "hb"),
            ttl=_duration(fields, "ttl"),
            secret=_bytes(fields, "sec", RESUMPTION_SECRET_LENGTH),
            resumed=_get(fields, "res", bool),
        )
    if kind == "reject":
        return SessionReject(
            reason=_text(fields, "why", 64), message=_get(fields, "msg", str)[:MAX_REASON_TEXT]
        )
    raise BadPacket(f"unknown server handshake message kind {kind!r}")


@attrs.frozen(kw_only=True)
class ServerDecision:
    """What the server does with a client's first message."""

    reply: bytes
    """The bytes to send back (an ``accept`` or a ``reject``)."""
    session: Session | None
    """The created or resumed session (CONNECTING or ACTIVE), or None on rejection."""
    rejection: AuthError | None
    """Why the client was refused, or None on success."""


def server_decide(
    data: bytes,
    *,
    now: float,
    peer_id: bytes,
    connection_id: Hashable,
    verifier: TokenVerifier,
    manager: SessionManager,
) -> ServerDecision:
    """Verify the client's first message and create or resume its session. Never raises for bad input.

    Checks, in order: the message decodes; a token's size, algorithm, issuer
    trust for the document, signature, claim types, expiry, revocation,
    document, and holder binding (``nid`` vs the connection's ``peer_id``); or
    for a resumption, the session, its secret, its holder (the same node),
    its document and that its token was not revoked since.
    """
    try:
        message = decode_client_message_untrusted(data)
        if isinstance(message, ClientHello):
            claims = verifier.verify(message.token, document=message.document, now=now, holder=peer_id)
            session, secret = manager.create(
                user=claims.user,
                document=message.document,
                permission=claims.permission,
                holder=peer_id,
                issuer=claims.issuer,
                token_id=claims.token_id,
                not_after=float(claims.expires_at),
                connection_id=connection_id,
                now=now,
            )
            resumed = False
        else:
            existing = manager.get(message.session_id)
            if existing is not None and existing.document != message.document:
                raise AuthError(
                    f"session {message.session_id} is for another document",
                    reason=AuthReason.FORBIDDEN_DOCUMENT,
                )
            if existing is not None and verifier.is_revoked(existing.token_id):
                manager.close(existing.session_id, now)
                raise AuthError(
                    f"the token behind session {message.session_id} was revoked", reason=AuthReason.REVOKED
                )
            session, secret = manager.resume(
                message.session_id, message.secret, holder=peer_id, connection_id=connection_id, now=now
            )
            resumed = True
    except BadPacket as exc:
        rejection = AuthError(f"unreadable session handshake: {exc}", reason=AuthReason.MALFORMED)
        return _reject(rejection)
    except AuthError as exc:
        return _reject(exc)
    accept = SessionAccept(
        session_id=session.session_id,
        user=session.user,
        permission=session.permission,
        heartbeat_interval=manager.config.heartbeat_interval,
        ttl=manager.config.ttl,
        secret=secret,
        resumed=resumed,
    )
    return ServerDecision(reply=encode_message(accept), session=session, rejection=None)


def _reject(error: AuthError) -> ServerDecision:
    reply = encode_message(SessionReject(reason=error.reason, message=str(error)[:MAX_REASON_TEXT]))
    return ServerDecision(reply=reply, session=None, rejection=error)


def client_result_untrusted(data: bytes) -> SessionAccept:
    """The server's accept; raises :class:`AuthError` for a reject and :class:`BadPacket` for garbage."""
    message = decode_server_message_untrusted(data)
    if isinstance(message, SessionReject):
        raise AuthError(f"the server refused the session: {message.message}", reason=message.reason)
    return message


class FrameKind(enum.IntEnum):
    """First byte of every message after the handshake."""

    APPLICATION = 0x00
    """The rest is an application message (for example a Yjs sync message)."""
    HEARTBEAT = 0x01
    """Client -> server, empty: the holder is alive."""
    HEARTBEAT_ACK = 0x02
    """Server -> client, 8-byte big-endian float: seconds of TTL left."""
    WRITE_DENIED = 0x03
    """Server -> client, 8-byte big-endian count of writes denied so far: a write from a read-only session
    was dropped."""
    CLOSE = 0x04
    """Either way, UTF-8 reason: the session is over (not resumable)."""


_FLOAT = struct.Struct(">d")
_COUNT = struct.Struct(">Q")


def encode_frame(kind: FrameKind, body: bytes = b"") -> bytes:
    """One post-handshake message: the kind byte, then the body."""
    return bytes((kind,)) + body


def encode_heartbeat_ack(remaining: float) -> bytes:
    return encode_frame(FrameKind.HEARTBEAT_ACK, _FLOAT.pack(remaining))


def encode_write_denied(count: int) -> bytes:
    return encode_frame(FrameKind.WRITE_DENIED, _COUNT.pack(count))


def decode_frame_untrusted(data: bytes) -> tuple[FrameKind, bytes]:
    """Split a post-handshake message into its kind and body; raises only :class:`BadPacket`."""
    if not data:
        raise BadPacket("empty session frame")
    try:
        kind = FrameKind(data[0])
    except ValueError:
        raise BadPacket(f"unknown session frame kind 0x{data[0]:02x}") from None
    body = data[1:]
    if kind is FrameKind.HEARTBEAT_ACK and len(body) != _FLOAT.size:
        raise BadPacket("heartbeat ack must carry an 8-byte float")
    if kind is FrameKind.WRITE_DENIED and len(body) != _COUNT.size:
        raise BadPacket("write-denied notice must carry an 8-byte count")
    return kind, body


def heartbeat_ack_remaining(body: bytes) -> float:
    """The TTL left, from a validated heartbeat-ack body."""
    value: float = _FLOAT.unpack(body)[0]
    return value


def write_denied_count(body: bytes) -> int:
    """The running count, from a validated write-denied body."""
    value: int = _COUNT.unpack(body)[0]
    return value
