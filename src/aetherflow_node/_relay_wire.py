"""The relay protocol's wire format, shared by the relay server and the node's relay client.

Two kinds of bytes cross between a node and its relay (docs/protocol.md, "Relay"):

* **Control messages** travel as reliable Quantum messages on the node's own Quantum
  connection to the relay. That connection's authenticated peer ID *is* the node ID the
  relay files the node under, so no control message names its sender: a registration for
  someone else's node ID cannot even be written down.
* **Data frames** are raw datagrams on the Quantum socket (the first-byte rule: their first
  byte is 0x40 or above). ``SEND`` carries an end-to-end encrypted Quantum packet from a
  node to the relay, addressed by destination node ID; ``DELIVER`` carries it on to the
  destination, naming its source node ID. ``PROBE`` goes between two nodes punching
  through their NATs.

Every parser of network bytes here is ``*_untrusted`` and raises only :class:`BadPacket`.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import Final

import attrs

from aetherflow_sdk._errors import BadPacket, LocalProtocolError

Address = tuple[str, int]

NODE_ID_SIZE: Final = 32
TAG_SIZE: Final = 8  # the relay's per-registration tag that SEND frames carry
MAX_CANDIDATES: Final = 8  # addresses one node offers for hole punching
MAX_TOKEN_SIZE: Final = 4096  # the session layer's MAX_TOKEN_LENGTH
MAX_REASON_SIZE: Final = 512
MAX_SERVE_TICKET_SIZE: Final = 8192  # a ticket is under 1 KiB; the session layer caps tokens at 4 KiB
MAX_DOCUMENT_ID_SIZE: Final = 256


class ControlKind(enum.IntEnum):
    """The first byte of a control message."""

    REGISTER = 0x01  # node -> relay: token, candidate addresses
    CONNECT = 0x02  # node -> relay: punch to this peer, here are my candidates
    PUNCH_RESULT = 0x03  # node -> relay: how a punch ended (for the relay's counters)
    SERVE = 0x04  # node -> relay: host this document (a ticket the relay's node can join with)
    REGISTERED = 0x81  # relay -> node: tag, largest packet, observed address
    OBSERVED = 0x82  # relay -> node: the observed address changed
    PUNCH = 0x83  # relay -> node: the peer's candidates and when to send probes
    REFUSED = 0x84  # relay -> node: a request refused (code, subject, reason)
    SERVED = 0x85  # relay -> node: the answer to SERVE (document, code, reason)


class FrameKind(enum.IntEnum):
    """The first byte of a raw datagram of the relay protocol (all >= 0x40: not Quantum)."""

    PROBE = 0x50  # "P": node <-> node, hole punching
    SEND = 0x52  # "R": node -> relay, forward this packet
    DELIVER = 0x53  # "S": relay -> node, a packet from this source


class RefusalCode(enum.IntEnum):
    """Why the relay refused a request (REFUSED); stable codes on the wire."""

    AUTH = 1  # no token, or the token does not verify (``--require-token``)
    FULL = 2  # the relay has its maximum number of clients
    NOT_REGISTERED = 3  # a request before REGISTER
    UNKNOWN_PEER = 4  # CONNECT to a node that is not registered here
    RATE_LIMITED = 5  # too many control messages
    PROTOCOL = 6  # a malformed or out-of-order message


class ServeCode(enum.IntEnum):
    """The answer to SERVE (SERVED); stable codes on the wire."""

    ACCEPTED = 0  # the relay's node holds the document now
    NOT_HOSTING = 1  # this relay hosts no documents (no --data-dir)
    BAD_TICKET = 2  # not a ticket, or its token does not verify (forged, expired, another holder)
    NOT_ALLOWED = 3  # neither on the operator's --serve list nor a serve ticket for this relay
    FULL = 4  # the relay serves its maximum number of documents
    FAILED = 5  # the relay could not open the document (its storage)


# ------------------------------------------------------------------ records


@attrs.frozen(kw_only=True)
class Register:
    token: str | None
    """An EdDSA token from an issuer the relay trusts, or None (a personal relay needs none)."""
    candidates: tuple[Address, ...]
    """The node's own (local) addresses, offered to peers that punch to it."""


@attrs.frozen(kw_only=True)
class Connect:
    peer: bytes
    """The node ID to punch to."""
    candidates: tuple[Address, ...]
    """The asking node's current candidate addresses (replacing those it registered)."""


@attrs.frozen(kw_only=True)
class PunchResult:
    punch_id: int
    direct: bool
    """True when the punch found a direct path."""


@attrs.frozen(kw_only=True)
class Registered:
    tag: bytes
    """8 bytes every SEND frame of this registration carries."""
    max_packet_size: int
    """The largest Quantum packet the relay forwards (SEND payload)."""
    observed: Address
    """The node's public address as the relay sees it (what STUN reports)."""
    serve: Address | None = None
    """Where the relay's persistence peer (its node, same node ID) listens, if it hosts documents.
    An unspecified host (``0.0.0.0`` / ``::``) means the host the node reached the relay at.
    Optional on the wire: absent in a relay that hosts nothing."""


@attrs.frozen(kw_only=True)
class Serve:
    ticket: str
    """An ``af1…`` ticket whose token the relay's node may use (see docs/protocol.md)."""


@attrs.frozen(kw_only=True)
class Served:
    document: str
    """The ticket's document ID ("" if the ticket did not parse)."""
    code: ServeCode
    reason: str
    """Why not (empty when accepted)."""


@attrs.frozen(kw_only=True)
class Observed:
    observed: Address


@attrs.frozen(kw_only=True)
class Punch:
    peer: bytes
    punch_id: int
    delay: float
    """Seconds from receipt until the probes go (both sides get their own, timed by RTT)."""
    candidates: tuple[Address, ...]
    """The peer's addresses: its observed public one first."""


@attrs.frozen(kw_only=True)
class Refused:
    code: RefusalCode
    subject: bytes
    """The node ID the refusal is about (a CONNECT's peer), or 32 zero bytes."""
    reason: str


ControlMessage = (
    Register | Connect | PunchResult | Serve | Registered | Observed | Punch | Refused | Served
)


@attrs.frozen(kw_only=True)
class SendFrame:
    tag: bytes
    destination: bytes
    packet: bytes


@attrs.frozen(kw_only=True)
class DeliverFrame:
    source: bytes
    packet: bytes


@attrs.frozen(kw_only=True)
class ProbeFrame:
    punch_id: int
    sender: bytes


Frame = SendFrame | DeliverFrame | ProbeFrame

NO_SUBJECT: Final = bytes(NODE_ID_SIZE)
SEND_OVERHEAD: Final = 1 + TAG_SIZE + NODE_ID_SIZE
DELIVER_OVERHEAD: Final = 1 + NODE_ID_SIZE
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_PUNCH_HEAD: Final = struct.Struct("!32sII")  # peer, punch id, delay in microseconds
_REGISTERED_HEAD: Final = struct.Struct("!8sI")
_PROBE: Final = struct.Struct("!BI32s")
_PUNCH_RESULT: Final = struct.Struct("!BIB")


# ------------------------------------------------------------------ addresses


def encode_address(address: Address) -> bytes:
    """family (4 or 6), 4 or 16 address bytes, port (u16)."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"a relay address is a numeric IP address, got {host!r}") from None
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"a port is 0..65535, got {port}")
    return bytes([ip.version]) + ip.packed + _U16.pack(port)


def _address_untrusted(data: bytes, offset: int) -> tuple[Address, int]:
    if offset >= len(data):
        raise BadPacket("truncated address")
    family = data[offset]
    size = {4: 4, 6: 16}.get(family)
    if size is None:
        raise BadPacket(f"address family {family} is not 4 or 6")
    end = offset + 1 + size + 2
    if end > len(data):
        raise BadPacket("truncated address")
    packed = data[offset + 1 : offset + 1 + size]
    host = str(ipaddress.IPv4Address(packed) if family == 4 else ipaddress.IPv6Address(packed))
    (port,) = _U16.unpack_from(data, offset + 1 + size)
    return (host, port), end


def _encode_addresses(addresses: tuple[Address, ...]) -> bytes:
    if len(addresses) > MAX_CANDIDATES:
        raise LocalProtocolError(f"at most {MAX_CANDIDATES} candidate addresses, got {len(addresses)}")
    return bytes([len(addresses)]) + b"".join(encode_address(a) for a in addresses)


def _addresses_untrusted(data: bytes, offset: int) -> tuple[tuple[Address, ...], int]:
    if offset >= len(data):
        raise BadPacket("truncated address list")
    count = data[offset]
    if count > MAX_CANDIDATES:
        raise BadPacket(f"{count} candidate addresses, over the limit of {MAX_CANDIDATES}")
    offset += 1
    found = []
    for _ in range(count):
        address, offset = _address_untrusted(data, offset)
        found.append(address)
    return tuple(found), offset


def _text_untrusted(data: bytes, offset: int, limit: int, what: str) -> tuple[str, int]:
    """A u16 length and that many UTF-8 bytes (at most ``limit``)."""
    if offset + 2 > len(data):
        raise BadPacket(f"truncated {what}")
    (size,) = _U16.unpack_from(data, offset)
    end = offset + 2 + size
    if size > limit or end > len(data):
        raise BadPacket(f"{what} of {size} bytes does not fit")
    return data[offset + 2 : end].decode("utf-8"), end


def _check_node_id(node_id: bytes) -> None:
    if len(node_id) != NODE_ID_SIZE:
        raise LocalProtocolError(f"a node ID is {NODE_ID_SIZE} bytes, got {len(node_id)}")


# ------------------------------------------------------------------ control messages


def encode_control(message: ControlMessage) -> bytes:
    """The bytes of one control message."""
    match message:
        case Register(token=token, candidates=candidates):
            raw = (token or "").encode("ascii")
            if len(raw) > MAX_TOKEN_SIZE:
                raise LocalProtocolError(f"a token is at most {MAX_TOKEN_SIZE} bytes, got {len(raw)}")
            return bytes([ControlKind.REGISTER]) + _U16.pack(len(raw)) + raw + _encode_addresses(candidates)
        case Connect(peer=peer, candidates=candidates):
            _check_node_id(peer)
            return bytes([ControlKind.CONNECT]) + peer + _encode_addresses(candidates)
        case PunchResult(punch_id=punch_id, direct=direct):
            return _PUNCH_RESULT.pack(ControlKind.PUNCH_RESULT, punch_id, int(direct))
        case Registered(tag=tag, max_packet_size=size, observed=observed, serve=serve):
            if len(tag) != TAG_SIZE:
                raise LocalProtocolError(f"a relay tag is {TAG_SIZE} bytes, got {len(tag)}")
            return (
                bytes([ControlKind.REGISTERED])
                + _REGISTERED_HEAD.pack(tag, size)
                + encode_address(observed)
                + (encode_address(serve) if serve is not None else b"")
            )
        case Serve(ticket=ticket):
            raw = ticket.encode("ascii")
            if len(raw) > MAX_SERVE_TICKET_SIZE:
                raise LocalProtocolError(f"a SERVE ticket is at most {MAX_SERVE_TICKET_SIZE} bytes")
            return bytes([ControlKind.SERVE]) + _U16.pack(len(raw)) + raw
        case Served(document=document, code=code, reason=reason):
            doc = document.encode("utf-8")[:MAX_DOCUMENT_ID_SIZE]
            text = reason.encode("utf-8")[:MAX_REASON_SIZE]
            return (
                bytes([ControlKind.SERVED, code]) + _U16.pack(len(doc)) + doc + _U16.pack(len(text)) + text
            )
        case Observed(observed=observed):
            return bytes([ControlKind.OBSERVED]) + encode_address(observed)
        case Punch(peer=peer, punch_id=punch_id, delay=delay, candidates=candidates):
            _check_node_id(peer)
            micros = min(max(round(delay * 1e6), 0), 0xFFFFFFFF)
            return (
                bytes([ControlKind.PUNCH])
                + _PUNCH_HEAD.pack(peer, punch_id, micros)
                + _encode_addresses(candidates)
            )
        case Refused(code=code, subject=subject, reason=reason):
            _check_node_id(subject)
            text = reason.encode("utf-8")[:MAX_REASON_SIZE]
            return bytes([ControlKind.REFUSED, code]) + subject + _U16.pack(len(text)) + text
    raise LocalProtocolError(f"not a relay control message: {message!r}")


def parse_control_untrusted(data: bytes) -> ControlMessage:
    """One control message; :class:`BadPacket` for anything else (trailing bytes included)."""
    try:
        return _parse_control(data)
    except BadPacket:
        raise
    except (ValueError, struct.error, UnicodeDecodeError, IndexError) as exc:
        raise BadPacket(f"malformed relay control message ({exc})") from None


def _parse_control(data: bytes) -> ControlMessage:
    if not data:
        raise BadPacket("empty relay control message")
    kind = data[0]
    message: ControlMessage
    if kind == ControlKind.REGISTER:
        if len(data) < 3:
            raise BadPacket("truncated REGISTER")
        (size,) = _U16.unpack_from(data, 1)
        if size > MAX_TOKEN_SIZE or 3 + size > len(data):
            raise BadPacket(f"REGISTER token of {size} bytes does not fit")
        token = data[3 : 3 + size].decode("ascii") if size else None
        candidates, end = _addresses_untrusted(data, 3 + size)
        message = Register(token=token, candidates=candidates)
    elif kind == ControlKind.CONNECT:
        if len(data) < 1 + NODE_ID_SIZE:
            raise BadPacket("truncated CONNECT")
        candidates, end = _addresses_untrusted(data, 1 + NODE_ID_SIZE)
        message = Connect(peer=bytes(data[1 : 1 + NODE_ID_SIZE]), candidates=candidates)
    elif kind == ControlKind.PUNCH_RESULT:
        if len(data) != _PUNCH_RESULT.size:
            raise BadPacket("PUNCH_RESULT has the wrong size")
        _, punch_id, direct = _PUNCH_RESULT.unpack(data)
        if direct > 1:
            raise BadPacket("PUNCH_RESULT flag is not 0 or 1")
        message, end = PunchResult(punch_id=punch_id, direct=bool(direct)), len(data)
    elif kind == ControlKind.REGISTERED:
        if len(data) < 1 + _REGISTERED_HEAD.size:
            raise BadPacket("truncated REGISTERED")
        tag, size = _REGISTERED_HEAD.unpack_from(data, 1)
        observed, end = _address_untrusted(data, 1 + _REGISTERED_HEAD.size)
        serve = None
        if end < len(data):  # the optional persistence peer's address
            serve, end = _address_untrusted(data, end)
        message = Registered(tag=tag, max_packet_size=size, observed=observed, serve=serve)
    elif kind == ControlKind.SERVE:
        text, end = _text_untrusted(data, 1, MAX_SERVE_TICKET_SIZE, "SERVE ticket")
        message = Serve(ticket=text)
    elif kind == ControlKind.SERVED:
        if len(data) < 2:
            raise BadPacket("truncated SERVED")
        serve_code = ServeCode(data[1])
        document, end = _text_untrusted(data, 2, MAX_DOCUMENT_ID_SIZE, "SERVED document")
        reason, end = _text_untrusted(data, end, MAX_REASON_SIZE, "SERVED reason")
        message = Served(document=document, code=serve_code, reason=reason)
    elif kind == ControlKind.OBSERVED:
        observed, end = _address_untrusted(data, 1)
        message = Observed(observed=observed)
    elif kind == ControlKind.PUNCH:
        if len(data) < 1 + _PUNCH_HEAD.size:
            raise BadPacket("truncated PUNCH")
        peer, punch_id, micros = _PUNCH_HEAD.unpack_from(data, 1)
        candidates, end = _addresses_untrusted(data, 1 + _PUNCH_HEAD.size)
        message = Punch(peer=peer, punch_id=punch_id, delay=micros / 1e6, candidates=candidates)
    elif kind == ControlKind.REFUSED:
        if len(data) < 2 + NODE_ID_SIZE + 2:
            raise BadPacket("truncated REFUSED")
        code = RefusalCode(data[1])
        subject = bytes(data[2 : 2 + NODE_ID_SIZE])
        (size,) = _U16.unpack_from(data, 2 + NODE_ID_SIZE)
        end = 4 + NODE_ID_SIZE + size
        if size > MAX_REASON_SIZE or end > len(data):
            raise BadPacket("REFUSED reason does not fit")
        reason = data[4 + NODE_ID_SIZE : end].decode("utf-8")
        message = Refused(code=code, subject=subject, reason=reason)
    else:
        raise BadPacket(f"unknown relay control message {kind:#04x}")
    if end != len(data):
        raise BadPacket(f"{len(data) - end} trailing bytes after a relay control message")
    return message


# ------------------------------------------------------------------ data frames


def encode_send(tag: bytes, destination: bytes, packet: bytes) -> bytes:
    return bytes([FrameKind.SEND]) + tag + destination + packet


def encode_deliver(source: bytes, packet: bytes) -> bytes:
    return bytes([FrameKind.DELIVER]) + source + packet


def encode_probe(punch_id: int, sender: bytes) -> bytes:
    return _PROBE.pack(FrameKind.PROBE, punch_id, sender)


def parse_frame_untrusted(data: bytes) -> Frame:
    """One raw relay datagram; :class:`BadPacket` for anything else."""
    if not data:
        raise BadPacket("empty relay frame")
    kind = data[0]
    if kind == FrameKind.SEND:
        if len(data) <= SEND_OVERHEAD:
            raise BadPacket("SEND frame without a packet")
        return SendFrame(
            tag=bytes(data[1 : 1 + TAG_SIZE]),
            destination=bytes(data[1 + TAG_SIZE : SEND_OVERHEAD]),
            packet=bytes(data[SEND_OVERHEAD:]),
        )
    if kind == FrameKind.DELIVER:
        if len(data) <= DELIVER_OVERHEAD:
            raise BadPacket("DELIVER frame without a packet")
        return DeliverFrame(source=bytes(data[1:DELIVER_OVERHEAD]), packet=bytes(data[DELIVER_OVERHEAD:]))
    if kind == FrameKind.PROBE:
        if len(data) != _PROBE.size:
            raise BadPacket("PROBE frame has the wrong size")
        _, punch_id, sender = _PROBE.unpack(data)
        return ProbeFrame(punch_id=punch_id, sender=sender)
    raise BadPacket(f"unknown relay frame {kind:#04x}")
