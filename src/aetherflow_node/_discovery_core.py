"""LAN discovery, the sans-I/O part: document tags, the TXT record, and who is on the LAN.

A node advertises one mDNS service of type ``_aetherflow._udp.local.`` (RFC 6763
DNS-SD). Its instance name is the node ID; its SRV record gives the Quantum UDP
port, its A/AAAA records the addresses. The TXT record (RFC 6763 §6) carries:

=========  ==========================================================
key        value
=========  ==========================================================
``v``      format version, ``1``
``id``     the node ID, text form (52 base32 characters)
``n``      the node's name, UTF-8, at most 63 bytes (may be absent)
``t0``…    document tags, raw bytes, :data:`TAG_LENGTH` each, at most
           :data:`TAGS_PER_STRING` per key (each TXT string ≤ 255 bytes)
=========  ==========================================================

Documents appear only as **tags**: ``document_tag(doc_secret, advertiser_node_id)``,
a keyed hash that only holders of the document's secret can recompute. A LAN
observer learns neither the name nor the identity of what a node edits, cannot
tell two of its documents apart from two others, and cannot link one document
across two nodes (each advertiser's tag for it differs). Nothing here is
authenticated: anyone on the LAN can claim any node ID. Authentication happens
when the node dials the peer (the Quantum handshake pins the node ID), so a
forged advertisement costs a failed handshake, nothing more.

Everything in this module is pure: the shell in ``_discovery.py`` feeds it what
zeroconf resolved and publishes what it encodes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import attrs

from aetherflow_sdk._errors import BadPacket, LocalProtocolError
from aetherflow_sdk._identity import NODE_ID_LENGTH, format_node_id, parse_node_id

SERVICE_TYPE = "_aetherflow._udp.local."
"""The DNS-SD service type every node advertises and browses."""

FORMAT_VERSION = b"1"
TAG_LENGTH = 8
"""Bytes per document tag: 64 bits keep accidental collisions negligible on any LAN
(a collision only costs one pointless dial)."""
_TXT_STRING_MAX = 255  # RFC 6763 §6.1: one length byte per TXT string
TAGS_PER_STRING = (_TXT_STRING_MAX - len(b"t0=")) // TAG_LENGTH
TAG_STRINGS = 3
MAX_TAGS = TAGS_PER_STRING * TAG_STRINGS
"""Tags one advertisement carries (93). With them the whole answer stays under ~1 KB,
inside one mDNS packet on an Ethernet MTU (RFC 6762 §17)."""
MAX_NAME_BYTES = 63
MIN_SECRET_LENGTH = 16
_TAG_CONTEXT = b"aetherflow/mdns-document-tag/v1\x00"
MAX_PEERS = 256
"""LAN peers remembered at once; further ones are ignored (a flood cannot grow memory)."""


def document_tag(doc_secret: bytes, advertiser_node_id: bytes) -> bytes:
    """The tag under which ``advertiser_node_id`` advertises the document keyed by ``doc_secret``.

    HMAC-SHA256 keyed by the document's secret over the advertiser's node ID,
    truncated to :data:`TAG_LENGTH` bytes. A holder recomputes it for any node it
    sees; without the secret it is indistinguishable from random, and it differs
    per advertiser, so one document cannot be linked across nodes.
    """
    if len(doc_secret) < MIN_SECRET_LENGTH:
        raise LocalProtocolError(
            f"a document secret must be at least {MIN_SECRET_LENGTH} bytes, not {len(doc_secret)}"
        )
    if len(advertiser_node_id) != NODE_ID_LENGTH:
        raise LocalProtocolError(
            f"a node ID is {NODE_ID_LENGTH} raw bytes, not {len(advertiser_node_id)}; "
            "use parse_node_id() on the text form"
        )
    mac = hmac.new(doc_secret, _TAG_CONTEXT + advertiser_node_id, hashlib.sha256)
    return mac.digest()[:TAG_LENGTH]


K = TypeVar("K")


def shared_documents(peer: FoundPeer, secrets: Mapping[K, bytes]) -> tuple[K, ...]:
    """The keys of ``secrets`` (document -> secret) whose document ``peer`` advertises."""
    if not peer.tags:
        return ()
    advertiser = parse_node_id(peer.node_id)
    return tuple(key for key, secret in secrets.items() if document_tag(secret, advertiser) in peer.tags)


@attrs.frozen(kw_only=True)
class FoundPeer:
    """A node seen on the LAN, or (``removed``) one that said goodbye."""

    node_id: str
    """Its node ID, text form, as it claims (verified only when dialled)."""
    name: str
    """The name it advertises (may be empty)."""
    addresses: tuple[tuple[str, int], ...]
    """Where its Quantum endpoint listens: (host, port) pairs; empty when removed."""
    tags: frozenset[bytes]
    """The document tags it advertises (see :func:`document_tag`); empty when removed."""
    removed: bool = False
    """True: the node withdrew its advertisement (goodbye, RFC 6762 §10.1)."""


@attrs.frozen(kw_only=True)
class Advertisement:
    """What one node publishes, before encoding."""

    node_id: str
    name: str
    tags: frozenset[bytes]


def instance_name(node_id: str) -> str:
    """The DNS-SD instance name: the node ID, which is unique, under :data:`SERVICE_TYPE`."""
    return f"{node_id}.{SERVICE_TYPE}"


def host_name(node_id: str) -> str:
    """The host name in the SRV record (one per node, so two nodes on one machine never clash)."""
    return f"af-{node_id}.local."


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    # Cut on a code point boundary.
    return data[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def encode_txt(advertisement: Advertisement) -> tuple[dict[bytes, bytes], int]:
    """The TXT properties for ``advertisement`` and how many tags did not fit.

    At most :data:`MAX_TAGS` tags are published, the smallest first, so the choice
    is stable while the set does not change.
    """
    properties: dict[bytes, bytes] = {b"v": FORMAT_VERSION, b"id": advertisement.node_id.encode("ascii")}
    name = _truncate_utf8(advertisement.name, MAX_NAME_BYTES)
    if name:
        properties[b"n"] = name
    for tag in advertisement.tags:
        if len(tag) != TAG_LENGTH:
            raise LocalProtocolError(f"a document tag is {TAG_LENGTH} bytes (document_tag()), not {len(tag)}")
    tags = sorted(advertisement.tags)
    kept, left_out = tags[:MAX_TAGS], len(tags) - min(len(tags), MAX_TAGS)
    for index in range(TAG_STRINGS):
        chunk = kept[index * TAGS_PER_STRING : (index + 1) * TAGS_PER_STRING]
        if chunk:
            properties[f"t{index}".encode()] = b"".join(chunk)
    return properties, left_out


def _host(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError as exc:
        raise BadPacket(f"address {address!r} is not an IP address") from exc


def parse_announcement_untrusted(
    service_name: str,
    properties: Mapping[bytes, bytes | None],
    addresses: Sequence[str],
    port: int | None,
) -> FoundPeer:
    """Decode what zeroconf resolved for ``service_name``; raises only :class:`BadPacket`."""
    try:
        return _parse_announcement(service_name, properties, addresses, port)
    except BadPacket:
        raise
    except Exception as exc:  # anything odd in attacker-chosen bytes is one kind of failure
        raise BadPacket(f"malformed announcement: {exc}") from exc


def _parse_announcement(
    service_name: str,
    properties: Mapping[bytes, bytes | None],
    addresses: Sequence[str],
    port: int | None,
) -> FoundPeer:
    if properties.get(b"v") != FORMAT_VERSION:
        raise BadPacket(f"unknown announcement version {properties.get(b'v')!r}")
    raw_id = properties.get(b"id")
    if not raw_id:
        raise BadPacket("announcement without a node ID")
    try:
        node_id = format_node_id(parse_node_id(raw_id.decode("ascii")))
    except (UnicodeDecodeError, LocalProtocolError) as exc:
        raise BadPacket(f"announcement with a malformed node ID: {exc}") from exc
    if service_name.lower() != instance_name(node_id).lower():
        raise BadPacket("the instance name does not match the advertised node ID")
    raw_name = properties.get(b"n") or b""
    if len(raw_name) > MAX_NAME_BYTES:
        raise BadPacket(f"advertised name of {len(raw_name)} bytes (at most {MAX_NAME_BYTES})")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPacket("advertised name is not UTF-8") from exc
    if not name.isprintable():
        raise BadPacket("advertised name has control characters")
    tags: set[bytes] = set()
    for index in range(TAG_STRINGS):
        chunk = properties.get(f"t{index}".encode())
        if chunk is None:
            continue
        if len(chunk) % TAG_LENGTH or len(chunk) > TAGS_PER_STRING * TAG_LENGTH:
            raise BadPacket(f"tag string t{index} of {len(chunk)} bytes")
        tags.update(chunk[i : i + TAG_LENGTH] for i in range(0, len(chunk), TAG_LENGTH))
    if port is None or not 0 < port < 65536:
        raise BadPacket(f"announcement with port {port!r}")
    hosts = tuple(dict.fromkeys(_host(a) for a in addresses))
    if not hosts:
        raise BadPacket("announcement without an address")
    return FoundPeer(
        node_id=node_id,
        name=name,
        addresses=tuple((host, port) for host in hosts[:8]),
        tags=frozenset(tags),
    )


@attrs.frozen(kw_only=True)
class DiscoveryStatistics:
    """Counters of one discovery instance."""

    available: bool
    """mDNS runs (False: turned off by the environment, see the notice in the log)."""
    peers: int
    """Other nodes seen on the LAN now."""
    announcements: int
    """Resolved announcements of other nodes processed (new, changed or unchanged)."""
    bad_announcements: int
    """Announcements dropped as malformed (BadPacket)."""
    peers_ignored: int
    """Announcements of new nodes ignored because :data:`MAX_PEERS` were known."""
    events_dropped: int
    """Events not delivered because a subscriber's buffer was full."""
    tags_advertised: int
    """Document tags in our advertisement now."""
    tags_left_out: int
    """Tags asked for that did not fit (more than :data:`MAX_TAGS`)."""
    publishes: int
    """Times our advertisement was (re)published."""


class LanPeers:
    """Who is on the LAN, from resolved announcements and goodbyes: a table, no I/O.

    ``update`` and ``remove`` return the event to hand to subscribers, or None when
    nothing a subscriber cares about changed (a re-announcement, our own record).
    """

    def __init__(self, own_node_id: str, *, max_peers: int = MAX_PEERS) -> None:
        self._own = own_node_id
        self._max = max_peers
        self._by_service: dict[str, FoundPeer] = {}
        self.announcements = 0
        self.bad_announcements = 0
        self.peers_ignored = 0

    @property
    def peers(self) -> tuple[FoundPeer, ...]:
        """The nodes seen now, in the order they were first seen."""
        return tuple(self._by_service.values())

    def update_untrusted(
        self,
        service_name: str,
        properties: Mapping[bytes, bytes | None],
        addresses: Sequence[str],
        port: int | None,
    ) -> FoundPeer | None:
        """A resolved announcement; a malformed one is counted and dropped (None)."""
        try:
            peer = parse_announcement_untrusted(service_name, properties, addresses, port)
        except BadPacket:
            self.bad_announcements += 1
            return None
        if peer.node_id == self._own:
            return None
        self.announcements += 1
        key = service_name.lower()
        previous = self._by_service.get(key)
        if previous == peer:
            return None
        if previous is None and len(self._by_service) >= self._max:
            self.peers_ignored += 1
            return None
        self._by_service[key] = peer
        return peer

    def remove(self, service_name: str) -> FoundPeer | None:
        """The node behind ``service_name`` said goodbye (or its records expired)."""
        previous = self._by_service.pop(service_name.lower(), None)
        if previous is None:
            return None
        return FoundPeer(
            node_id=previous.node_id, name=previous.name, addresses=(), tags=frozenset(), removed=True
        )


def advertised_ipv4(interfaces: Iterable[str] | None, machine_addresses: Iterable[str]) -> list[str]:
    """The addresses to publish: the chosen interfaces' IPv4 addresses, or else the machine's.

    Loopback is published only when chosen explicitly or when it is all there is.
    """
    if interfaces is not None:
        chosen = [a for a in interfaces if ipaddress.ip_address(a).version == 4]
        return list(dict.fromkeys(chosen))
    found = [a for a in machine_addresses if ipaddress.ip_address(a).version == 4]
    outward = [a for a in found if not ipaddress.ip_address(a).is_loopback]
    return list(dict.fromkeys(outward or found))
