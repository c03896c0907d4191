"""Tickets: one copy-pasteable string that lets someone join a document.

Like iroh's tickets, a ticket is a prefix and a versioned, checksummed payload::

    "af1" + base32_lowercase_nopad( version(1 byte) || msgpack(body) || blake2s4(version || body) )

* ``af1`` -- constant human-visible prefix ("AetherFlow ticket", text format 1).
* version -- ``0x01``; any other value is refused with a clear error.
* body -- a msgpack map with short keys: ``d`` document ID (str), ``i`` issuer node ID
  (32 bytes), ``a`` direct addresses (list of ``[host, port]``), ``r`` relays (list of
  ``"host:port"`` strings), ``t`` the token (str); optional: ``n`` the document's name
  (a label, str), ``s`` the document's secret (32-byte bin, for holders only: it keys
  discovery tags and channel names). Unknown keys are ignored, so later versions of the
  body stay readable by this one, and older readers skip ``n`` and ``s``.
* checksum -- the first 4 bytes of BLAKE2s-256 (RFC 7693) over version and body: catches
  a truncated or mistyped paste before anything else is read.

base32 (RFC 4648 §6) keeps the string free of characters that shells, URLs and
chat clients mangle. docs/sessions.md shows an example byte by byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import attrs
import msgpack

from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session._records import Permission
from aetherflow_sdk.session._tokens import MAX_TOKEN_LENGTH, issue_token

TICKET_PREFIX = "af1"
TICKET_VERSION = 1
CHECKSUM_LENGTH = 4
MAX_TICKET_LENGTH = 16 * 1024
"""Refuse longer text unread: a ticket with a few addresses and a token is under 1 KiB."""
MAX_ADDRESSES = 16
MAX_NAME_LENGTH = 256
SECRET_LENGTH = 32


class InvalidTicket(LocalProtocolError):
    """The text is not a ticket this version can read: wrong prefix, bad checksum, unknown version."""


def _address_host(host: object) -> str:
    if not isinstance(host, str) or not host or len(host) > 253:
        raise InvalidTicket("a ticket address has an invalid host")
    return host


@attrs.frozen(kw_only=True)
class Ticket:
    """Everything a peer needs to join a document: where to go, whom to trust, and its token."""

    document: str
    """The document ID."""
    issuer: bytes
    """The issuer's node ID (32 bytes): the peer to trust, and the token's signer."""
    direct: tuple[tuple[str, int], ...] = ()
    """Direct addresses ``(host, port)`` to try, in order."""
    relays: tuple[str, ...] = ()
    """Relays (``host:port``) through which the issuer can be reached."""
    token: str
    """The access token (an EdDSA JWT, see :mod:`aetherflow_sdk.session._tokens`)."""
    name: str = ""
    """The document's name: a label for people, not its identity (empty if unknown)."""
    secret: bytes | None = None
    """The document's 32-byte holder secret, or None (an older ticket)."""

    def __attrs_post_init__(self) -> None:
        if len(self.issuer) != 32:
            raise InvalidTicket(f"a ticket's issuer is a 32-byte node ID, got {len(self.issuer)} bytes")
        if len(self.direct) + len(self.relays) > MAX_ADDRESSES:
            raise InvalidTicket(f"a ticket holds at most {MAX_ADDRESSES} addresses")
        for host, port in self.direct:
            _address_host(host)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidTicket(f"port {port!r} of {host} is not in 1..65535")
        if not self.token or len(self.token) > MAX_TOKEN_LENGTH:
            raise InvalidTicket("a ticket's token is empty or too long")
        if len(self.name) > MAX_NAME_LENGTH:
            raise InvalidTicket(f"a ticket's document name is at most {MAX_NAME_LENGTH} characters")
        if self.secret is not None and len(self.secret) != SECRET_LENGTH:
            raise InvalidTicket(
                f"a ticket's document secret is {SECRET_LENGTH} bytes, got {len(self.secret)}"
            )

    def encode(self) -> str:
        """The ticket as text: ``af1`` followed by lowercase base32."""
        fields: dict[str, Any] = {
            "d": self.document,
            "i": self.issuer,
            "a": [[host, port] for host, port in self.direct],
            "r": list(self.relays),
            "t": self.token,
        }
        if self.name:
            fields["n"] = self.name
        if self.secret is not None:
            fields["s"] = self.secret
        body = msgpack.packb(fields, use_bin_type=True)
        payload = bytes([TICKET_VERSION]) + body
        payload += _checksum(payload)
        return TICKET_PREFIX + base64.b32encode(payload).decode("ascii").rstrip("=").lower()

    @classmethod
    def parse(cls, text: str) -> Ticket:
        """Read a ticket; raises :class:`InvalidTicket` with what is wrong, and nothing else."""
        text = text.strip()
        if len(text) > MAX_TICKET_LENGTH:
            raise InvalidTicket(f"this text is {len(text)} characters, far longer than a ticket")
        if not text.startswith(TICKET_PREFIX):
            raise InvalidTicket(f"a ticket starts with {TICKET_PREFIX!r}; this text does not")
        encoded = text[len(TICKET_PREFIX) :].upper()
        try:
            payload = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
        except (binascii.Error, ValueError):
            raise InvalidTicket(
                "the ticket contains characters outside base32; was it copied whole?"
            ) from None
        if len(payload) < 1 + CHECKSUM_LENGTH:
            raise InvalidTicket("the ticket is too short; was it copied whole?")
        signed, checksum = payload[:-CHECKSUM_LENGTH], payload[-CHECKSUM_LENGTH:]
        if _checksum(signed) != checksum:
            raise InvalidTicket("the ticket's checksum does not match: it was truncated or mistyped")
        if signed[0] != TICKET_VERSION:
            raise InvalidTicket(
                f"this is a version {signed[0]} ticket; this AetherFlow reads version {TICKET_VERSION}"
                " (upgrade to read newer tickets)"
            )
        return _parse_body(signed[1:])


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()[:CHECKSUM_LENGTH]


def _parse_body(body: bytes) -> Ticket:
    """The msgpack body of a ticket; raises InvalidTicket, and only that, if it is not a ticket's."""
    try:
        fields: Any = msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_bin_len=1024, max_str_len=8192
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        raise InvalidTicket("the ticket's body is not valid msgpack") from None
    if not isinstance(fields, dict):
        raise InvalidTicket("the ticket's body is not a map")
    document, issuer, direct, relays, token = (fields.get(k) for k in ("d", "i", "a", "r", "t"))
    name, secret = fields.get("n", ""), fields.get("s")
    if not isinstance(name, str):
        raise InvalidTicket("the ticket's document name is not text")
    if secret is not None and not isinstance(secret, bytes):
        raise InvalidTicket("the ticket's document secret is not bytes")
    if not isinstance(document, str) or not document:
        raise InvalidTicket("the ticket has no document ID")
    if not isinstance(issuer, bytes):
        raise InvalidTicket("the ticket has no issuer node ID")
    if not isinstance(token, str):
        raise InvalidTicket("the ticket has no token")
    direct = [] if direct is None else direct
    relays = [] if relays is None else relays
    if not isinstance(direct, list) or not all(isinstance(a, list) and len(a) == 2 for a in direct):
        raise InvalidTicket("the ticket's direct addresses are not [host, port] pairs")
    if not isinstance(relays, list) or not all(isinstance(r, str) and r for r in relays):
        raise InvalidTicket("the ticket's relays are not host:port strings")
    return Ticket(
        document=document,
        issuer=issuer,
        direct=tuple((_address_host(host), port) for host, port in direct),
        relays=tuple(relays),
        token=token,
        name=name,
        secret=secret,
    )


def share_ticket(
    identity: Identity,
    *,
    document: str,
    user: str,
    permission: Permission | str,
    expires_in: float,
    now: float,
    direct: tuple[tuple[str, int], ...] = (),
    relays: tuple[str, ...] = (),
    holder: bytes | None = None,
    name: str = "",
    secret: bytes | None = None,
    token_id: str | None = None,
) -> Ticket:
    """Issue a token for ``user`` and wrap it in a ticket pointing at this node (``aetherflow share``)."""
    token = issue_token(
        identity,
        user=user,
        document=document,
        permission=permission,
        expires_in=expires_in,
        now=now,
        holder=holder,
        token_id=token_id,
    )
    return Ticket(
        document=document,
        issuer=identity.node_id,
        direct=direct,
        relays=relays,
        token=token,
        name=name,
        secret=secret,
    )


def describe_ticket(ticket: Ticket) -> str:
    """A one-line human summary (no token)."""
    where = [f"{h}:{p}" for h, p in ticket.direct] + [f"relay {r}" for r in ticket.relays]
    label = f"{ticket.name!r} ({ticket.document})" if ticket.name else repr(ticket.document)
    return (
        f"document {label} from {format_node_id(ticket.issuer)}"
        f" via {', '.join(where) if where else 'no address (discovery only)'}"
    )
