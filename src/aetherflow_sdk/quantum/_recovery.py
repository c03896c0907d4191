"""Sent-packet tracking, SACK processing, loss detection and the RTO (sans-I/O).

The rules, in one place:

1. Every packet the connection sends is recorded with ``on_packet_sent``; packet
   numbers strictly increase and are never reused (retransmitted data goes into
   new packets), so each ACK names one exact transmission.
2. An ACK carries ranges of packet numbers (SACK). Each packet is acknowledged
   at most once: the first time it is ``newly_acked`` (or ``late_acked`` if it
   had already been declared lost -- a spurious retransmission).
3. RTT sample (RFC 9002 §5.1): only when the largest packet number of this ACK
   is acknowledged for the first time and some newly acknowledged packet is
   ack-eliciting (the largest may be an FEC parity packet, which is not).
4. Loss (RFC 9002 §6.1, RACK RFC 8985): an unacknowledged packet is lost when
   ``packet_threshold`` later packets have been acknowledged (§6.1.1), or when it
   was sent more than ``time_threshold * max(smoothed_rtt, latest_rtt)`` before
   now and some later packet is acknowledged (§6.1.2). A packet that is not lost
   yet but would become lost by time arms the loss timer. An FEC-protected packet
   is judged as if sent with its group's last parity packet (``fec_guard_pn``):
   the receiver can rebuild it only once that parity arrives.
5. Tail-loss probe (RACK-TLP, RFC 8985 §7; RFC 9002 §6.2 PTO): while
   ack-eliciting packets are outstanding and no loss timer is armed, a probe
   timer runs for ``PTO = smoothed_rtt + max(4 * rttvar, 1 ms) + max_ack_delay``
   (doubled per unanswered probe, never more than the RTO: RFC 8985 §7.2) from
   the last ack-eliciting send. On expiry
   the connection sends ONE probe packet (new data if it has some, else a copy
   of the newest outstanding data) -- nothing is declared lost and the window is
   untouched. The probe's ACK lets rule 4 find the lost tail within an RTT,
   where the RTO would have waited ``min_rto``. An ACK of new data ends probing.
6. RTO (RFC 6298), the backstop after ``max_probes`` unanswered probes (at once
   when ``max_probes`` is 0): the timer runs from the last time an ack-eliciting
   packet was sent or new data was acknowledged (§5.1, §5.3). On expiry the RTO
   backs off (§5.5), the congestion window collapses, and every outstanding
   packet is declared lost (go-back-N, as TCP does after an RTO); the pacer and
   the collapsed window meter the resend.
7. Packets that elicit no ACK of their own but count in flight (FEC parity) must
   not hold the window shut forever: when only such packets are outstanding and
   none is acknowledged within a PTO of the last one sent, they are declared lost
   (no RTO, no backoff; the controller sees the loss).
8. Adaptive reordering (with ``adaptive_reordering``; RFC 8985 §6.2 widens its
   reordering window in the same spirit, and Chromium's QUIC loss detection adapts both
   thresholds): when a packet declared lost by rule 4 is acknowledged after all
   (a spurious retransmission: it was only reordered), ``packet_threshold`` grows to
   the reordering distance seen (at most 64) and ``time_threshold`` doubles its
   margin over one RTT (9/8, 5/4, 3/2, at most 2) until that packet would not have
   been declared lost. They never shrink back within a connection.

Cost: packets live in a dict keyed by packet number plus a "lowest outstanding"
cursor. ACK ranges are merged, then clipped to ``[lowest outstanding, largest sent]``
before they are walked, and rule 4 with ``packet_threshold`` keeps at most
``packet_threshold - 1`` unacknowledged packets below the largest acknowledged
one, so an ACK costs O(newly acked + ranges + packet_threshold), not O(sent).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence

import attrs

from aetherflow_sdk._errors import LocalProtocolError, RemoteProtocolError
from aetherflow_sdk.quantum._congestion import CongestionController
from aetherflow_sdk.quantum._rtt import RttEstimator

PACKET_THRESHOLD = 3  # RFC 9002 §6.1.1 (kPacketThreshold), as TCP's 3 duplicate ACKs (RFC 5681 §3.2)
TIME_THRESHOLD = 9 / 8  # RFC 9002 §6.1.2 (kTimeThreshold)
LOST_MEMORY_RTTS = 3  # remember declared-lost packets this many RTTs (at least one RTO) to spot late ACKs
LOST_MEMORY_MAX = 10_000  # ...and at most this many, whatever the RTT
GRANULARITY = 0.001  # RFC 9002 §6.1.2 kGranularity: timer slack in the PTO (and the loss delay floor)
PROBE_SEARCH = 8  # newest outstanding packets searched for data to copy into a probe
MAX_PACKET_THRESHOLD = 64  # adaptive reordering never waits for more later packets than this
MAX_TIME_THRESHOLD = 2.0  # ...nor longer than 2 RTTs (Chromium QUIC: reordering_shift down to 0)
MAX_PROBES = 2  # RFC 8985 §7 sends one TLP; RFC 9002 §6.2.4 allows up to 2 probes before backing off further


@attrs.define(slots=True, eq=False)
class SentPacket:
    """One transmitted packet, as loss recovery tracks it."""

    packet_number: int
    """Unique, strictly increasing packet number."""
    time_sent: float
    """``now`` when the packet was handed to the socket."""
    size: int
    """Bytes on the wire."""
    ack_eliciting: bool
    """The peer must acknowledge it (it carries more than ACKs)."""
    in_flight: bool
    """Counts toward bytes in flight and congestion control."""
    payload: object = None
    """Opaque to recovery: the connection's retransmittable frames."""
    declared_lost: bool = False
    """Set when recovery declares it lost (a later ACK of it is spurious)."""
    fec_guard_pn: int = -1
    """FEC-protected packets: judged for loss as if sent as this packet number (the group's
    last parity packet; ``FEC_GUARD_PENDING`` until the parity is sent). -1: unprotected."""
    fec_guard_time: float = 0.0
    """...and at this time (when that parity packet was sent)."""
    lost_at_largest_acked: int = -1
    """Largest acknowledged packet number when a threshold declared it lost (-1: not so)."""


FEC_GUARD_PENDING = 1 << 64
"""``fec_guard_pn`` of a protected packet whose group's parity has not been sent yet."""


@attrs.frozen(kw_only=True)
class AckOutcome:
    """What one ACK frame changed."""

    newly_acked: list[SentPacket]
    """First acknowledgement of these packets (not previously declared lost)."""
    late_acked: list[SentPacket]
    """Acknowledged AFTER being declared lost: each is one spurious retransmission."""
    lost: list[SentPacket]
    """Newly declared lost by this ACK (packet or time threshold)."""
    rtt_updated: bool
    """An RTT sample was taken."""


@attrs.frozen(kw_only=True)
class TimeoutOutcome:
    """What a loss-detection timer expiry changed."""

    lost: list[SentPacket]
    """Declared lost by the time threshold or by the RTO."""
    rto_fired: bool
    """The retransmission timeout expired (as opposed to the time-threshold loss timer)."""
    probe: bool = False
    """The probe timeout expired: send one ack-eliciting probe packet now, whatever the
    congestion window says (RFC 9002 §7.5). Nothing was declared lost."""


class LossRecovery:
    """Tracks sent packets and decides what was received and what was lost."""

    def __init__(
        self,
        *,
        rtt: RttEstimator,
        congestion: CongestionController,
        packet_threshold: int = PACKET_THRESHOLD,
        time_threshold: float = TIME_THRESHOLD,
        max_probes: int = 0,
        max_ack_delay: float = 0.0,
        adaptive_reordering: bool = False,
    ) -> None:
        if packet_threshold < 1 or time_threshold < 1 or max_probes < 0 or max_ack_delay < 0:
            raise LocalProtocolError(
                f"LossRecovery needs packet_threshold >= 1, time_threshold >= 1, max_probes >= 0 and "
                f"max_ack_delay >= 0, got {packet_threshold!r}, {time_threshold!r}, {max_probes!r}, "
                f"{max_ack_delay!r}"
            )
        self.rtt = rtt
        self.congestion = congestion
        self.packet_threshold = packet_threshold
        self.time_threshold = time_threshold
        self.max_probes = max_probes
        """Tail-loss probes before the RTO may fire (0: the RTO alone, plain RFC 6298)."""
        self.max_ack_delay = max_ack_delay
        """The longest the peer holds an ACK back (its part of the PTO)."""
        self.adaptive_reordering = adaptive_reordering
        """Widen ``packet_threshold``/``time_threshold`` after each spurious loss (rule 8)."""
        self.largest_acked: int | None = None
        """Largest packet number the peer has acknowledged."""
        self.largest_sent: int = -1
        """Largest packet number recorded by ``on_packet_sent`` (-1 before any)."""
        self.packets_lost = 0
        """Ack-eliciting packets declared lost (ACK-only packets are not counted)."""
        self.spurious_retransmissions = 0
        """Packets acknowledged after having been declared lost."""
        self.rto_count = 0
        """Retransmission timeouts that fired."""
        self.rtt_sample_floor = 0
        """Packets below this number give no RTT sample: they went out on an earlier path
        (RFC 9000 §9.4: the new path's RTT is measured afresh)."""
        self.probe_count = 0
        """Probe timeouts that fired (each asked for one probe packet)."""
        self._probes = 0  # consecutive unanswered probes (RFC 9002's pto_count)
        self._sent: dict[int, SentPacket] = {}
        self._lowest = 0  # every packet number below this is not in _sent
        self._bytes_in_flight = 0
        self._ack_eliciting_outstanding = 0
        self._loss_time: float | None = None
        self._rto_base: float = 0.0
        self._last_in_flight_sent: float = 0.0
        # Declared-lost packets kept briefly to recognise late ACKs: _lost for lookup,
        # _lost_numbers sorted (for ACK ranges), _lost_order by declaration time (expiry;
        # entries whose packet was late-acked meanwhile are skipped when they expire).
        self._lost: dict[int, SentPacket] = {}
        self._lost_numbers: list[int] = []
        self._lost_order: deque[tuple[float, int]] = deque()

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of in-flight packets neither acknowledged nor declared lost."""
        return self._bytes_in_flight

    def has_unacked(self) -> bool:
        """Any ack-eliciting packet outstanding."""
        return self._ack_eliciting_outstanding > 0

    def outstanding(self) -> int:
        """Number of tracked packets neither acknowledged nor declared lost."""
        return len(self._sent)

    def newest_payload(self) -> object:
        """The payload of the newest outstanding packet that has one (what a probe copies), or None.

        Only the last few packets are looked at: PINGs carry no payload, and a probe
        with nothing to copy is a PING itself.
        """
        for index, packet in enumerate(reversed(self._sent.values())):
            if packet.payload:
                return packet.payload
            if index >= PROBE_SEARCH:
                break
        return None

    def on_packet_sent(self, packet: SentPacket, now: float) -> None:
        """Record a sent packet; tells the congestion controller if it counts in flight."""
        pn = packet.packet_number
        if pn <= self.largest_sent:
            raise LocalProtocolError(
                f"packet number {pn} sent after {self.largest_sent}: packet numbers must strictly increase"
            )
        if not self._sent:
            self._lowest = pn
        self.largest_sent = pn
        self._sent[pn] = packet
        if packet.ack_eliciting:
            self._ack_eliciting_outstanding += 1
            self._rto_base = now  # RFC 6298 §5.1, as RFC 9002's time_of_last_ack_eliciting_packet
        if packet.in_flight:
            self._bytes_in_flight += packet.size
            self._last_in_flight_sent = now
            self.congestion.on_packet_sent(packet, self._bytes_in_flight, now)

    def on_ack_received(self, ranges: Sequence[range], ack_delay: float, now: float) -> AckOutcome:
        """Process the ranges of one ACK frame (in any order).

        Raises RemoteProtocolError if the peer acknowledges a packet number we
        never sent (RFC 9000 §13.1 treats that as a protocol violation).
        """
        largest = -1
        for r in ranges:
            if r and r.stop - 1 > largest:
                largest = r.stop - 1
        if largest < 0:
            return AckOutcome(newly_acked=[], late_acked=[], lost=[], rtt_updated=False)
        if largest > self.largest_sent:
            raise RemoteProtocolError(
                f"peer acknowledged packet {largest}, but the largest packet sent is {self.largest_sent}"
            )
        sent = self._sent
        largest_packet = sent.get(largest)
        if largest_packet is None:
            largest_packet = self._lost.get(largest)
        newly: list[SentPacket] = []
        late: list[SentPacket] = []
        lowest = self._lowest
        top = self.largest_sent + 1
        pop = sent.pop
        for r in _merged(ranges) if len(ranges) > 1 else ranges:
            lo = r.start if r.start > lowest else lowest
            hi = r.stop if r.stop < top else top
            for pn in range(lo, hi):
                p = pop(pn, None)
                if p is not None:
                    newly.append(p)
            if self._lost_numbers:
                self._collect_late(r, late)

        # Rule 8 judges a late ACK against the RTT before this ACK's own sample (which the
        # late packet itself may inflate), as Chromium uses the previous SRTT.
        rtt_before = max(self.rtt.smoothed_rtt, self.rtt.latest_rtt)
        rtt_updated = False
        if (
            largest_packet is not None
            and largest_packet.packet_number >= self.rtt_sample_floor
            and (
                largest_packet.ack_eliciting
                or any(p.ack_eliciting for p in newly)
                or any(p.ack_eliciting for p in late)
            )
        ):
            # It was outstanding (now popped into ``newly``) or declared lost (now in
            # ``late``): either way this is its first acknowledgement, and since packet
            # numbers are never reused the sample is unambiguous (Karn's rule holds).
            self.rtt.on_sample(now - largest_packet.time_sent, ack_delay)
            rtt_updated = True
        if self.largest_acked is None or largest > self.largest_acked:
            self.largest_acked = largest

        acked_info: list[SentPacket] = []
        new_data_acked = False
        for p in newly:
            if p.ack_eliciting:
                self._ack_eliciting_outstanding -= 1
                new_data_acked = True
            if p.in_flight:
                self._bytes_in_flight -= p.size
                acked_info.append(p)
        if new_data_acked:
            self._rto_base = now  # RFC 6298 §5.3: restart the timer when new data is acked
            self._probes = 0  # RFC 9002 §6.2.1: an acknowledgement resets the PTO backoff
        self._advance_lowest()

        lost = self._detect_lost(now)
        self._declare_lost(lost, now, by_threshold=True)
        if acked_info:
            self.congestion.on_packets_acked(acked_info, self.rtt, self._bytes_in_flight, now)
        if late:
            # FEC parity is never retransmitted, so a late ACK of it is not a spurious retransmission.
            self.spurious_retransmissions += sum(1 for p in late if p.ack_eliciting)
            if self.adaptive_reordering:
                self._widen_reordering_window(late, rtt_before, now)
        self._expire_lost_memory(now)
        return AckOutcome(newly_acked=newly, late_acked=late, lost=lost, rtt_updated=rtt_updated)

    def probe_timeout(self) -> float:
        """The PTO without backoff (RFC 9002 §6.2.1)."""
        rtt = self.rtt
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, GRANULARITY) + self.max_ack_delay

    def loss_detection_timer(self) -> float | None:
        """The earliest deadline: the time-threshold loss timer, else the probe timer while
        probes remain, else the RTO (None if nothing is outstanding)."""
        if self._loss_time is not None:
            return self._loss_time
        if not self._ack_eliciting_outstanding:
            if self._sent:
                # Only packets that elicit no ACK of their own are outstanding (FEC parity):
                # the peer acknowledges them within max_ack_delay, or they were lost (rule 7).
                return self._last_in_flight_sent + self.probe_timeout()
            return None
        rto = self.rtt.rto
        if self._probes < self.max_probes:
            # RFC 8985 §7.2: a probe never waits longer than the RTO would have.
            return self._rto_base + min(self.probe_timeout() * (1 << self._probes), rto)
        return self._rto_base + rto

    def on_loss_detection_timeout(self, now: float) -> TimeoutOutcome:
        """Handle the timer: time-threshold losses, or the RTO. Early calls change nothing."""
        if self._loss_time is not None:
            if now < self._loss_time:
                return TimeoutOutcome(lost=[], rto_fired=False)
            lost = self._detect_lost(now)
            self._declare_lost(lost, now, by_threshold=True)
            self._expire_lost_memory(now)
            return TimeoutOutcome(lost=lost, rto_fired=False)
        deadline = self.loss_detection_timer()
        if deadline is None or now < deadline:
            return TimeoutOutcome(lost=[], rto_fired=False)
        if not self._ack_eliciting_outstanding:
            lost = list(self._sent.values())
            self._sent.clear()
            self._lowest = self.largest_sent + 1
            self._declare_lost(lost, now)
            self._expire_lost_memory(now)
            return TimeoutOutcome(lost=lost, rto_fired=False)
        if self._probes < self.max_probes:
            # RFC 8985 §7.3 / RFC 9002 §6.2.4: ask for a probe; declare nothing lost, leave
            # the window alone. The probe's send restarts the timer (on_packet_sent).
            self._probes += 1
            self.probe_count += 1
            return TimeoutOutcome(lost=[], rto_fired=False, probe=True)
        # RFC 6298 §5.4-§5.6: back off, collapse the window, resend from the first
        # unacknowledged packet -- here: everything outstanding, in new packets.
        self.rto_count += 1
        self.rtt.on_timeout()
        self.congestion.on_retransmission_timeout(now)
        lost = list(self._sent.values())
        self._sent.clear()
        self._lowest = self.largest_sent + 1
        self._loss_time = None
        self._declare_lost(lost, now)
        self._expire_lost_memory(now)
        return TimeoutOutcome(lost=lost, rto_fired=True)

    # -- internals -------------------------------------------------------------------------

    def _advance_lowest(self) -> None:
        sent = self._sent
        if not sent:
            self._lowest = self.largest_sent + 1
            return
        lowest = self._lowest
        while lowest not in sent:
            lowest += 1
        self._lowest = lowest

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """Remove and return the packets now lost; re-arm the loss timer (RFC 9002 §A.10)."""
        self._loss_time = None
        largest_acked = self.largest_acked
        if largest_acked is None or self._lowest >= largest_acked:
            return []
        rtt = self.rtt
        loss_delay = self.time_threshold * max(rtt.latest_rtt, rtt.smoothed_rtt)
        loss_delay = max(loss_delay, 0.001)  # RFC 9002 §6.1.2: at least kGranularity
        threshold_pn = largest_acked - self.packet_threshold
        sent = self._sent
        lost: list[SentPacket] = []
        loss_time: float | None = None
        for pn in range(self._lowest, largest_acked):
            p = sent.get(pn)
            if p is None:
                continue
            reference, sent_at = pn, p.time_sent
            if p.fec_guard_pn >= 0:  # FEC: the parity may still rebuild it (rule 4)
                if p.fec_guard_pn > largest_acked:
                    continue  # the parity is not acknowledged yet: the PTO/RTO still covers it
                reference, sent_at = p.fec_guard_pn, p.fec_guard_time
            deadline = sent_at + loss_delay
            if reference <= threshold_pn or deadline <= now:
                del sent[pn]
                lost.append(p)
            elif loss_time is None or deadline < loss_time:
                loss_time = deadline
        self._loss_time = loss_time
        if lost:
            self._advance_lowest()
        return lost

    def _declare_lost(self, lost: list[SentPacket], now: float, *, by_threshold: bool = False) -> None:
        if not lost:
            return
        infos: list[SentPacket] = []
        largest_acked = self.largest_acked if by_threshold and self.largest_acked is not None else -1
        for p in lost:
            p.declared_lost = True
            p.lost_at_largest_acked = largest_acked
            if p.ack_eliciting:
                self._ack_eliciting_outstanding -= 1
                self.packets_lost += 1
            if p.in_flight:
                self._bytes_in_flight -= p.size
                infos.append(p)
            self._lost[p.packet_number] = p
            self._lost_order.append((now, p.packet_number))
            if not self._lost_numbers or p.packet_number > self._lost_numbers[-1]:
                self._lost_numbers.append(p.packet_number)
            else:
                insort(self._lost_numbers, p.packet_number)
        if infos:
            self.congestion.on_packets_lost(infos, self._bytes_in_flight, now)

    def _widen_reordering_window(self, late: list[SentPacket], rtt: float, now: float) -> None:
        """Rule 8: make the thresholds wide enough that these packets would not have been lost."""
        for p in late:
            if p.lost_at_largest_acked < 0:
                continue  # declared lost by the RTO or as stale parity: not reordering
            guarded = p.fec_guard_pn >= 0
            reference = p.fec_guard_pn if guarded else p.packet_number
            distance = p.lost_at_largest_acked - reference + 1
            if distance > self.packet_threshold:
                self.packet_threshold = min(distance, MAX_PACKET_THRESHOLD)
            needed = now - (p.fec_guard_time if guarded else p.time_sent)
            while self.time_threshold < MAX_TIME_THRESHOLD and rtt * self.time_threshold < needed:
                # 9/8 -> 5/4 -> 3/2 -> 2: double the margin over one RTT each time.
                self.time_threshold = min(1 + 2 * (self.time_threshold - 1), MAX_TIME_THRESHOLD)

    def _collect_late(self, r: range, late: list[SentPacket]) -> None:
        numbers = self._lost_numbers
        i = bisect_left(numbers, r.start)
        j = bisect_left(numbers, r.stop, i)
        if i == j:
            return
        for pn in numbers[i:j]:
            late.append(self._lost.pop(pn))
        del numbers[i:j]

    def _expire_lost_memory(self, now: float) -> None:
        order = self._lost_order
        if not order:
            return
        rtt = self.rtt
        # At least one RTO: after a timeout the ACKs that were merely slow arrive within it.
        horizon = now - max(LOST_MEMORY_RTTS * max(rtt.smoothed_rtt, rtt.latest_rtt), rtt.rto)
        lost = self._lost
        numbers = self._lost_numbers
        while order and (order[0][0] <= horizon or len(order) > LOST_MEMORY_MAX):
            _, pn = order.popleft()
            if lost.pop(pn, None) is not None:
                del numbers[bisect_left(numbers, pn)]


def _range_start(r: range) -> int:
    return r.start


def _merged(ranges: Sequence[range]) -> list[range]:
    """Ascending, with overlapping ranges merged: a peer repeating a range must not make us
    walk it twice."""
    out: list[range] = []
    for r in sorted(ranges, key=_range_start):
        if not r:
            continue
        if out and r.start <= out[-1].stop:
            if r.stop > out[-1].stop:
                out[-1] = range(out[-1].start, r.stop)
        else:
            out.append(r)
    return out
