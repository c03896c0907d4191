"""Access tokens: EdDSA (Ed25519) JWTs, issued by document owners, checked against trusted issuers.

A verifier needs only the issuer's public key, which *is* the issuer's node ID,
so no secret is ever shared (RFC 8037 §3.1: ``alg`` ``EdDSA``, ``crv`` Ed25519).

Claims (docs/sessions.md explains each):

=======  ==========================================================
``sub``  the user name
``doc``  the document ID, or ``*`` for every document of the issuer
``perm`` ``rw``, ``ro`` or ``serve``
``iss``  the issuer's node ID, text form (52 base32 characters)
``exp``  expiry, Unix seconds (RFC 7519 §4.1.4)
``iat``  issue time, Unix seconds (RFC 7519 §4.1.6)
``jti``  unique token ID, the handle for revocation (RFC 7519 §4.1.7)
``nid``  optional: the holder's node ID; then only that node may use the token
=======  ==========================================================

Every failure is an :class:`AuthError` whose ``reason`` is an :class:`AuthReason`
value. Verification pins ``algorithms=["EdDSA"]`` (so ``alg: none`` and the
HS256-with-the-public-key trick fail), refuses oversized input before parsing
anything, and checks time against the ``now`` it is given, never the clock.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aetherflow_sdk._errors import AuthError, LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id, parse_node_id
from aetherflow_sdk._uuid7 import uuid7
from aetherflow_sdk.session._records import Permission

ALGORITHM = "EdDSA"  # RFC 8037 §3.1
MAX_TOKEN_LENGTH = 4096
"""Tokens longer than this are refused unread. Ours are ~400 characters; the bound keeps
a flood of megabyte "tokens" from costing more than a length check."""
MAX_TEXT_CLAIM = 256
"""Longest ``sub``, ``doc`` or ``jti`` accepted (characters)."""
WILDCARD_DOCUMENT = "*"


class AuthReason(enum.StrEnum):
    """Why a token, or a session resumption, was refused. Stable codes: they travel on the wire."""

    EXPIRED = "expired"
    """The token's ``exp`` has passed."""
    NOT_YET_VALID = "not_yet_valid"
    """The token's ``iat`` is in the future (beyond the allowed clock skew)."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not verify, or the token is not signed with EdDSA (``none``, ``HS256`` ...)."""
    UNKNOWN_ISSUER = "unknown_issuer"
    """The issuer is not trusted for this document."""
    REVOKED = "revoked"
    """The token's ``jti`` was revoked."""
    FORBIDDEN_DOCUMENT = "forbidden_document"
    """The token is for another document."""
    MALFORMED = "malformed"
    """Not a JWT, too long, or a claim is missing or of the wrong type."""
    WRONG_HOLDER = "wrong_holder"
    """The token (``nid``) or the session belongs to another node than the one presenting it."""
    UNKNOWN_SESSION = "unknown_session"
    """Resumption failed: no such live session, or the secret is wrong."""
    TIMEOUT = "timeout"
    """The client did not complete the session handshake in time."""


@attrs.frozen(kw_only=True)
class TokenClaims:
    """The verified claims of a token."""

    user: str
    """``sub``: who the token is for."""
    document: str
    """``doc``: the document ID, or ``*``."""
    permission: Permission
    """``perm``."""
    issuer: bytes
    """``iss`` as the 32-byte node ID of the issuer."""
    expires_at: int
    """``exp``, Unix seconds."""
    issued_at: int
    """``iat``, Unix seconds."""
    token_id: str
    """``jti``."""
    holder: bytes | None
    """``nid`` as a 32-byte node ID, or None for a bearer token."""


def issue_token(
    identity: Identity,
    *,
    user: str,
    document: str,
    permission: Permission | str,
    expires_in: float,
    now: float,
    holder: bytes | None = None,
    token_id: str | None = None,
) -> str:
    """A signed token from ``identity`` (the document owner) for ``user`` on ``document``."""
    permission = Permission(permission)
    for name, value in (("user", user), ("document", document)):
        if not value or len(value) > MAX_TEXT_CLAIM:
            raise LocalProtocolError(f"{name} must be 1 to {MAX_TEXT_CLAIM} characters, got {len(value)}")
    if not expires_in > 0:
        raise LocalProtocolError(f"expires_in must be > 0 seconds, got {expires_in}")
    # Verifiers refuse an ``exp`` of 2**53 or more as malformed (_time_claim): refuse to issue one.
    expires_at = now + expires_in
    if not math.isfinite(expires_at) or not math.ceil(expires_at) < 2**53:
        raise LocalProtocolError(
            f"expires_in={expires_in} s is too far ahead: the token's exp must be below 2**53 Unix seconds"
        )
    claims: dict[str, Any] = {
        "sub": user,
        "doc": document,
        "perm": permission.value,
        "iss": format_node_id(identity.node_id),
        "iat": int(now),
        "exp": math.ceil(expires_at),
        "jti": token_id or str(uuid7()),
    }
    if holder is not None:
        claims["nid"] = format_node_id(holder)
    return jwt.encode(claims, identity.private_key, algorithm=ALGORITHM)


def _fail(reason: AuthReason, message: str) -> AuthError:
    return AuthError(message, reason=reason.value)


def _decode_json_segment(segment: str, what: str) -> dict[str, Any]:
    """One base64url JSON object of a token; raises AuthError(malformed), and only that, if it is not."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _fail(AuthReason.MALFORMED, f"token {what} is not base64url JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _fail(AuthReason.MALFORMED, f"token {what} is not a JSON object")
    return value


def _text_claim(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CLAIM:
        raise _fail(
            AuthReason.MALFORMED, f"token claim {name!r} must be text of 1 to {MAX_TEXT_CLAIM} characters"
        )
    return value


def _time_claim(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise _fail(AuthReason.MALFORMED, f"token claim {name!r} must be a whole number of Unix seconds")
    return value


def _node_id_claim(payload: Mapping[str, Any], name: str) -> bytes:
    value = _text_claim(payload, name)
    try:
        return parse_node_id(value)
    except LocalProtocolError:
        raise _fail(AuthReason.MALFORMED, f"token claim {name!r} is not a node ID") from None


class TokenVerifier:
    """Checks tokens for one node or relay: who it trusts, what it revoked.

    Trust is global (``trusted_issuers``: tokens of these issuers are good for
    any document) or per document (:meth:`trust_for_document`: a document's
    creator is its first issuer).
    """

    def __init__(
        self,
        trusted_issuers: Iterable[bytes] = (),
        *,
        revoked: Iterable[str] = (),
        clock_skew: float = 60.0,
        max_token_length: int = MAX_TOKEN_LENGTH,
    ) -> None:
        self._global: set[bytes] = set()
        self._per_document: dict[str, set[bytes]] = {}
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        self._revoked: set[str] = set(revoked)
        self.clock_skew = clock_skew
        self.max_token_length = max_token_length
        for issuer in trusted_issuers:
            self.trust(issuer)

    def trust(self, issuer: bytes) -> None:
        """Accept tokens from ``issuer`` (a node ID) for any document."""
        self._global.add(self._key(issuer))

    def trust_for_document(self, document: str, issuer: bytes) -> None:
        """Accept tokens from ``issuer`` for ``document`` only (e.g. the document's creator)."""
        self._per_document.setdefault(document, set()).add(self._key(issuer))

    def revoke(self, token_id: str) -> None:
        """Refuse the token with this ``jti`` from now on (close its live sessions separately)."""
        self._revoked.add(token_id)

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._revoked

    def is_trusted(self, issuer: bytes, document: str) -> bool:
        """True if ``issuer`` may grant access to ``document``."""
        return issuer in self._global or issuer in self._per_document.get(document, ())

    def _key(self, issuer: bytes) -> bytes:
        if len(issuer) != 32:
            raise LocalProtocolError(f"an issuer is a 32-byte node ID, got {len(issuer)} bytes")
        if issuer not in self._keys:
            self._keys[issuer] = Ed25519PublicKey.from_public_bytes(issuer)
        return issuer

    def verify(
        self, token: str | bytes, *, document: str, now: float, holder: bytes | None = None
    ) -> TokenClaims:
        """The claims of ``token`` if it grants access to ``document`` at ``now``; else :class:`AuthError`.

        ``holder`` is the node ID of the connection presenting the token; a
        token with a ``nid`` claim is refused (``wrong_holder``) from any other node.
        """
        # Size first: nothing else is looked at in an oversized token.
        if len(token) > self.max_token_length:
            raise _fail(
                AuthReason.MALFORMED,
                f"token is {len(token)} bytes, over the {self.max_token_length}-byte limit",
            )
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise _fail(AuthReason.MALFORMED, "token is not ASCII") from None
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail(AuthReason.MALFORMED, f"a token has 3 dot-separated parts, this one has {len(parts)}")
        header = _decode_json_segment(parts[0], "header")
        if header.get("alg") != ALGORITHM:
            raise _fail(
                AuthReason.BAD_SIGNATURE,
                f"token is signed with {header.get('alg')!r}; only EdDSA is accepted",
            )
        payload = _decode_json_segment(parts[1], "payload")
        issuer = _node_id_claim(payload, "iss")
        wanted = document
        claimed_document = _text_claim(payload, "doc")
        if not self.is_trusted(issuer, wanted):
            raise _fail(
                AuthReason.UNKNOWN_ISSUER,
                f"issuer {format_node_id(issuer)} is not trusted for document {wanted!r};"
                " ask the document's owner for a token",
            )
        try:
            jwt.decode(
                token,
                self._keys[issuer],
                algorithms=[ALGORITHM],
                # Time and audience are checked below against `now` (sans-I/O), not pyjwt's clock.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            raise _fail(AuthReason.BAD_SIGNATURE, "token signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise _fail(AuthReason.BAD_SIGNATURE, "token is not signed with EdDSA") from None
        except jwt.PyJWTError as exc:
            raise _fail(AuthReason.MALFORMED, f"token does not decode ({exc})") from None
        user = _text_claim(payload, "sub")
        try:
            permission = Permission(str(payload.get("perm")))
        except ValueError:
            raise _fail(AuthReason.MALFORMED, "token claim 'perm' must be 'rw', 'ro' or 'serve'") from None
        expires_at = _time_claim(payload, "exp")
        issued_at = _time_claim(payload, "iat")
        token_id = _text_claim(payload, "jti")
        token_holder = _node_id_claim(payload, "nid") if "nid" in payload else None
        if expires_at <= now:
            raise _fail(
                AuthReason.EXPIRED, f"token expired at {_iso(expires_at)}; ask its issuer for a new one"
            )
        if issued_at > now + self.clock_skew:
            raise _fail(
                AuthReason.NOT_YET_VALID,
                f"token is issued at {_iso(issued_at)}, in the future; check the clocks",
            )
        if token_id in self._revoked:
            raise _fail(AuthReason.REVOKED, f"token {token_id} was revoked")
        if claimed_document not in (wanted, WILDCARD_DOCUMENT):
            raise _fail(
                AuthReason.FORBIDDEN_DOCUMENT,
                f"token is for document {claimed_document!r}, not {wanted!r}",
            )
        if token_holder is not None and token_holder != holder:
            raise _fail(
                AuthReason.WRONG_HOLDER,
                f"token is bound to node {format_node_id(token_holder)}, not to the node presenting it",
            )
        return TokenClaims(
            user=user,
            document=claimed_document,
            permission=permission,
            issuer=issuer,
            expires_at=expires_at,
            issued_at=issued_at,
            token_id=token_id,
            holder=token_holder,
        )


def _iso(unix: float) -> str:
    import datetime

    try:
        return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"Unix time {unix}"
