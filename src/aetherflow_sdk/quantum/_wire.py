"""Quantum's wire format: the 32-byte header and the frames inside a packet.

Every byte is documented in docs/protocol.md. Everything that reads bytes from
the network is named ``*_untrusted`` and can raise only :class:`BadPacket`.

Header (32 bytes, big-endian, authenticated as AEAD associated data)::

    0      u8    version            (VERSION = 1)
    1      u8    packet type        (PacketType)
    2      u8    flags              (HeaderFlags)
    3      u8    fec index          (position in an FEC group; 0 when unprotected)
    4..19  16 B  destination connection ID (a UUIDv7 chosen by the receiver)
    20..27 u64   packet number      (never reused within a connection)
    28..31 u32   fec group          (0 when unprotected)

FEC (see ``_fec_path.py``): a DATA packet with flag FEC_PROTECTED is data shard
``fec_index`` (0..9) of group ``fec_group``. A PARITY packet takes a packet number
from the same space, is sealed like DATA (so corrupt parity fails the AEAD before
any decode), and its plaintext is ``u8 k | u8 parity_count | u16 block_length |
block``; its ``fec_index`` is 10 + j for the j-th parity shard. PARITY packets count
in flight but are not ack-eliciting and never retransmitted.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Final

import attrs

from aetherflow_sdk._errors import BadPacket
from aetherflow_sdk.quantum._messages import Fragment

VERSION: Final = 1
HEADER = struct.Struct(">BBBB16sQI")
HEADER_SIZE: Final = HEADER.size
assert HEADER_SIZE == 32
AEAD_TAG_SIZE: Final = 16  # ChaCha20-Poly1305 tag (RFC 8439 §2.8)
MIN_INITIAL_SIZE: Final = 1200  # client INITIALs are padded to this (RFC 9000 §14.1), for the 3x limit
# The first-byte rule (docs/protocol.md, section 1): a datagram whose first byte is below 0x40
# is Quantum (the byte is the version; 1 is in use, the rest are kept for later versions). Any
# other first byte marks a raw datagram (hole-punch probes, relay framing) for the application.
RAW_FIRST_BYTE: Final = 0x40


class PacketType(enum.IntEnum):
    INITIAL = 1  # client -> server: ephemeral key, optional cookie (cleartext, padded)
    RETRY = 2  # server -> client: stateless address-validation cookie
    SERVER_HELLO = 3  # server -> client: server CID + ephemeral key + sealed identity proof
    CLIENT_FINISH = 4  # client -> server: sealed client identity proof
    DATA = 5  # AEAD-sealed frames under the session keys
    PARITY = 6  # AEAD-sealed FEC parity shard


class HeaderFlags(enum.IntFlag):
    NONE = 0
    FEC_PROTECTED = 0x01  # this DATA packet belongs to an FEC group


@attrs.frozen(kw_only=True, slots=True)
class Header:
    """The fixed 32-byte packet header."""

    packet_type: PacketType
    """What the payload is."""
    destination_cid: bytes
    """16-byte connection ID of the receiving side (UUIDv7 bytes)."""
    packet_number: int = 0
    """Unique per connection and direction; the AEAD nonce is derived from it."""
    flags: int = 0
    """HeaderFlags bits."""
    fec_index: int = 0
    """Index of this packet within its FEC group."""
    fec_group: int = 0
    """FEC group number (0 = none)."""

    def pack(self) -> bytes:
        return HEADER.pack(
            VERSION,
            self.packet_type,
            self.flags,
            self.fec_index,
            self.destination_cid,
            self.packet_number,
            self.fec_group,
        )


_PACKET_TYPES = {int(t): t for t in PacketType}  # a dict lookup checks and converts in one step


def parse_header_untrusted(datagram: bytes) -> Header:
    """Parse the header of a datagram; raise BadPacket if it is not a Quantum header."""
    if len(datagram) < HEADER_SIZE:
        raise BadPacket(f"datagram of {len(datagram)} bytes is shorter than the 32-byte header")
    version, ptype, flags, fec_index, dcid, pn, fec_group = HEADER.unpack_from(datagram)
    if version != VERSION:
        raise BadPacket(f"unknown version {version}")
    packet_type = _PACKET_TYPES.get(ptype)
    if packet_type is None:
        raise BadPacket(f"unknown packet type {ptype}")
    return Header(
        packet_type=packet_type,
        destination_cid=dcid,
        packet_number=pn,
        flags=flags,
        fec_index=fec_index,
        fec_group=fec_group,
    )


# ---------------------------------------------------------------------------
# Frames (inside sealed DATA packets)
# ---------------------------------------------------------------------------


class FrameType(enum.IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    MESSAGE = 0x03
    DATAGRAM = 0x04
    MAX_DATA = 0x05
    PATH_CHALLENGE = 0x06
    PATH_RESPONSE = 0x07
    CLOSE = 0x08
    HANDSHAKE_DONE = 0x09
    BLOCKED = 0x0A
    FEC_REPORT = 0x0B
    # Channels (see _channels.py). Channel 0 is the connection's own and uses the frames above.
    CHANNEL_OPEN = 0x0C
    CHANNEL_ACCEPT = 0x0D
    CHANNEL_REFUSE = 0x0E
    CHANNEL_CLOSE = 0x0F
    CHANNEL_MESSAGE = 0x10
    CHANNEL_DATAGRAM = 0x11
    CHANNEL_MAX_DATA = 0x12
    CHANNEL_BLOCKED = 0x13


# ACK: largest acknowledged packet number (u64), ack delay in microseconds (u32), range
# count (u16), length of the highest range (u32); then per further range, going down,
# the gap of missing packet numbers before it (u32) and its length (u32).
ACK_HEAD = struct.Struct(">QIHI")
ACK_RANGE = struct.Struct(">II")
MAX_ACK_RANGES: Final = 32  # bounds an ACK frame to 267 bytes; the oldest gaps are left out
# MESSAGE: flags (bit0 ordered), sequence, flow offset, message length, fragment offset, data length.
MESSAGE_HEAD = struct.Struct(">BQQIIH")
MESSAGE_FRAME_OVERHEAD: Final = 1 + MESSAGE_HEAD.size
_MESSAGE_FRAME_HEAD = struct.Struct(">BBQQIIH")  # frame type byte + MESSAGE_HEAD, packed in one call
_MESSAGE_TYPE: Final = int(FrameType.MESSAGE)
DATAGRAM_HEAD = struct.Struct(">H")
U64 = struct.Struct(">Q")
CLOSE_HEAD = struct.Struct(">HH")
MAX_CLOSE_REASON: Final = 512
# Channels: every CHANNEL_* frame starts with the channel ID (u32, never 0).
CHANNEL_ID = struct.Struct(">I")
CHANNEL_ID_SIZE: Final = CHANNEL_ID.size
_CHANNEL_MESSAGE_FRAME_HEAD = struct.Struct(">BIBQQIIH")  # type, channel ID, then MESSAGE_HEAD
_CHANNEL_MESSAGE_TYPE: Final = int(FrameType.CHANNEL_MESSAGE)
CHANNEL_MESSAGE_FRAME_OVERHEAD: Final = MESSAGE_FRAME_OVERHEAD + CHANNEL_ID_SIZE
CHANNEL_DATAGRAM_HEAD = struct.Struct(">IH")  # channel ID, data length
CHANNEL_DATAGRAM_OVERHEAD: Final = 1 + CHANNEL_DATAGRAM_HEAD.size
CHANNEL_VALUE = struct.Struct(">IQ")  # CHANNEL_MAX_DATA, CHANNEL_BLOCKED: channel ID, u64
CHANNEL_REFUSE_HEAD = struct.Struct(">IBH")  # channel ID, refusal code, reason length
MAX_CHANNEL_NAME: Final = 255  # CHANNEL_OPEN carries the name's length in one byte
MAX_CHANNEL_ID: Final = 0xFFFFFFFF


@attrs.frozen(kw_only=True, slots=True)
class AckFrame:
    """Selective acknowledgement: every packet number in ``ranges`` was received."""

    ranges: tuple[range, ...]
    """Half-open ranges, highest first."""
    ack_delay: float
    """Seconds the receiver held this ACK back (RFC 9000 §19.3)."""


@attrs.frozen(kw_only=True, slots=True)
class DatagramFrame:
    """An unreliable datagram."""

    data: bytes
    channel: int = 0
    """0 for the connection's own datagrams (DATAGRAM), else a channel's (CHANNEL_DATAGRAM)."""


@attrs.frozen(kw_only=True, slots=True)
class MaxDataFrame:
    """The receiver's new flow-control limit (the message offset of one channel)."""

    max_data: int
    channel: int = 0
    """0: MAX_DATA for the connection's own messages; else CHANNEL_MAX_DATA."""


@attrs.frozen(kw_only=True, slots=True)
class BlockedFrame:
    """The sender's next message needs ``needed_max_data`` (like QUIC's DATA_BLOCKED, RFC 9000 §19.12)."""

    needed_max_data: int
    channel: int = 0
    """0: BLOCKED for the connection's own messages; else CHANNEL_BLOCKED."""


@attrs.frozen(kw_only=True, slots=True)
class ChannelOpenFrame:
    """The sender opens channel ``channel`` named ``name`` and waits for ACCEPT or REFUSE."""

    channel: int
    name: bytes


@attrs.frozen(kw_only=True, slots=True)
class ChannelAcceptFrame:
    """The receiver of CHANNEL_OPEN accepted the channel."""

    channel: int


@attrs.frozen(kw_only=True, slots=True)
class ChannelRefuseFrame:
    """The receiver of CHANNEL_OPEN refused the channel; ``reason`` says why."""

    channel: int
    code: int
    reason: str


@attrs.frozen(kw_only=True, slots=True)
class ChannelCloseFrame:
    """The sender is done with the channel: everything it sent on it was acknowledged."""

    channel: int


@attrs.frozen(kw_only=True, slots=True)
class FecReportFrame:
    """Packets of the peer this side has rebuilt from FEC parity so far (cumulative u64).

    Not ack-eliciting and never retransmitted: the next report carries the new total.
    The sender's FEC policy counts these as losses, or FEC would switch itself off."""

    recovered: int


@attrs.frozen(kw_only=True, slots=True)
class PathChallengeFrame:
    """Asks the peer to echo ``token`` from the path it arrived on (RFC 9000 §8.2)."""

    token: bytes


@attrs.frozen(kw_only=True, slots=True)
class PathResponseFrame:
    """Echo of a PATH_CHALLENGE token."""

    token: bytes


@attrs.frozen(kw_only=True, slots=True)
class CloseFrame:
    """The sender closes the connection; ``error_code`` 0 means a normal close."""

    error_code: int
    reason: str


@attrs.frozen(kw_only=True, slots=True)
class PingFrame:
    """Elicits an ACK; keeps the path and NAT bindings alive."""


@attrs.frozen(kw_only=True, slots=True)
class HandshakeDoneFrame:
    """Server -> client: the handshake is confirmed; the client may stop resending FINISH."""


Frame = (
    AckFrame
    | Fragment
    | DatagramFrame
    | MaxDataFrame
    | BlockedFrame
    | FecReportFrame
    | PathChallengeFrame
    | PathResponseFrame
    | CloseFrame
    | PingFrame
    | HandshakeDoneFrame
    | ChannelOpenFrame
    | ChannelAcceptFrame
    | ChannelRefuseFrame
    | ChannelCloseFrame
)
CHANNEL_CONTROL_FRAMES: Final = (ChannelOpenFrame, ChannelAcceptFrame, ChannelRefuseFrame, ChannelCloseFrame)

PING = PingFrame()
HANDSHAKE_DONE = HandshakeDoneFrame()


class CloseCode(enum.IntEnum):
    NO_ERROR = 0
    PROTOCOL_VIOLATION = 1
    FLOW_CONTROL_ERROR = 2
    MESSAGE_TOO_LARGE = 3
    APPLICATION_ABORT = 4
    INTERNAL_ERROR = 5  # the sender's endpoint hit a bug in this connection's processing


def encode_ack(ranges: Sequence[range], ack_delay: float) -> bytes:
    """ACK frame for ``ranges`` (highest first), truncated to MAX_ACK_RANGES."""
    ranges = ranges[:MAX_ACK_RANGES]
    first = ranges[0]
    parts = [
        bytes((FrameType.ACK,)),
        ACK_HEAD.pack(first.stop - 1, min(int(ack_delay * 1_000_000), 0xFFFFFFFF), len(ranges), len(first)),
    ]
    previous_start = first.start
    for r in ranges[1:]:
        parts.append(ACK_RANGE.pack(previous_start - r.stop, len(r)))
        previous_start = r.start
    return b"".join(parts)


def fragment_frame_overhead(fragment: Fragment) -> int:
    """Bytes of ``fragment``'s frame besides its data (MESSAGE or CHANNEL_MESSAGE)."""
    return CHANNEL_MESSAGE_FRAME_OVERHEAD if fragment.channel else MESSAGE_FRAME_OVERHEAD


def encode_fragment_head(fragment: Fragment) -> bytes:
    """The fixed part of ``fragment``'s MESSAGE (or CHANNEL_MESSAGE) frame; ``fragment.data`` follows it."""
    if fragment.channel:
        return _CHANNEL_MESSAGE_FRAME_HEAD.pack(
            _CHANNEL_MESSAGE_TYPE,
            fragment.channel,
            1 if fragment.ordered else 0,
            fragment.sequence,
            fragment.flow_offset,
            fragment.message_length,
            fragment.offset,
            len(fragment.data),
        )
    return _MESSAGE_FRAME_HEAD.pack(
        _MESSAGE_TYPE,
        1 if fragment.ordered else 0,
        fragment.sequence,
        fragment.flow_offset,
        fragment.message_length,
        fragment.offset,
        len(fragment.data),
    )


def encode_datagram(data: bytes) -> bytes:
    return bytes((FrameType.DATAGRAM,)) + DATAGRAM_HEAD.pack(len(data)) + data


def encode_max_data(max_data: int) -> bytes:
    return bytes((FrameType.MAX_DATA,)) + U64.pack(max_data)


def encode_blocked(needed_max_data: int) -> bytes:
    return bytes((FrameType.BLOCKED,)) + U64.pack(needed_max_data)


def encode_fec_report(recovered: int) -> bytes:
    return bytes((FrameType.FEC_REPORT,)) + U64.pack(recovered)


def encode_path_challenge(token: bytes) -> bytes:
    return bytes((FrameType.PATH_CHALLENGE,)) + token


def encode_path_response(token: bytes) -> bytes:
    return bytes((FrameType.PATH_RESPONSE,)) + token


def encode_close(error_code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8", "replace")[:MAX_CLOSE_REASON]
    return bytes((FrameType.CLOSE,)) + CLOSE_HEAD.pack(error_code, len(raw)) + raw


def encode_channel_datagram(channel: int, data: bytes) -> bytes:
    return bytes((FrameType.CHANNEL_DATAGRAM,)) + CHANNEL_DATAGRAM_HEAD.pack(channel, len(data)) + data


def encode_channel_value(frame_type: FrameType, channel: int, value: int) -> bytes:
    """CHANNEL_MAX_DATA or CHANNEL_BLOCKED."""
    return bytes((frame_type,)) + CHANNEL_VALUE.pack(channel, value)


def encode_channel_open(channel: int, name: bytes) -> bytes:
    return bytes((FrameType.CHANNEL_OPEN,)) + CHANNEL_ID.pack(channel) + bytes((len(name),)) + name


def encode_channel_accept(channel: int) -> bytes:
    return bytes((FrameType.CHANNEL_ACCEPT,)) + CHANNEL_ID.pack(channel)


def encode_channel_refuse(channel: int, code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8", "replace")[:MAX_CLOSE_REASON]
    return bytes((FrameType.CHANNEL_REFUSE,)) + CHANNEL_REFUSE_HEAD.pack(channel, code, len(raw)) + raw


def encode_channel_close(channel: int) -> bytes:
    return bytes((FrameType.CHANNEL_CLOSE,)) + CHANNEL_ID.pack(channel)


ENCODED_PING = bytes((FrameType.PING,))
ENCODED_HANDSHAKE_DONE = bytes((FrameType.HANDSHAKE_DONE,))
PATH_TOKEN_SIZE: Final = 8


def parse_frames_untrusted(payload: bytes) -> list[Frame]:
    """Decode the frames of a decrypted DATA payload; raise BadPacket on any malformation."""
    frames: list[Frame] = []
    view = memoryview(payload)
    pos = 0
    end = len(payload)
    try:
        while pos < end:
            ftype = payload[pos]
            pos += 1
            if ftype == FrameType.MESSAGE:
                flags, seq, flow, mlen, off, dlen = MESSAGE_HEAD.unpack_from(payload, pos)
                pos += MESSAGE_HEAD.size
                if pos + dlen > end:
                    raise BadPacket("MESSAGE frame data runs past the packet")
                if flags & ~1:
                    raise BadPacket(f"MESSAGE frame has unknown flags {flags:#x}")
                frames.append(
                    Fragment(
                        ordered=bool(flags & 1),
                        sequence=seq,
                        flow_offset=flow,
                        message_length=mlen,
                        offset=off,
                        data=bytes(view[pos : pos + dlen]),
                    )
                )
                pos += dlen
            elif ftype == FrameType.ACK:
                largest, delay_us, count, length = ACK_HEAD.unpack_from(payload, pos)
                pos += ACK_HEAD.size
                if count == 0 or count > MAX_ACK_RANGES:
                    raise BadPacket(f"ACK frame with {count} ranges")
                stop = largest + 1
                start = stop - length
                if length == 0 or start < 0:
                    raise BadPacket("ACK range is empty or below zero")
                ranges = [range(start, stop)]
                for _ in range(count - 1):
                    gap, length = ACK_RANGE.unpack_from(payload, pos)
                    pos += ACK_RANGE.size
                    stop = start - gap
                    start = stop - length
                    if gap == 0 or length == 0 or start < 0:
                        raise BadPacket("ACK ranges must be non-empty, disjoint and descending")
                    ranges.append(range(start, stop))
                frames.append(AckFrame(ranges=tuple(ranges), ack_delay=delay_us / 1_000_000))
            elif ftype == FrameType.PADDING:
                break  # padding runs to the end of the packet
            elif ftype == FrameType.PING:
                frames.append(PING)
            elif ftype == FrameType.DATAGRAM:
                (dlen,) = DATAGRAM_HEAD.unpack_from(payload, pos)
                pos += DATAGRAM_HEAD.size
                if pos + dlen > end:
                    raise BadPacket("DATAGRAM frame runs past the packet")
                frames.append(DatagramFrame(data=bytes(view[pos : pos + dlen])))
                pos += dlen
            elif ftype == FrameType.MAX_DATA:
                (value,) = U64.unpack_from(payload, pos)
                pos += U64.size
                frames.append(MaxDataFrame(max_data=value))
            elif ftype == FrameType.BLOCKED:
                (value,) = U64.unpack_from(payload, pos)
                pos += U64.size
                frames.append(BlockedFrame(needed_max_data=value))
            elif ftype == FrameType.FEC_REPORT:
                (value,) = U64.unpack_from(payload, pos)
                pos += U64.size
                frames.append(FecReportFrame(recovered=value))
            elif ftype in (FrameType.PATH_CHALLENGE, FrameType.PATH_RESPONSE):
                if pos + PATH_TOKEN_SIZE > end:
                    raise BadPacket("path frame truncated")
                token = bytes(view[pos : pos + PATH_TOKEN_SIZE])
                pos += PATH_TOKEN_SIZE
                frames.append(
                    PathChallengeFrame(token=token)
                    if ftype == FrameType.PATH_CHALLENGE
                    else PathResponseFrame(token=token)
                )
            elif ftype == FrameType.CLOSE:
                code, rlen = CLOSE_HEAD.unpack_from(payload, pos)
                pos += CLOSE_HEAD.size
                if rlen > MAX_CLOSE_REASON or pos + rlen > end:
                    raise BadPacket("CLOSE frame reason runs past the packet")
                reason = bytes(view[pos : pos + rlen]).decode("utf-8", "replace")
                pos += rlen
                frames.append(CloseFrame(error_code=code, reason=reason))
            elif ftype == FrameType.HANDSHAKE_DONE:
                frames.append(HANDSHAKE_DONE)
            elif FrameType.CHANNEL_OPEN <= ftype <= FrameType.CHANNEL_BLOCKED:
                pos = _parse_channel_frame_untrusted(ftype, payload, view, pos, frames)
            else:
                raise BadPacket(f"unknown frame type {ftype:#x}")
    except struct.error as exc:
        raise BadPacket(f"truncated frame: {exc}") from None
    return frames


def _parse_channel_frame_untrusted(
    ftype: int, payload: bytes, view: memoryview, pos: int, frames: list[Frame]
) -> int:
    """Decode one CHANNEL_* frame whose type byte ends at ``pos``; return the position after it.

    Raises BadPacket (or struct.error, which the caller turns into BadPacket)."""
    end = len(payload)
    if ftype == FrameType.CHANNEL_MESSAGE:
        channel, flags, seq, flow, mlen, off, dlen = _CHANNEL_MESSAGE_FRAME_HEAD.unpack_from(
            payload, pos - 1
        )[1:]
        pos += CHANNEL_ID_SIZE + MESSAGE_HEAD.size
        if pos + dlen > end:
            raise BadPacket("CHANNEL_MESSAGE frame data runs past the packet")
        if flags & ~1:
            raise BadPacket(f"CHANNEL_MESSAGE frame has unknown flags {flags:#x}")
        _check_channel_id(channel)
        frames.append(
            Fragment(
                ordered=bool(flags & 1),
                sequence=seq,
                flow_offset=flow,
                message_length=mlen,
                offset=off,
                data=bytes(view[pos : pos + dlen]),
                channel=channel,
            )
        )
        return int(pos + dlen)
    if ftype == FrameType.CHANNEL_DATAGRAM:
        channel, dlen = CHANNEL_DATAGRAM_HEAD.unpack_from(payload, pos)
        dlen = int(dlen)
        pos += CHANNEL_DATAGRAM_HEAD.size
        if pos + dlen > end:
            raise BadPacket("CHANNEL_DATAGRAM frame runs past the packet")
        _check_channel_id(channel)
        frames.append(DatagramFrame(data=bytes(view[pos : pos + dlen]), channel=channel))
        return pos + dlen
    if ftype == FrameType.CHANNEL_MAX_DATA or ftype == FrameType.CHANNEL_BLOCKED:
        channel, value = CHANNEL_VALUE.unpack_from(payload, pos)
        _check_channel_id(channel)
        if ftype == FrameType.CHANNEL_MAX_DATA:
            frames.append(MaxDataFrame(max_data=value, channel=channel))
        else:
            frames.append(BlockedFrame(needed_max_data=value, channel=channel))
        return pos + CHANNEL_VALUE.size
    if ftype == FrameType.CHANNEL_OPEN:
        (channel,) = CHANNEL_ID.unpack_from(payload, pos)
        pos += CHANNEL_ID_SIZE
        if pos >= end:
            raise BadPacket("CHANNEL_OPEN frame truncated")
        nlen = payload[pos]
        pos += 1
        if nlen == 0 or pos + nlen > end:
            raise BadPacket("CHANNEL_OPEN name is empty or runs past the packet")
        _check_channel_id(channel)
        frames.append(ChannelOpenFrame(channel=channel, name=bytes(view[pos : pos + nlen])))
        return int(pos + nlen)
    if ftype == FrameType.CHANNEL_REFUSE:
        channel, code, rlen = CHANNEL_REFUSE_HEAD.unpack_from(payload, pos)
        pos += CHANNEL_REFUSE_HEAD.size
        if rlen > MAX_CLOSE_REASON or pos + rlen > end:
            raise BadPacket("CHANNEL_REFUSE reason runs past the packet")
        _check_channel_id(channel)
        reason = bytes(view[pos : pos + rlen]).decode("utf-8", "replace")
        frames.append(ChannelRefuseFrame(channel=channel, code=code, reason=reason))
        return int(pos + rlen)
    # CHANNEL_ACCEPT or CHANNEL_CLOSE
    (channel,) = CHANNEL_ID.unpack_from(payload, pos)
    _check_channel_id(channel)
    if ftype == FrameType.CHANNEL_ACCEPT:
        frames.append(ChannelAcceptFrame(channel=channel))
    else:
        frames.append(ChannelCloseFrame(channel=channel))
    return pos + CHANNEL_ID_SIZE


def _check_channel_id(channel: int) -> None:
    if channel == 0:
        raise BadPacket("a CHANNEL_* frame names channel 0 (the connection's own frames carry it)")
