"""Tickets: round trip, and clear refusals of bad checksums, unknown versions and junk."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import InvalidTicket, Ticket, TokenVerifier, describe_ticket, share_ticket
from tests.session._helpers import T0

OWNER = Identity.from_private_bytes(bytes(range(32)))


def _ticket() -> Ticket:
    return share_ticket(
        OWNER,
        document="notes",
        user="bob",
        permission="ro",
        expires_in=7 * 86_400,
        now=T0,
        direct=(("127.0.0.1", 4433), ("::1", 4433)),
        relays=("relay.example:443",),
    )


def _raw(text: str) -> bytes:
    body = text[3:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))


def _text(raw: bytes) -> str:
    return "af1" + base64.b32encode(raw).decode().rstrip("=").lower()


def test_round_trip_and_the_token_inside_verifies() -> None:
    ticket = _ticket()
    text = ticket.encode()
    assert text.startswith("af1") and text == text.lower() and text.isalnum()
    parsed = Ticket.parse(f"  {text}\n")
    assert parsed == ticket
    claims = TokenVerifier([parsed.issuer]).verify(parsed.token, document="notes", now=T0)
    assert claims.user == "bob" and claims.permission.value == "ro"
    assert "127.0.0.1:4433" in describe_ticket(parsed) and "relay relay.example:443" in describe_ticket(
        parsed
    )


def test_bad_checksum_is_refused() -> None:
    raw = bytearray(_raw(_ticket().encode()))
    raw[10] ^= 0x40
    with pytest.raises(InvalidTicket, match="checksum"):
        Ticket.parse(_text(bytes(raw)))
    with pytest.raises(InvalidTicket, match=r"checksum|copied whole"):
        Ticket.parse(_ticket().encode()[:-7])  # truncated paste


def test_unknown_version_is_refused_with_a_clear_message() -> None:
    raw = _raw(_ticket().encode())
    body = raw[1:-4]
    forged = bytes([2]) + body
    forged += hashlib.blake2s(forged).digest()[:4]
    with pytest.raises(InvalidTicket, match="version 2 ticket; this AetherFlow reads version 1"):
        Ticket.parse(_text(forged))


def test_unknown_fields_are_ignored_and_bad_types_refused() -> None:
    def wrap(fields: dict[str, object]) -> str:
        payload = b"\x01" + msgpack.packb(fields, use_bin_type=True)
        return _text(payload + hashlib.blake2s(payload).digest()[:4])

    good = {"d": "doc", "i": OWNER.node_id, "a": [["h", 1]], "r": [], "t": "tok", "future": {"x": 1}}
    assert Ticket.parse(wrap(good)).document == "doc"
    for key, value in [
        ("d", 5),
        ("i", "text"),
        ("a", [["h", "port"]]),
        ("a", "h:1"),
        ("r", [3]),
        ("t", None),
    ]:
        with pytest.raises(InvalidTicket):
            Ticket.parse(wrap({**good, key: value}))
    with pytest.raises(InvalidTicket, match="32-byte"):
        Ticket.parse(wrap({**good, "i": b"short"}))


@pytest.mark.parametrize("text", ["", "af1", "af2abc", "hello", "af1!!!!", "af1" + "a" * 20_000])
def test_junk_is_refused(text: str) -> None:
    with pytest.raises(InvalidTicket):
        Ticket.parse(text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_payload_is_parsed_or_refused_with_invalid_ticket(data: bytes) -> None:
    # With a valid checksum, so that the body parser itself is exercised.
    for version in (b"", b"\x01"):
        payload = version + data
        text = _text(payload + hashlib.blake2s(payload).digest()[:4])
        with contextlib.suppress(InvalidTicket):
            Ticket.parse(text)


def test_invalid_ticket_is_a_local_protocol_error() -> None:
    # The CLI dispatcher prints AetherFlowError subclasses as one line, without a traceback.
    assert issubclass(InvalidTicket, LocalProtocolError)
