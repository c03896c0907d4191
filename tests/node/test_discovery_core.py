"""The sans-I/O half of LAN discovery: tags, the TXT record, the table of LAN peers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_node._discovery import open_discovery
from aetherflow_node._discovery_core import (
    MAX_NAME_BYTES,
    MAX_TAGS,
    TAG_LENGTH,
    Advertisement,
    FoundPeer,
    LanPeers,
    advertised_ipv4,
    document_tag,
    encode_txt,
    instance_name,
    parse_announcement_untrusted,
    shared_documents,
)
from aetherflow_sdk._errors import BadPacket, LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id


def raw_id(seed: int) -> bytes:
    return Identity.from_private_bytes(seed.to_bytes(32, "big")).node_id


def text_id(seed: int) -> str:
    return format_node_id(raw_id(seed))


SECRET_A = b"document A secret, 32 bytes long"
SECRET_B = b"document B secret, 32 bytes long"


def test_a_holder_recomputes_the_tag_and_nothing_links_it() -> None:
    tag = document_tag(SECRET_A, raw_id(1))
    assert len(tag) == TAG_LENGTH
    assert document_tag(SECRET_A, raw_id(1)) == tag  # a holder recomputes it
    assert document_tag(SECRET_A, raw_id(2)) != tag  # the same document on another node looks unrelated
    assert document_tag(SECRET_B, raw_id(1)) != tag  # two documents of one node look unrelated
    assert SECRET_A not in tag and raw_id(1)[:TAG_LENGTH] != tag


def test_document_tag_refuses_a_short_secret_or_a_text_node_id() -> None:
    with pytest.raises(LocalProtocolError, match="at least 16 bytes"):
        document_tag(b"short", raw_id(1))
    with pytest.raises(LocalProtocolError, match="parse_node_id"):
        document_tag(SECRET_A, text_id(1).encode())


def _announce(advertisement: Advertisement, addresses: list[str], port: int = 4000) -> FoundPeer:
    properties, left_out = encode_txt(advertisement)
    assert left_out == 0
    return parse_announcement_untrusted(instance_name(advertisement.node_id), properties, addresses, port)


def test_txt_round_trip_and_what_it_does_not_carry() -> None:
    tags = frozenset({document_tag(SECRET_A, raw_id(1)), document_tag(SECRET_B, raw_id(1))})
    ad = Advertisement(node_id=text_id(1), name="Zoë 東京", tags=tags)
    properties, _ = encode_txt(ad)
    assert SECRET_A not in b"".join(properties.values())
    found = _announce(ad, ["10.0.0.5", "fe80::1%eth0"])
    assert found == FoundPeer(
        node_id=text_id(1),
        name="Zoë 東京",
        addresses=(("10.0.0.5", 4000), ("fe80::1", 4000)),
        tags=tags,
    )
    assert shared_documents(found, {"a": SECRET_A, "b": SECRET_B, "c": b"c" * 32}) == ("a", "b")


def test_a_long_name_is_cut_on_a_code_point_and_too_many_tags_are_left_out() -> None:
    ad = Advertisement(node_id=text_id(1), name="é" * 40, tags=frozenset())
    assert _announce(ad, ["10.0.0.1"]).name == "é" * (MAX_NAME_BYTES // 2)
    many = frozenset(i.to_bytes(TAG_LENGTH, "big") for i in range(MAX_TAGS + 7))
    properties, left_out = encode_txt(Advertisement(node_id=text_id(1), name="", tags=many))
    assert left_out == 7
    assert all(len(v) <= 252 for v in properties.values())
    found = parse_announcement_untrusted(instance_name(text_id(1)), properties, ["10.0.0.1"], 1)
    assert found.tags == frozenset(sorted(many)[:MAX_TAGS])
    with pytest.raises(LocalProtocolError, match="tag is 8 bytes"):
        encode_txt(Advertisement(node_id=text_id(1), name="", tags=frozenset({b"short"})))


def _good() -> tuple[str, dict[bytes, bytes | None], list[str], int]:
    properties, _ = encode_txt(Advertisement(node_id=text_id(1), name="a", tags=frozenset({bytes(8)})))
    return instance_name(text_id(1)), dict(properties), ["10.0.0.1"], 4000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n, p, a, port: (n, {**p, b"v": b"2"}, a, port), "version"),
        (lambda n, p, a, port: (n, {**p, b"id": b"nonsense"}, a, port), "node ID"),
        (lambda n, p, a, port: (instance_name(text_id(2)), p, a, port), "instance name"),
        (lambda n, p, a, port: (n, {**p, b"n": b"\xff\xfe"}, a, port), "UTF-8"),
        (lambda n, p, a, port: (n, {**p, b"n": b"a\x1b[2J"}, a, port), "control"),
        (lambda n, p, a, port: (n, {**p, b"t0": b"1234567"}, a, port), "tag string"),
        (lambda n, p, a, port: (n, p, ["not an address"], port), "not an IP"),
        (lambda n, p, a, port: (n, p, [], port), "without an address"),
        (lambda n, p, a, port: (n, p, a, 0), "port"),
        (lambda n, p, a, port: (n, p, a, None), "port"),
        (lambda n, p, a, port: (n, {k: v for k, v in p.items() if k != b"id"}, a, port), "without a node ID"),
    ],
)
def test_malformed_announcements_raise_bad_packet(change: object, message: str) -> None:
    args = change(*_good())  # type: ignore[operator]
    with pytest.raises(BadPacket, match=message):
        parse_announcement_untrusted(*args)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=80),
    properties=st.dictionaries(
        st.sampled_from([b"v", b"id", b"n", b"t0", b"t1", b"t2", b"x"]) | st.binary(max_size=5),
        st.none() | st.binary(max_size=300),
        max_size=8,
    ),
    addresses=st.lists(st.text(max_size=40), max_size=4),
    port=st.none() | st.integers(-5, 70000),
    keep_valid=st.booleans(),
)
def test_any_announcement_parses_or_raises_bad_packet(
    name: str, properties: dict[bytes, bytes | None], addresses: list[str], port: int | None, keep_valid: bool
) -> None:
    # The one rule of untrusted input: parsed, or BadPacket; nothing else.
    if keep_valid:
        good_name, good, _, _ = _good()
        properties = {**good, **properties}
        name = good_name
    with contextlib.suppress(BadPacket):
        parse_announcement_untrusted(name, properties, addresses, port)


def test_lan_peers_reports_changes_once_ignores_itself_and_counts_garbage() -> None:
    lan = LanPeers(text_id(9), max_peers=2)
    name, properties, addresses, port = _good()
    first = lan.update_untrusted(name, properties, addresses, port)
    assert first is not None and first.node_id == text_id(1)
    assert lan.update_untrusted(name, properties, addresses, port) is None  # a re-announcement
    changed, _ = encode_txt(Advertisement(node_id=text_id(1), name="a", tags=frozenset({b"\x01" * 8})))
    update = lan.update_untrusted(name, changed, addresses, port)
    assert update is not None and update.tags == {b"\x01" * 8}
    own, _ = encode_txt(Advertisement(node_id=text_id(9), name="me", tags=frozenset()))
    assert lan.update_untrusted(instance_name(text_id(9)), own, addresses, port) is None
    assert lan.update_untrusted(name, {b"v": b"1"}, addresses, port) is None
    assert lan.bad_announcements == 1
    # A third node while two slots are taken... first fill the second slot.
    for seed in (2, 3):
        props, _ = encode_txt(Advertisement(node_id=text_id(seed), name="", tags=frozenset()))
        lan.update_untrusted(instance_name(text_id(seed)), props, addresses, port)
    assert [p.node_id for p in lan.peers] == [text_id(1), text_id(2)]
    assert lan.peers_ignored == 1
    gone = lan.remove(name.upper())  # DNS names compare without case
    assert gone == FoundPeer(node_id=text_id(1), name="a", addresses=(), tags=frozenset(), removed=True)
    assert lan.remove(name) is None


def test_published_addresses() -> None:
    machine = ["127.0.0.1", "192.168.1.20", "fe80::1", "10.1.1.1"]
    assert advertised_ipv4(None, machine) == ["192.168.1.20", "10.1.1.1"]
    assert advertised_ipv4(None, ["127.0.0.1"]) == ["127.0.0.1"]
    assert advertised_ipv4(["127.0.0.1"], machine) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node_id": "not-a-node"}, "not a node ID"),
        ({"port": 0}, "out of range"),
        ({"interfaces": ["eth0"]}, "not an IP address"),
        ({"interfaces": []}, "names no interface"),
    ],
)
async def test_open_discovery_checks_its_arguments_before_touching_the_network(
    kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "node_id": text_id(1),
        "port": 4000,
        "interfaces": ["127.0.0.1"],
        **kwargs,
    }
    with pytest.raises(LocalProtocolError, match=message):
        async with open_discovery(**arguments):  # type: ignore[arg-type]
            pass
