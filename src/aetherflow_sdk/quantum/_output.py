"""The sending half of a Quantum connection: when ACKs are due, what a lost packet
puts back in the queue, and what goes into the next packet.

:class:`PacketOutput` is a mixin of :class:`~aetherflow_sdk.quantum._connection.QuantumConnection`
(kept apart so that neither file grows past a reader's patience); it owns no state of its
own and reads the connection's. The rules:

0. Received packets are recorded for the replay window and the ACK ranges; an ACK is
   due at once after ``ack_eliciting_threshold`` ack-eliciting packets or an
   out-of-order one, else within ``max_ack_delay`` (RFC 9000 §13.2). Acknowledged
   fragments are done; a lost packet's fragments and control items are queued again
   (in new packets: packet numbers are never reused).
1. Handshake packets first, then (once keys exist) FEC parity that is due, then DATA.
2. A DATA packet is sent when the congestion window has room and the pacer allows,
   or at once when an ACK is due (an ACK-only packet ignores both: it is not in flight).
3. Its frames, in order: ACK (when due), FEC_REPORT (when our repair count grew),
   PATH_RESPONSE, PATH_CHALLENGE, HANDSHAKE_DONE, MAX_DATA, BLOCKED, channel control frames,
   unreliable datagrams, message fragments (the channels take turns, one fragment each; in each,
   lost data first, then new: ``_channels.py``), PING if nothing else elicits an ACK.
4. A tail-loss probe (``_probe_pending``, RFC 8985 §7) ignores the window and the pacer
   (RFC 9002 §7.5); with no new data it carries a copy of the newest outstanding data.
6. On an active path not yet validated, a packet that would pass the anti-amplification
   allowance carries control frames only (PATH_RESPONSE, PATH_CHALLENGE, then an ACK cut
   to the room left), so validation never waits for the peer to send more (``_paths.py``).
   Probing packets for candidate paths come from ``_paths.PathControl._probe_datagrams``.
5. While FEC is sending, every ack-eliciting DATA packet is protected (header flag,
   ``fec_group``, ``fec_index``); PARITY packets count in flight, like data, but are not
   ack-eliciting and never retransmitted (``_fec_path.py``).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Final

from aetherflow_sdk.quantum._channels import ChannelControl, Channels
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._congestion import CongestionController
from aetherflow_sdk.quantum._crypto import PacketProtection
from aetherflow_sdk.quantum._fec import PARITY_EXPANSION
from aetherflow_sdk.quantum._fec_path import FecPath
from aetherflow_sdk.quantum._messages import Fragment, MessageReceiver, MessageSender
from aetherflow_sdk.quantum._pacer import Pacer
from aetherflow_sdk.quantum._paths import PATH_FRAME_SIZE, PathState
from aetherflow_sdk.quantum._ranges import RangeSet
from aetherflow_sdk.quantum._recovery import LossRecovery, SentPacket
from aetherflow_sdk.quantum._rtt import RttEstimator
from aetherflow_sdk.quantum._states import ConnectionState
from aetherflow_sdk.quantum._stats import ConnectionCounters
from aetherflow_sdk.quantum._wire import (
    AEAD_TAG_SIZE,
    CHANNEL_MESSAGE_FRAME_OVERHEAD,
    ENCODED_HANDSHAKE_DONE,
    ENCODED_PING,
    HEADER,
    HEADER_SIZE,
    MAX_ACK_RANGES,
    MESSAGE_FRAME_OVERHEAD,
    VERSION,
    HeaderFlags,
    PacketType,
    encode_ack,
    encode_blocked,
    encode_fec_report,
    encode_fragment_head,
    encode_max_data,
    encode_path_challenge,
    encode_path_response,
    fragment_frame_overhead,
)

Address = tuple[str, int]

MAX_BURST: Final = 64  # packets built per datagrams_to_send() call, so the shell can interleave I/O
MIN_FRAGMENT: Final = 64  # do not start a message fragment in less room than this
ACK_HEAD_SIZE: Final = 1 + 18  # an ACK frame with one range (docs/protocol.md, section 4)
ACK_RANGE_SIZE: Final = 8  # each further range
MIN_ACK_PACKET: Final = HEADER_SIZE + ACK_HEAD_SIZE + AEAD_TAG_SIZE  # the smallest ACK-only packet
REPLAY_WINDOW_RANGES: Final = 4096  # received-packet ranges remembered for replay rejection

# Retransmittable control items a sent packet can carry (besides message fragments).
CONTROL_MAX_DATA: Final = "max_data"
CONTROL_HANDSHAKE_DONE: Final = "handshake_done"
CONTROL_PATH_CHALLENGE: Final = "path_challenge"
CONTROL_BLOCKED: Final = "blocked"


class PacketOutput:
    """Builds and seals outgoing packets from the connection's state (a mixin; see the module)."""

    # The connection state this half reads and writes (assigned in QuantumConnection.__init__).
    config: QuantumConfig
    state: ConnectionState
    rtt: RttEstimator
    congestion: CongestionController
    recovery: LossRecovery
    pacer: Pacer
    _fec: FecPath
    _stats: ConnectionCounters
    _sender: MessageSender
    _receiver: MessageReceiver
    _send_protection: PacketProtection | None
    _peer_cid: bytes
    _next_packet_number: int
    _handshake_out: list[bytes]
    _close_frame: bytes
    _close_packet_pending: bool
    _datagrams_out: deque[bytes]  # encoded DATAGRAM / CHANNEL_DATAGRAM frames
    channels: Channels
    _received: RangeSet
    _largest_received_time: float
    _ack_deadline: float | None
    _ack_info_pending: bool
    _ack_eliciting_unacked: int
    _pacing_deadline: float | None
    _last_sent: float
    _max_data_pending: bool
    _handshake_done_pending: bool
    _ping_pending: bool
    _probe_pending: bool
    _path: PathState
    _candidates: list[PathState]
    _replay_floor: int
    _largest_received: int

    if TYPE_CHECKING:  # provided by the path half (_paths.PathControl)

        def _probe_datagrams(self, now: float) -> list[tuple[bytes, Address]]: ...

    # ------------------------------------------------------------------ ACK scheduling

    def _record_received(self, pn: int, now: float) -> None:
        self._received.add(pn)
        if len(self._received) > REPLAY_WINDOW_RANGES:
            # Forget the oldest range: anything below it is rejected as too old (retransmitted
            # data always travels under new packet numbers, so nothing legitimate is lost).
            self._replay_floor = self._received.shift().stop
        if pn > self._largest_received:
            self._largest_received = pn
            self._largest_received_time = now

    def _schedule_ack(self, pn: int, now: float) -> None:
        self._ack_info_pending = True
        self._ack_eliciting_unacked += 1
        out_of_order = pn != self._largest_received or (
            len(self._received) > 1
            and pn == self._largest_received
            and self._received.bounds().stop - 1 != pn
        )
        if self._ack_eliciting_unacked >= self.config.ack_eliciting_threshold or out_of_order:
            self._ack_deadline = now  # RFC 9000 §13.2.1: acknowledge at once
        elif self._ack_deadline is None:
            self._ack_deadline = now + self.config.max_ack_delay

    # ------------------------------------------------------------------ the fate of sent packets

    def _on_packet_acked(self, packet: SentPacket) -> None:
        payload = packet.payload
        if not payload:
            return
        for item in payload:  # type: ignore[attr-defined]
            if isinstance(item, Fragment):
                if item.channel:
                    self.channels.on_fragment_acked(item)
                else:
                    self._sender.on_fragment_acked(item)
            elif item == CONTROL_PATH_CHALLENGE and self._path.challenge is not None:
                # The challenge arrived but no answer yet (the answer rides with this ACK, when
                # it does, and clears this again): its PATH_RESPONSE may have been lost.
                self._path.challenge_pending = True

    def _on_packets_lost(self, lost: list[SentPacket], now: float) -> None:
        eliciting = sum(1 for packet in lost if packet.ack_eliciting)
        if eliciting:
            self._fec.on_packets_lost(eliciting, now)
        for packet in lost:
            payload = packet.payload
            if not payload:
                continue
            self._stats.packets_retransmitted += 1
            for item in payload:  # type: ignore[attr-defined]
                if isinstance(item, Fragment):
                    self.channels.on_fragment_lost(item)
                elif isinstance(item, ChannelControl):
                    self.channels.on_control_lost(item)
                elif item == CONTROL_MAX_DATA:
                    self._max_data_pending = True
                elif item == CONTROL_BLOCKED:
                    self._sender.on_blocked_lost()
                elif item == CONTROL_HANDSHAKE_DONE:
                    self._handshake_done_pending = True
                elif item == CONTROL_PATH_CHALLENGE and self._path.challenge is not None:
                    self._path.challenge_pending = True

    # ------------------------------------------------------------------ building packets

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Datagrams to send now, each with its destination."""
        out: list[tuple[bytes, Address]] = []
        if self.state is ConnectionState.CLOSED:
            return out
        active = self._path
        address = active.address
        wrap = None if active.direct else active.path.wrap
        if self._handshake_out:  # (wrapped too: a handshake may run through a framed path)
            for handshake_packet in self._handshake_out:
                out.append((handshake_packet if wrap is None else wrap(handshake_packet), address))
                self._count_sent(len(handshake_packet), now)
            self._handshake_out.clear()
        if self._send_protection is None or self.state is ConnectionState.DRAINING:
            return out
        if self.state is ConnectionState.CLOSING:
            if self._close_packet_pending:
                self._close_packet_pending = False
                close = self._seal(self._close_frame)
                out.append((close if wrap is None else wrap(close), address))
                self._count_sent(len(close), now)
            return out
        if self._candidates:
            out.extend(self._probe_datagrams(now))
        for _ in range(MAX_BURST):
            packet = self._build_parity_packet(now) or self._build_packet(now)
            if packet is None:
                break
            out.append((packet if wrap is None else wrap(packet), address))
        return out

    def _seal(
        self,
        payload: bytes,
        packet_type: PacketType = PacketType.DATA,
        flags: int = 0,
        fec_group: int = 0,
        fec_index: int = 0,
    ) -> bytes:
        assert self._send_protection is not None
        pn = self._next_packet_number
        self._next_packet_number += 1
        # The same bytes as Header(...).pack(), without building a Header per packet.
        header = HEADER.pack(VERSION, packet_type, flags, fec_index, self._peer_cid, pn, fec_group)
        return self._send_protection.seal(header, pn, payload)

    def _count_sent(self, size: int, now: float) -> None:
        """One packet of ``size`` bytes goes out on the active path (plus its framing)."""
        path = self._path
        size += path.overhead
        self._stats.datagrams_sent += 1
        self._stats.bytes_sent += size
        path.bytes_sent += size
        self._last_sent = now

    def _amplification_blocked(self) -> bool:
        """Not even an ACK fits the active path's allowance: only the peer's next packet helps."""
        path = self._path
        return not path.validated and path.allowance() - path.overhead < MIN_ACK_PACKET

    def _ack_due(self, now: float) -> bool:
        return self._ack_deadline is not None and now >= self._ack_deadline

    def _build_packet(self, now: float) -> bytes | None:
        """Build and seal the next packet, or return None if nothing may be sent now."""
        path = self._path
        mds = path.packet_size
        budget = mds - HEADER_SIZE - AEAD_TAG_SIZE
        fec_sending = self._fec.may_protect
        if fec_sending:
            budget -= PARITY_EXPANSION  # so that this group's parity packets fit the path too
        if not path.validated:
            room = path.allowance() - path.overhead
            if room < mds:
                # Data waits for the peer to prove the new path; control frames go (rule 6).
                return self._build_control_packet(now, int(room))
        probe = self._probe_pending  # RFC 9002 §7.5: a probe is not blocked by the window
        window_open = probe or self.recovery.bytes_in_flight + mds <= self.congestion.congestion_window
        wants_data = window_open and (
            probe
            or self.channels.has_data_to_send()
            or self.channels.has_control()
            or self._datagrams_out
            or self._max_data_pending
            or self._sender.should_send_blocked()
            or self._handshake_done_pending
            or self._ping_pending
            or path.challenge_pending
        )
        ack_now = self._ack_due(now) or bool(path.responses)
        if not wants_data and not ack_now:
            if window_open and not self.channels.has_data_to_send():
                self.congestion.on_app_limited(self.recovery.bytes_in_flight, now)
            return None
        if wants_data and not probe:
            rate = self.congestion.pacing_rate
            if rate > 0:
                self.pacer.set_rate(rate)
            pace_at = self.pacer.next_send_time(mds, now)
            if pace_at is not None:
                self._pacing_deadline = pace_at
                if not ack_now:
                    return None
                wants_data = False  # send the ACK alone now; data follows when the pacer allows

        parts: list[bytes] = []
        retransmittable: list[object] = []
        eliciting = False  # any frame other than ACK makes the packet ack-eliciting (RFC 9002 §2)
        app_bytes = 0  # message bytes in this packet (the FEC policy's denominator)
        if self._ack_info_pending and self._received:
            # Only the newest MAX_ACK_RANGES ranges fit the frame: do not walk the replay window.
            newest = list(islice(reversed(self._received), MAX_ACK_RANGES))
            ack = encode_ack(newest, max(0.0, now - self._largest_received_time))
            parts.append(ack)
            budget -= len(ack)
            self._ack_info_pending = False
            self._ack_eliciting_unacked = 0
            self._ack_deadline = None
        if self._fec.report_due():
            report = encode_fec_report(self._fec.take_report())
            parts.append(report)
            budget -= len(report)
        if path.responses:
            eliciting = True
            for token in path.responses:
                parts.append(encode_path_response(token))
                budget -= PATH_FRAME_SIZE
            path.responses.clear()
        if wants_data:
            if path.challenge_pending and path.challenge is not None:
                parts.append(encode_path_challenge(path.challenge))
                budget -= PATH_FRAME_SIZE
                retransmittable.append(CONTROL_PATH_CHALLENGE)
                path.challenge_pending = False
            if self._handshake_done_pending:
                parts.append(ENCODED_HANDSHAKE_DONE)
                budget -= 1
                retransmittable.append(CONTROL_HANDSHAKE_DONE)
                self._handshake_done_pending = False
            if self._max_data_pending:
                parts.append(encode_max_data(self._receiver.max_data))
                self._receiver.on_max_data_sent()
                budget -= 9
                retransmittable.append(CONTROL_MAX_DATA)
                self._max_data_pending = False
            if self._sender.should_send_blocked():
                needed = self._sender.blocked_at
                assert needed is not None
                parts.append(encode_blocked(needed))
                self._sender.on_blocked_sent()
                budget -= 9
                retransmittable.append(CONTROL_BLOCKED)
            if self.channels.has_control():
                budget = self.channels.write_control(parts, retransmittable, budget)
            while self._datagrams_out and len(self._datagrams_out[0]) > mds - HEADER_SIZE - AEAD_TAG_SIZE:
                self._datagrams_out.popleft()  # queued for a larger path than this one: cannot go
                self._stats.unreliable_dropped += 1
            while self._datagrams_out and len(self._datagrams_out[0]) <= budget:
                frame = self._datagrams_out.popleft()
                parts.append(frame)
                budget -= len(frame)
                eliciting = True
                self._stats.unreliable_sent += 1
            # Channels (0 included) take turns, one fragment each (_channels.py, rule 6).
            while budget >= MESSAGE_FRAME_OVERHEAD + MIN_FRAGMENT:
                fragment = self.channels.next_fragment(
                    budget, MESSAGE_FRAME_OVERHEAD, CHANNEL_MESSAGE_FRAME_OVERHEAD
                )
                if fragment is None:
                    break
                parts.append(encode_fragment_head(fragment))
                parts.append(fragment.data)
                budget -= fragment_frame_overhead(fragment) + len(fragment.data)
                app_bytes += len(fragment.data)
                retransmittable.append(fragment)
            if probe:
                self._probe_pending = False
                self._stats.tail_loss_probes += 1
                if not retransmittable and not eliciting:
                    # No new data: copy the newest outstanding data, so that the probe's ACK
                    # both delivers it and shows what is missing before it (RFC 8985 §7.3).
                    budget = self._add_probe_copy(parts, retransmittable, budget)
                    app_bytes = sum(len(item.data) for item in retransmittable if isinstance(item, Fragment))
            if self._ping_pending or probe:
                self._ping_pending = False
                if not retransmittable and not eliciting:
                    parts.append(ENCODED_PING)
                    eliciting = True
        if not parts:
            return None
        eliciting = eliciting or bool(retransmittable)
        pn = self._next_packet_number
        plaintext = b"".join(parts)
        group = -1
        if eliciting and fec_sending and self._fec.protects(retransmittable):
            group, index = self._fec.protect(pn, plaintext, self.rtt.smoothed_rtt, now)
            packet = self._seal(plaintext, PacketType.DATA, HeaderFlags.FEC_PROTECTED, group, index)
        else:
            packet = self._seal(plaintext)
        sent = self._track_sent(pn, packet, eliciting, retransmittable, now)
        if sent is not None:
            if group >= 0:
                self._fec.track(sent, group)
            self.pacer.on_packet_sent(len(packet), now)
            # More data waiting after this packet: the window or the pacer sets the rate, not
            # the application (bulk); FEC "auto" backs its parity off then (_fec_path.py, rule 2).
            self._fec.on_data_sent(
                app_bytes,
                len(packet),
                now,
                backlogged=self.channels.has_data_to_send(),
                smoothed_rtt=self.rtt.smoothed_rtt,
            )
        return packet

    def _track_sent(
        self, pn: int, packet: bytes, eliciting: bool, retransmittable: list[object], now: float
    ) -> SentPacket | None:
        """Count a sealed packet, and hand an ack-eliciting one to loss recovery (returned)."""
        self._count_sent(len(packet), now)
        self._stats.packets_sent += 1
        if not eliciting:
            # ACK-only packets are not tracked for loss (RFC 9002 §3), but recovery must know
            # their numbers exist so that an ACK covering them is not taken for a forgery.
            self.recovery.largest_sent = pn
            return None
        sent = SentPacket(
            packet_number=pn,
            time_sent=now,
            size=len(packet),
            ack_eliciting=True,
            in_flight=True,
            payload=retransmittable or None,
        )
        self.recovery.on_packet_sent(sent, now)
        return sent

    def _build_control_packet(self, now: float, room: int) -> bytes | None:
        """A packet of at most ``room`` bytes with only the frames that validate a path."""
        path = self._path
        budget = room - HEADER_SIZE - AEAD_TAG_SIZE
        parts: list[bytes] = []
        retransmittable: list[object] = []
        while path.responses and budget >= PATH_FRAME_SIZE:
            parts.append(encode_path_response(path.responses.pop(0)))
            budget -= PATH_FRAME_SIZE
        if path.challenge_pending and path.challenge is not None and budget >= PATH_FRAME_SIZE:
            parts.append(encode_path_challenge(path.challenge))
            budget -= PATH_FRAME_SIZE
            retransmittable.append(CONTROL_PATH_CHALLENGE)
            path.challenge_pending = False
        eliciting = bool(parts)
        if (
            self._ack_info_pending
            and self._received
            and budget >= ACK_HEAD_SIZE
            and (parts or self._ack_due(now))
        ):
            count = min(MAX_ACK_RANGES, 1 + (budget - ACK_HEAD_SIZE) // ACK_RANGE_SIZE)
            newest = list(islice(reversed(self._received), count))
            parts.insert(0, encode_ack(newest, max(0.0, now - self._largest_received_time)))
            self._ack_info_pending = False
            self._ack_eliciting_unacked = 0
            self._ack_deadline = None
        if not parts:
            return None
        pn = self._next_packet_number
        packet = self._seal(b"".join(parts))
        self._track_sent(pn, packet, eliciting, retransmittable, now)
        return packet

    def _build_parity_packet(self, now: float) -> bytes | None:
        """The next FEC parity packet, if one is due and the window and the pacer allow it.

        Parity counts in flight (it uses the link) but is not ack-eliciting and is never
        retransmitted (docs/bbr-fec.md, "Parity and congestion control")."""
        shard = self._fec.next_parity(now)
        if shard is None:
            return None
        path = self._path
        mds = path.packet_size
        if not path.validated and path.allowance() - path.overhead < mds:
            return None
        if self.recovery.bytes_in_flight + mds > self.congestion.congestion_window:
            return None
        if self.congestion.pacing_rate > 0:
            self.pacer.set_rate(self.congestion.pacing_rate)
        pace_at = self.pacer.next_send_time(mds, now)
        if pace_at is not None:
            self._pacing_deadline = pace_at
            return None
        pn = self._next_packet_number
        packet = self._seal(shard.payload, PacketType.PARITY, 0, shard.group_id, shard.index)
        self._count_sent(len(packet), now)
        self.recovery.on_packet_sent(
            SentPacket(
                packet_number=pn, time_sent=now, size=len(packet), ack_eliciting=False, in_flight=True
            ),
            now,
        )
        self.pacer.on_packet_sent(len(packet), now)
        self._fec.on_parity_sent(shard, pn, len(packet), now)
        return packet

    def _add_probe_copy(self, parts: list[bytes], retransmittable: list[object], budget: int) -> int:
        payload = self.recovery.newest_payload()
        for item in payload or ():  # type: ignore[attr-defined]
            if isinstance(item, Fragment) and fragment_frame_overhead(item) + len(item.data) <= budget:
                parts.append(encode_fragment_head(item))
                parts.append(item.data)
                budget -= fragment_frame_overhead(item) + len(item.data)
                retransmittable.append(item)
        return budget
