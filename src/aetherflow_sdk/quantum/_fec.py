"""Forward error correction: Reed–Solomon over groups of up to 10 packets, sans-I/O.

The sender puts outgoing data packets in *groups*. A group closes when it holds
``data_shards`` (10) packets or when ``group_timeout`` has passed since its first
packet, whichever comes first; then :class:`FecEncoder` computes its parity
packets. The receiver's :class:`FecDecoder` rebuilds any missing data packets of a
group as soon as it holds as many shards (data or parity) as the group had data
packets. A rebuilt packet is handed to the connection as if it had arrived: it is
acknowledged, and the sender never retransmits it.

Why a timer as well as a count: kcp-go protects only full groups, so a sparse
stream of edits (50 msg/s) is never protected. Here a lone packet is protected
after ``group_timeout`` (for example srtt/4) by one parity packet.

Parity count of a group of k data packets (``parity_count``)::

    max(1, ceil(parity_shards * k / data_shards))  # 10+3 -> k=1..3: 1, 4..6: 2, 7..10: 3

so partial groups keep about the same 30 % overhead and never go unprotected. The
sender may send more, up to ``parity_shards`` (``FecEncoder.min_parity``): on a very
lossy path a lone edit and its single parity packet are both lost 1 % of the time at
10 % loss, which is the whole p99; two parity packets make that 0.1 %. It may also send
fewer (``FecEncoder.max_parity``, sized to the measured loss). The decoder accepts any
count from 1 to ``parity_shards``.

Shards. Reed–Solomon (zfec) needs equal-length blocks, so each data packet of a
group becomes the block ``u64 packet_number | u16 length | plaintext | zero padding``
padded to the longest of its group. Packet numbers travel inside the block, so a
rebuilt packet knows its number.

Wire (the packet header, AEAD-authenticated, carries ``fec_group`` u32 and
``fec_index`` u8; data shards use index 0..k-1, parity shards data_shards + j)::

    parity payload = u8 k | u8 parity_count | u16 block_length | block (block_length bytes)

zfec block numbers: data i -> i, parity j -> k + j (``zfec.Encoder(k, k + parity_count)``
returns the data blocks first, then the parity blocks).

:class:`FecPolicy` decides per direction whether FEC is worth it (loss above a
threshold, with hysteresis) and counts wire bytes against application bytes.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import OrderedDict, deque
from typing import Final

import attrs
import zfec

from aetherflow_sdk._errors import BadPacket, LocalProtocolError

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

DATA_SHARDS = 10
"""Data packets per full group (issue 3: "10 data + 3 parity per group")."""

PARITY_SHARDS = 3
"""Parity packets of a full group: any 3 losses among 13 are repaired (issue 3)."""

DEFAULT_GROUP_TIMEOUT = 0.010
"""Close a partial group this long after its first packet. The connection should set
srtt/4 (issue 3); 10 ms is srtt/4 of a 40 ms path, the benchmark's."""

MAX_FEC_INDEX = 255
"""``fec_index`` is a u8 in the packet header, so data + parity shards fit in 256."""

_BLOCK_HEADER = struct.Struct("!QH")
"""Inside a block: packet number (u64) and plaintext length (u16)."""

_PARITY_HEADER = struct.Struct("!BBH")
"""Parity payload: k, parity count, block length."""

MAX_PLAINTEXT = 0xFFFF - _BLOCK_HEADER.size
PARITY_EXPANSION: Final = _PARITY_HEADER.size + _BLOCK_HEADER.size
"""A parity packet is this much larger than the largest data packet of its group: a sender
that protects its packets leaves this much room, so that parity fits the path too."""
"""Largest protectable plaintext: the block length must fit the u16 of the parity header."""

DEFAULT_MAX_GROUPS = 64
"""Groups a decoder tracks at once: 64 x 13 x 1.4 kB ≈ 1.2 MB worst case. At 20 Mbit/s a
group of 10 packets lasts ~6 ms, so 64 groups span ~0.4 s, longer than any useful repair
(after an RTT or two, ordinary loss recovery has resent the packet)."""

DEFAULT_GROUP_LIFETIME = 1.0
"""Forget a group this long after its first shard: by then retransmission has won."""

FINISHED_MEMORY_FACTOR = 4
"""Remember ``4 x max_groups`` finished group ids to drop their late shards quietly."""


def parity_count(k: int, data_shards: int = DATA_SHARDS, parity_shards: int = PARITY_SHARDS) -> int:
    """Parity packets for a group of ``k`` data packets: the full ratio, rounded up, at least 1."""
    return max(1, math.ceil(parity_shards * k / data_shards))


UNREPAIRED_TARGET = 0.10
"""Aim: a lost packet is rebuilt from parity with probability >= 90 % (issue 3's FEC goal)."""


def parity_for_loss(
    loss_rate: float, data_shards: int = DATA_SHARDS, parity_shards: int = PARITY_SHARDS
) -> int:
    """How many of the ``parity_shards`` a full group needs at ``loss_rate``.

    A lost packet is rebuilt unless m or more of the other data_shards + m - 1 packets of its
    group are lost too. Return the smallest m that keeps that probability (binomial tail) at
    or below UNREPAIRED_TARGET, else all of them: 10+1 at 1 % loss, 10+2 at 2-4 %, the full
    10+3 from about 5 %. Sending all 3 (30 % more bytes) at 1 % loss would only take
    bandwidth from the data on a bandwidth-bound path.
    """
    p = min(max(loss_rate, 0.0), 1.0)
    for m in range(1, parity_shards):
        others = data_shards + m - 1
        fewer = sum(math.comb(others, i) * p**i * (1 - p) ** (others - i) for i in range(m))
        if 1.0 - fewer <= UNREPAIRED_TARGET:
            return m
    return parity_shards


@functools.cache
def parity_loss_thresholds(
    data_shards: int = DATA_SHARDS, parity_shards: int = PARITY_SHARDS
) -> tuple[float, ...]:
    """``parity_for_loss`` as loss bands, for a per-ACK caller: entry m - 1 is the highest loss
    that needs at most m parity packets, so ``1 + sum(loss > t for t in thresholds)`` equals
    ``parity_for_loss(loss)`` (which grows with the loss). Found once by bisection."""
    thresholds = []
    for m in range(1, parity_shards):
        low, high = 0.0, 1.0  # parity_for_loss(low) <= m < parity_for_loss(high)
        while (mid := (low + high) / 2) not in (low, high):
            if parity_for_loss(mid, data_shards, parity_shards) <= m:
                low = mid
            else:
                high = mid
        thresholds.append(low)
    return tuple(thresholds)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ParityShard:
    """One parity packet for the connection to send (it seals it like any packet)."""

    group_id: int
    """The group it protects (header ``fec_group``, u32)."""
    index: int
    """Header ``fec_index``: ``data_shards + j`` for the j-th parity shard (10, 11, 12 for 10+3)."""
    parity_count: int
    """Parity shards of its group (also payload byte 1): the last one has index
    ``data_shards + parity_count - 1``."""
    payload: bytes
    """``u8 k | u8 parity_count | u16 block_length | block``."""


@attrs.frozen(kw_only=True)
class RecoveredPacket:
    """A data packet rebuilt from parity: process it as if it had been received."""

    packet_number: int
    """Its packet number (acknowledge it; the sender will not retransmit it)."""
    plaintext: bytes
    """Its decrypted payload, exactly as the sender protected it."""


@attrs.frozen(kw_only=True)
class FecEncoderStatistics:
    """Counters of one encoder."""

    groups: int
    """Groups closed."""
    partial_groups: int
    """Groups closed by the timer before holding ``data_shards`` packets."""
    data_packets: int
    """Data packets protected."""
    parity_packets: int
    """Parity shards produced."""
    parity_bytes: int
    """Bytes of parity payload produced (before the packet header and AEAD tag)."""


@attrs.frozen(kw_only=True)
class FecDecoderStatistics:
    """Counters of one decoder."""

    recovered: int
    """Data packets rebuilt from parity."""
    decodes: int
    """Groups on which Reed–Solomon decoding ran."""
    evicted_incomplete: int
    """Groups forgotten (too old, or too many groups) while data was still missing."""
    rejected_groups: int
    """Groups dropped because a rebuilt block was malformed (a buggy or hostile peer)."""
    tracked_groups: int
    """Groups held right now (at most ``max_groups``)."""


@attrs.frozen(kw_only=True)
class FecPolicyStatistics:
    """What FEC costs and what it sees, for ``statistics()``."""

    enabled: bool
    """FEC is on for this direction."""
    loss_rate: float
    """(lost + repaired by the peer) / sent over the sliding window."""
    app_bytes: int
    """Application plaintext bytes sent in data packets."""
    data_wire_bytes: int
    """Bytes on the wire of data packets (headers, tags, retransmissions included)."""
    parity_wire_bytes: int
    """Bytes on the wire of parity packets."""

    @property
    def wire_overhead(self) -> float:
        """Wire bytes / application bytes (1.0 = free; issue 3 goal ≤ 1.35 for bulk)."""
        if self.app_bytes == 0:
            return 1.0
        return (self.data_wire_bytes + self.parity_wire_bytes) / self.app_bytes


# --------------------------------------------------------------------------------------------
# zfec
# --------------------------------------------------------------------------------------------

_encoders: dict[tuple[int, int], zfec.Encoder] = {}
_decoders: dict[tuple[int, int], zfec.Decoder] = {}


def _encoder(k: int, m: int) -> zfec.Encoder:
    # Building the matrix costs more than encoding a small group: keep one per shape.
    if (k, m) not in _encoders:
        _encoders[(k, m)] = zfec.Encoder(k, m)
    return _encoders[(k, m)]


def _decoder(k: int, m: int) -> zfec.Decoder:
    if (k, m) not in _decoders:
        _decoders[(k, m)] = zfec.Decoder(k, m)
    return _decoders[(k, m)]


def _block(packet_number: int, plaintext: bytes, length: int) -> bytes:
    body = _BLOCK_HEADER.pack(packet_number, len(plaintext)) + plaintext
    return body + bytes(length - len(body))


def _check_shape(data_shards: int, parity_shards: int) -> None:
    if data_shards < 1 or parity_shards < 1 or data_shards + parity_shards > MAX_FEC_INDEX + 1:
        raise LocalProtocolError(
            f"FEC shape {data_shards}+{parity_shards} is invalid: need >= 1 of each and at most "
            f"{MAX_FEC_INDEX + 1} shards in all (fec_index is a u8)"
        )


# --------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------


class FecEncoder:
    """Groups outgoing data packets and produces their parity (sans-I/O: pass ``now``)."""

    def __init__(
        self,
        data_shards: int = DATA_SHARDS,
        parity_shards: int = PARITY_SHARDS,
        *,
        group_timeout: float = DEFAULT_GROUP_TIMEOUT,
        first_group_id: int = 0,
    ) -> None:
        _check_shape(data_shards, parity_shards)
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self._group_timeout = 0.0
        self.group_timeout = group_timeout
        self._min_parity = 1
        self._max_parity = parity_shards
        self._next_group_id = first_group_id & 0xFFFFFFFF
        self._group_id = 0
        self._packets: list[tuple[int, bytes]] = []
        self._opened_at = 0.0
        self._ready: list[ParityShard] = []
        self._groups = self._partial = self._data = self._parity = self._parity_bytes = 0

    @property
    def group_timeout(self) -> float:
        """Seconds after its first packet that a partial group closes (the connection sets srtt/8)."""
        return self._group_timeout

    @group_timeout.setter
    def group_timeout(self, value: float) -> None:
        if not value > 0:
            raise LocalProtocolError(f"FecEncoder.group_timeout must be > 0 seconds, got {value!r}")
        self._group_timeout = value

    @property
    def min_parity(self) -> int:
        """Parity packets per group at least (1..parity_shards; more than ``parity_count`` for
        small groups on a very lossy path)."""
        return self._min_parity

    @min_parity.setter
    def min_parity(self, value: int) -> None:
        if not 1 <= value <= self.parity_shards:
            raise LocalProtocolError(
                f"FecEncoder.min_parity must be within 1..{self.parity_shards}, got {value!r}"
            )
        self._min_parity = value

    @property
    def max_parity(self) -> int:
        """Parity packets per group at most (1..parity_shards): the adaptive policy lowers it on a
        mildly lossy path (``parity_for_loss``); ``min_parity`` still wins over it."""
        return self._max_parity

    @max_parity.setter
    def max_parity(self, value: int) -> None:
        if not 1 <= value <= self.parity_shards:
            raise LocalProtocolError(
                f"FecEncoder.max_parity must be within 1..{self.parity_shards}, got {value!r}"
            )
        self._max_parity = value

    def protect(self, packet_number: int, plaintext: bytes, now: float) -> tuple[int, int]:
        """Add an outgoing data packet to the open group; return its (fec_group, fec_index)."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(
                f"FEC protects plaintexts up to {MAX_PLAINTEXT} bytes, got {len(plaintext)}"
            )
        self._close_if_expired(now)
        if not self._packets:
            self._group_id = self._next_group_id
            self._next_group_id = (self._next_group_id + 1) & 0xFFFFFFFF  # u32 on the wire
            self._opened_at = now
        index = len(self._packets)
        self._packets.append((packet_number, bytes(plaintext)))
        self._data += 1
        if len(self._packets) == self.data_shards:
            self._close()
        return self._group_id, index

    def poll_parity(self, now: float) -> list[ParityShard]:
        """Parity shards of every group closed so far (closing an expired open group)."""
        self._close_if_expired(now)
        ready, self._ready = self._ready, []
        return ready

    def has_parity_work(self) -> bool:
        """A group is open or parity is ready: ``poll_parity`` may return something."""
        return bool(self._packets or self._ready)

    def get_timer(self) -> float | None:
        """When the open group must close, or None when no group is open."""
        if not self._packets:
            return None
        return self._opened_at + self._group_timeout

    def statistics(self) -> FecEncoderStatistics:
        return FecEncoderStatistics(
            groups=self._groups,
            partial_groups=self._partial,
            data_packets=self._data,
            parity_packets=self._parity,
            parity_bytes=self._parity_bytes,
        )

    def _close_if_expired(self, now: float) -> None:
        if self._packets and now >= self._opened_at + self._group_timeout:
            self._close()

    def _close(self) -> None:
        k = len(self._packets)
        wanted = min(parity_count(k, self.data_shards, self.parity_shards), self._max_parity)
        count = max(wanted, self._min_parity)
        length = max(_BLOCK_HEADER.size + len(p) for _, p in self._packets)
        blocks = tuple(_block(pn, p, length) for pn, p in self._packets)
        parity = _encoder(k, k + count).encode(blocks, tuple(range(k, k + count)))
        header = _PARITY_HEADER.pack(k, count, length)
        for j, block in enumerate(parity):
            payload = header + bytes(block)
            self._ready.append(
                ParityShard(
                    group_id=self._group_id, index=self.data_shards + j, parity_count=count, payload=payload
                )
            )
            self._parity_bytes += len(payload)
        self._groups += 1
        self._partial += k < self.data_shards
        self._parity += count
        self._packets = []


# --------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------


def parse_parity_payload_untrusted(
    payload: bytes, data_shards: int = DATA_SHARDS, parity_shards: int = PARITY_SHARDS
) -> tuple[int, int, bytes]:
    """Split a parity payload into (k, parity_count, block); raises only BadPacket."""
    if len(payload) < _PARITY_HEADER.size:
        raise BadPacket(f"FEC parity payload of {len(payload)} bytes is shorter than its header")
    k, count, length = _PARITY_HEADER.unpack_from(payload)
    if not 1 <= k <= data_shards:
        raise BadPacket(f"FEC parity claims {k} data shards; this connection allows 1..{data_shards}")
    if not 1 <= count <= parity_shards:
        raise BadPacket(f"FEC parity claims {count} parity shards; this connection allows 1..{parity_shards}")
    if length < _BLOCK_HEADER.size or len(payload) - _PARITY_HEADER.size != length:
        raise BadPacket(
            f"FEC parity block length {length} does not match its {len(payload) - _PARITY_HEADER.size} bytes"
        )
    return k, count, bytes(payload[_PARITY_HEADER.size :])


@attrs.define
class _Group:
    """What the decoder holds of one group."""

    first_seen: float
    data: dict[int, tuple[int, bytes]] = attrs.field(factory=dict)  # index -> (packet number, plaintext)
    parity: dict[int, bytes] = attrs.field(factory=dict)  # j -> block
    k: int = 0  # 0 until a parity shard tells
    count: int = 0
    length: int = 0


class FecDecoder:
    """Rebuilds missing data packets of a group from its parity, in bounded memory.

    Both ``on_data`` and ``on_parity`` take the header's ``fec_group`` and
    ``fec_index`` of a packet that passed AEAD, and return the packets they could
    rebuild (usually none). Shards that contradict the group raise ``BadPacket``
    (count and drop the packet, as for any bad packet) and change nothing.
    """

    def __init__(
        self,
        data_shards: int = DATA_SHARDS,
        parity_shards: int = PARITY_SHARDS,
        *,
        max_groups: int = DEFAULT_MAX_GROUPS,
        group_lifetime: float = DEFAULT_GROUP_LIFETIME,
    ) -> None:
        _check_shape(data_shards, parity_shards)
        if max_groups < 1 or not group_lifetime > 0:
            raise LocalProtocolError("FecDecoder needs max_groups >= 1 and group_lifetime > 0")
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self.max_groups = max_groups
        self.group_lifetime = group_lifetime
        self._groups: OrderedDict[int, _Group] = OrderedDict()
        self._finished: OrderedDict[int, None] = OrderedDict()
        self._recovered = self._decodes = self._evicted_incomplete = self._rejected = 0

    def on_data(
        self, group_id: int, index: int, packet_number: int, plaintext: bytes, now: float
    ) -> list[RecoveredPacket]:
        """A protected data packet arrived (or was rebuilt elsewhere); store it, maybe decode."""
        if not 0 <= index < self.data_shards:
            raise BadPacket(f"FEC data index {index} is outside 0..{self.data_shards - 1}")
        if len(plaintext) > MAX_PLAINTEXT:
            raise BadPacket(f"FEC-protected plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}")
        self._expire(now)
        if group_id in self._finished:
            return []
        group = self._groups.get(group_id)
        if (
            group is not None
            and group.k
            and (index >= group.k or _BLOCK_HEADER.size + len(plaintext) > group.length)
        ):
            raise BadPacket(f"FEC data shard {index} of group {group_id} contradicts its parity")
        if group is None:
            group = self._new_group(group_id, now)
        if index in group.data:
            return []  # duplicate
        group.data[index] = (packet_number, bytes(plaintext))
        return self._try_decode(group_id, group)

    def on_parity(self, group_id: int, index: int, payload: bytes, now: float) -> list[RecoveredPacket]:
        """A parity packet arrived; ``payload`` is its decrypted payload."""
        j = index - self.data_shards
        if not 0 <= j < self.parity_shards:
            raise BadPacket(
                f"FEC parity index {index} is outside "
                f"{self.data_shards}..{self.data_shards + self.parity_shards - 1}"
            )
        k, count, block = parse_parity_payload_untrusted(payload, self.data_shards, self.parity_shards)
        if j >= count:
            raise BadPacket(f"FEC parity index {index} but the group has only {count} parity shards")
        self._expire(now)
        if group_id in self._finished:
            return []
        group = self._groups.get(group_id)
        if group is not None:
            if group.k and (group.k, group.count, group.length) != (k, count, len(block)):
                raise BadPacket(f"FEC parity of group {group_id} disagrees with earlier parity")
            if any(i >= k or _BLOCK_HEADER.size + len(p) > len(block) for i, (_, p) in group.data.items()):
                raise BadPacket(f"FEC parity of group {group_id} contradicts its data shards")
        else:
            group = self._new_group(group_id, now)
        group.k, group.count, group.length = k, count, len(block)
        if j in group.parity:
            return []  # duplicate
        group.parity[j] = block
        return self._try_decode(group_id, group)

    @property
    def tracked_groups(self) -> int:
        """Groups held now; never more than ``max_groups``."""
        return len(self._groups)

    def statistics(self) -> FecDecoderStatistics:
        return FecDecoderStatistics(
            recovered=self._recovered,
            decodes=self._decodes,
            evicted_incomplete=self._evicted_incomplete,
            rejected_groups=self._rejected,
            tracked_groups=len(self._groups),
        )

    # -- internals -------------------------------------------------------------------------

    def _new_group(self, group_id: int, now: float) -> _Group:
        group = _Group(first_seen=now)
        self._groups[group_id] = group
        while len(self._groups) > self.max_groups:
            self._forget(*self._groups.popitem(last=False))
        return group

    def _expire(self, now: float) -> None:
        # Insertion order is arrival order, so the oldest groups are at the front.
        groups = self._groups
        while groups:
            group_id, group = next(iter(groups.items()))
            if now - group.first_seen < self.group_lifetime:
                break
            del groups[group_id]
            self._forget(group_id, group)

    def _forget(self, group_id: int, group: _Group) -> None:
        if not group.k or len(group.data) < group.k:
            self._evicted_incomplete += 1
        self._finish(group_id)

    def _finish(self, group_id: int) -> None:
        self._groups.pop(group_id, None)
        self._finished[group_id] = None
        self._finished.move_to_end(group_id)
        while len(self._finished) > FINISHED_MEMORY_FACTOR * self.max_groups:
            self._finished.popitem(last=False)

    def _try_decode(self, group_id: int, group: _Group) -> list[RecoveredPacket]:
        k = group.k
        if not k:
            return []  # no parity yet: k unknown
        if len(group.data) == k:
            self._finish(group_id)  # everything arrived: nothing to rebuild
            return []
        if len(group.data) + len(group.parity) < k:
            return []
        # Exactly k shards, data first (zfec copies primary blocks through).
        numbers = sorted(group.data)
        blocks = [_block(*group.data[i], group.length) for i in numbers]
        for j in sorted(group.parity)[: k - len(numbers)]:
            numbers.append(k + j)
            blocks.append(group.parity[j])
        decoded = _decoder(k, k + group.count).decode(tuple(blocks), tuple(numbers))
        self._decodes += 1
        recovered: list[RecoveredPacket] = []
        seen = {pn for pn, _ in group.data.values()}
        for i in range(k):
            if i in group.data:
                continue
            block = bytes(decoded[i])
            packet_number, length = _BLOCK_HEADER.unpack_from(block)
            end = _BLOCK_HEADER.size + length
            if end > len(block) or any(block[end:]) or packet_number in seen:
                # Inconsistent shards (only an authenticated but broken peer can cause
                # this): hand out nothing from this group rather than garbage.
                self._rejected += 1
                self._finish(group_id)
                return []
            seen.add(packet_number)
            recovered.append(
                RecoveredPacket(packet_number=packet_number, plaintext=block[_BLOCK_HEADER.size : end])
            )
        self._recovered += len(recovered)
        self._finish(group_id)
        return recovered


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

DEFAULT_ENABLE_ABOVE = 0.005
"""Turn FEC on above 0.5 % loss: at 1 % loss 10+3 repairs nearly every loss for 30 % overhead,
while a retransmission costs at least one RTT of latency for the edit it carries."""

DEFAULT_DISABLE_BELOW = 0.001
"""Turn FEC off below 0.1 %: hysteresis, so a path near the threshold does not flap."""

DEFAULT_LOSS_WINDOW = 5.0
"""Loss is measured over the last 5 s: 250 packets of a 50 msg/s edit stream."""

MIN_LOSSES_TO_ENABLE = 2
"""One loss is not a rate: wait for a second one in the window."""

_BUCKET = 0.5  # seconds per bucket of the sliding window: 10 buckets per 5 s


class FecPolicy:
    """Decides whether this direction sends parity, from the loss the sender measures.

    Feed it every packet sent and lost, *and* the count of packets the peer repaired
    with FEC (the peer reports it): repaired packets are acknowledged, so without that
    count the sender would see no loss once FEC works, turn it off, and flap.
    """

    def __init__(
        self,
        *,
        enable_above: float = DEFAULT_ENABLE_ABOVE,
        disable_below: float = DEFAULT_DISABLE_BELOW,
        window: float = DEFAULT_LOSS_WINDOW,
        enabled: bool = False,
    ) -> None:
        if not 0 <= disable_below <= enable_above or not window > 0:
            raise LocalProtocolError(
                "FecPolicy needs 0 <= disable_below <= enable_above and window > 0, got "
                f"disable_below={disable_below}, enable_above={enable_above}, window={window}"
            )
        self.enable_above = enable_above
        self.disable_below = disable_below
        self.window = window
        self._enabled = enabled
        self._changed_at: float | None = None
        self._buckets: deque[list[float]] = deque()  # [start, sent, lost]
        self._app_bytes = self._data_wire = self._parity_wire = 0

    @property
    def enabled(self) -> bool:
        """Whether to protect data packets and send parity now."""
        return self._enabled

    def on_packet_sent(self, app_bytes: int, wire_bytes: int, now: float) -> None:
        """A data packet left: ``app_bytes`` of application data in ``wire_bytes`` on the wire."""
        self._bucket(now)[1] += 1
        self._app_bytes += app_bytes
        self._data_wire += wire_bytes

    def on_parity_sent(self, wire_bytes: int, now: float) -> None:
        """A parity packet left (it is overhead, not a sample of the path's loss)."""
        self._parity_wire += wire_bytes

    def on_packets_lost(self, count: int, now: float) -> None:
        """Loss recovery declared ``count`` data packets lost."""
        self._bucket(now)[2] += count
        self._update(now)

    def on_peer_recovered(self, count: int, now: float) -> None:
        """The peer reports ``count`` more of our packets rebuilt by FEC: losses all the same."""
        self._bucket(now)[2] += count
        self._update(now)

    def loss_rate(self, now: float) -> float:
        """Lost (or repaired) / sent over the window; 0 when nothing was sent."""
        self._trim(now)
        sent = sum(b[1] for b in self._buckets)
        lost = sum(b[2] for b in self._buckets)
        return lost / sent if sent else 0.0

    def update(self, now: float, loss_rate: float | None = None) -> bool:
        """Re-evaluate (call now and then, e.g. on each ACK); returns ``enabled``.

        ``loss_rate``: the caller's ``loss_rate(now)``, if it has it, so as not to sum again."""
        self._update(now, loss_rate)
        return self._enabled

    def statistics(self, now: float) -> FecPolicyStatistics:
        return FecPolicyStatistics(
            enabled=self._enabled,
            loss_rate=self.loss_rate(now),
            app_bytes=self._app_bytes,
            data_wire_bytes=self._data_wire,
            parity_wire_bytes=self._parity_wire,
        )

    def _bucket(self, now: float) -> list[float]:
        if not self._buckets or now >= self._buckets[-1][0] + _BUCKET:
            self._buckets.append([now, 0, 0])
        self._trim(now)
        return self._buckets[-1]

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] + _BUCKET <= now - self.window:
            self._buckets.popleft()

    def _update(self, now: float, loss_rate: float | None = None) -> None:
        rate = self.loss_rate(now) if loss_rate is None else loss_rate
        if self._changed_at is None:
            self._changed_at = now
        if not self._enabled:
            lost = sum(b[2] for b in self._buckets)
            if rate > self.enable_above and lost >= MIN_LOSSES_TO_ENABLE:
                self._enabled, self._changed_at = True, now
        elif rate < self.disable_below and now - self._changed_at >= self.window:
            # Off only after a whole clean window with FEC on (hysteresis in time too).
            self._enabled, self._changed_at = False, now
