"""The y-protocols wire format, byte for byte, and its one failure mode (BadPacket)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text, create_sync_message, create_update_message

from aetherflow_sdk import BadPacket
from aetherflow_sdk.replica import is_write_message
from aetherflow_sdk.replica._wire import (
    AwarenessEntry,
    AwarenessUpdate,
    PermissionDenied,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_awareness,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    encode_varuint,
    parse_message_untrusted,
    parse_state_vector_untrusted,
)


def test_varuint_matches_lib0() -> None:
    assert encode_varuint(0) == b"\x00"
    assert encode_varuint(127) == b"\x7f"
    assert encode_varuint(128) == b"\x80\x01"
    assert encode_varuint(300) == b"\xac\x02"
    assert encode_varuint(2**53 - 1) == b"\xff\xff\xff\xff\xff\xff\xff\x0f"
    with pytest.raises(ValueError):
        encode_varuint(2**53)


def test_messages_byte_for_byte() -> None:
    # messageSync=0, messageYjsSyncStep1=0, varUint8Array(state vector)
    assert encode_sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert encode_sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"
    assert encode_sync_update(b"\x01\x02\x03") == b"\x00\x02\x03\x01\x02\x03"
    # messageAuth=2, messagePermissionDenied=0, varString(reason)
    assert encode_permission_denied("no") == b"\x02\x00\x02no"
    # messageAwareness=1, varUint8Array(count=1, clientID=5, clock=2, varString('{"a":1}'))
    body = b"\x01\x05\x02\x07" + b'{"a":1}'
    entry = AwarenessEntry(client_id=5, clock=2, state={"a": 1})
    assert encode_awareness([entry]) == b"\x01" + bytes([len(body)]) + body
    null = AwarenessEntry(client_id=5, clock=3, state=None)
    assert encode_awareness([null]) == b"\x01\x08\x01\x05\x03\x04null"


def test_compatible_with_pycrdt_reference_encoder() -> None:
    """pycrdt ships y-protocols' encoder in Python; our bytes must equal its bytes."""
    doc: Doc[Text] = Doc()
    doc.get("text", type=Text).insert(0, "héllo")
    assert create_sync_message(doc) == encode_sync_step1(doc.get_state())
    update = doc.get_update()
    assert create_update_message(update) == encode_sync_update(update)
    assert parse_message_untrusted(create_update_message(update)) == SyncUpdate(update=update)


def test_round_trips() -> None:
    entries = (
        AwarenessEntry(client_id=2**40, clock=7, state={"user": {"name": "ada", "color": "#fff"}}),
        AwarenessEntry(client_id=1, clock=0, state=None),
    )
    for message in (
        SyncStep1(state_vector=b"\x01\x02\x03"),
        SyncStep2(update=b"\x00\x00"),
        SyncUpdate(update=b"x" * 300),
        AwarenessUpdate(entries=entries),
        PermissionDenied(reason="read-only ✋"),
    ):
        if isinstance(message, SyncStep1):
            data = encode_sync_step1(message.state_vector)
        elif isinstance(message, SyncStep2):
            data = encode_sync_step2(message.update)
        elif isinstance(message, SyncUpdate):
            data = encode_sync_update(message.update)
        elif isinstance(message, AwarenessUpdate):
            data = encode_awareness(list(message.entries))
        else:
            data = encode_permission_denied(message.reason)
        assert parse_message_untrusted(data) == message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x03",  # unknown message type
        b"\x00\x03\x00",  # unknown sync type
        b"\x00\x00\x05ab",  # length past the end
        b"\x00\x00\x01\x00extra",  # trailing bytes
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80",  # varuint too long
        b"\x01\x05\x01\x01\x01\x01{",  # awareness: state not JSON
        b"\x01\x06\x01\x01\x01\x03[1]",  # awareness: state not an object
        b"\x01\x02\xff\x7f",  # awareness: count larger than the bytes could hold
        b"\x02\x01\x00",  # unknown auth type
        b"\x02\x00\x02\xff\xfe",  # reason not UTF-8
    ],
)
def test_malformed_messages_raise_bad_packet(data: bytes) -> None:
    with pytest.raises(BadPacket):
        parse_message_untrusted(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_bad_packet(data: bytes) -> None:
    for candidate in (data, b"\x00" + data, b"\x01" + data, b"\x02\x00" + data):
        with contextlib.suppress(BadPacket):
            parse_message_untrusted(candidate)
        with contextlib.suppress(BadPacket):
            parse_state_vector_untrusted(candidate)
        assert isinstance(is_write_message(candidate), bool)


def test_every_prefix_of_valid_messages_is_rejected_cleanly() -> None:
    entry = AwarenessEntry(client_id=300, clock=1, state={"cursor": None})
    messages = (encode_sync_update(b"\x01\x02\x03"), encode_awareness([entry]), encode_permission_denied("x"))
    for data in messages:
        for cut in range(len(data)):
            with pytest.raises(BadPacket):
                parse_message_untrusted(data[:cut])


def test_is_write_message() -> None:
    assert is_write_message(encode_sync_update(b"\x00\x00"))
    assert is_write_message(encode_sync_step2(b"\x00\x00"))
    assert not is_write_message(encode_sync_step1(b"\x00"))
    assert not is_write_message(encode_awareness([]))
    assert not is_write_message(encode_permission_denied("x"))
    assert not is_write_message(b"")
    assert not is_write_message(b"\x80")
