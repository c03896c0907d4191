"""A sans-I/O bottleneck link and a paced sender, on a virtual clock, for congestion-control tests.

The link is one FIFO bottleneck of ``rate_bps`` with a drop-tail queue of
``queue_bytes`` (and optional seeded random loss before it), then ``one_way_delay``
of propagation; the receiver acknowledges
every packet at once and the ACK takes ``one_way_delay`` back (the ACK path is
never congested). Because the link is FIFO, a packet is lost exactly when a later
one is acknowledged first, so loss detection here is exact.

The sender paces each packet at ``controller.pacing_rate`` and respects
``controller.congestion_window``; it tells the controller it is app-limited when
it has window room but no data, as a Quantum connection does.

Everything is driven by an event heap; nothing sleeps and nothing reads a clock.
Times are kept in whole microseconds on a 1 µs grid (rates and delays in the tests
are chosen so serialisation times are whole microseconds) so that equal RTTs are
equal floats.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable

import attrs

from aetherflow_sdk.quantum._congestion import CongestionController, PacketInfo

_ACK, _WAKE = 0, 1


@attrs.define
class SimpleRtt:
    """The minimal ``RttView`` the controller is handed (RFC 6298 smoothing)."""

    latest_rtt: float = 0.0
    smoothed_rtt: float = 0.0
    min_rtt: float = float("inf")

    def update(self, sample: float) -> None:
        self.latest_rtt = sample
        self.min_rtt = min(self.min_rtt, sample)
        self.smoothed_rtt = sample if self.smoothed_rtt == 0 else 0.875 * self.smoothed_rtt + 0.125 * sample


@attrs.define
class Source:
    """What the application offers: bulk data in ``bulk`` intervals, plus timed messages.

    ``bulk`` is a list of (start, end) during which the send buffer is never empty;
    ``messages`` a list of (time, size) written at that time.
    """

    bulk: list[tuple[float, float]] = attrs.field(factory=list)
    messages: list[tuple[float, int]] = attrs.field(factory=list)

    def is_bulk(self, now: float) -> bool:
        return any(start <= now < end for start, end in self.bulk)

    def next_start(self, now: float) -> float | None:
        """The next time data appears after ``now``."""
        times = [start for start, _ in self.bulk if start > now] + [t for t, _ in self.messages if t > now]
        return min(times) if times else None


@attrs.define
class Trace:
    """What the test inspects afterwards."""

    modes: list[tuple[float, str]] = attrs.field(factory=list)
    """(time, mode) at every mode change, starting with the initial mode."""
    bandwidth: list[tuple[float, float]] = attrs.field(factory=list)
    """(time, controller.bandwidth) after every ACK."""
    queue: list[tuple[float, int]] = attrs.field(factory=list)
    """(time, bytes queued at the bottleneck) at every enqueue, including the new packet."""
    cwnd: list[tuple[float, int]] = attrs.field(factory=list)
    """(time, congestion_window) after every ACK."""
    acked: list[tuple[float, int]] = attrs.field(factory=list)
    """(time, bytes) of every acknowledged packet."""
    min_rtt_refreshed: list[float] = attrs.field(factory=list)
    """Times at which the controller's min_rtt_stamp changed."""
    delivered: int = 0
    sent: int = 0
    lost: int = 0
    dropped_by_queue: int = 0
    dropped_by_loss: int = 0


class LinkSimulation:
    """One paced sender, one bottleneck, one ACKing receiver."""

    def __init__(
        self,
        controller: CongestionController,
        *,
        rate_bps: float,
        one_way_delay: float,
        queue_bytes: int,
        packet_size: int = 1400,
        source: Source,
        probe: Callable[[CongestionController], float] | None = None,
        loss_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.cc = controller
        self.rate_bps = rate_bps
        self.delay = one_way_delay
        self.queue_limit = queue_bytes
        self.packet_size = packet_size
        self.source = source
        self.rtt = SimpleRtt()
        self.trace = Trace()
        self.now = 0.0
        self._probe = probe
        self._loss_rate = loss_rate
        self._rng = rng if rng is not None else random.Random(0)
        self._events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._next_pn = 0
        self._unacked: dict[int, PacketInfo] = {}
        self._bytes_in_flight = 0
        self._next_send_time = 0.0
        self._link_busy_until = 0.0
        self._in_queue: deque[tuple[float, int]] = deque()  # (departure time, size)
        self._queued_bytes = 0
        self._message_backlog = 0
        self._messages = deque(sorted(source.messages))
        self._pending_wakes: set[float] = set()

    # ---- plumbing ------------------------------------------------------------------------

    def _push(self, time: float, kind: int, value: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (_quantise(time), self._seq, kind, value))

    def _wake(self, time: float) -> None:
        # Strictly later than now, on the grid, or a wake could repeat forever.
        time = max(_quantise(time), _quantise(self.now + 1e-6))
        if time not in self._pending_wakes:
            self._pending_wakes.add(time)
            self._push(time, _WAKE, 0)

    def _record_mode(self) -> None:
        mode = self.cc.state_name()
        if not self.trace.modes or self.trace.modes[-1][1] != mode:
            self.trace.modes.append((self.now, mode))

    # ---- the link ------------------------------------------------------------------------

    def _enqueue(self, packet: PacketInfo) -> None:
        if self._loss_rate and self._rng.random() < self._loss_rate:
            self.trace.dropped_by_loss += 1
            return
        while self._in_queue and self._in_queue[0][0] <= self.now:
            self._queued_bytes -= self._in_queue.popleft()[1]
        if self._queued_bytes + packet.size > self.queue_limit:
            self.trace.dropped_by_queue += 1
            return
        start = max(self.now, self._link_busy_until)
        departure = _quantise(start + packet.size * 8 / self.rate_bps)
        self._link_busy_until = departure
        self._in_queue.append((departure, packet.size))
        self._queued_bytes += packet.size
        self.trace.queue.append((self.now, self._queued_bytes))
        # The receiver ACKs at once; the ACK takes one more one-way delay.
        self._push(departure + 2 * self.delay, _ACK, packet.packet_number)

    # ---- the sender ------------------------------------------------------------------------

    def _has_data(self) -> bool:
        while self._messages and self._messages[0][0] <= self.now:
            self._message_backlog += self._messages.popleft()[1]
        return self._message_backlog > 0 or self.source.is_bulk(self.now)

    def _try_send(self) -> None:
        while True:
            if not self._has_data():
                if self._bytes_in_flight < self.cc.congestion_window:
                    self.cc.on_app_limited(self._bytes_in_flight, self.now)
                following = self.source.next_start(self.now)
                if following is not None:
                    self._wake(following)
                return
            if self._bytes_in_flight + self.packet_size > self.cc.congestion_window:
                return  # an ACK will wake us
            if self._next_send_time > self.now:
                self._wake(self._next_send_time)
                return
            size = self.packet_size
            if self._message_backlog > 0 and not self.source.is_bulk(self.now):
                size = min(size, self._message_backlog)
            self._message_backlog = max(0, self._message_backlog - size)
            packet = PacketInfo(packet_number=self._next_pn, size=size, time_sent=self.now)
            self._next_pn += 1
            self._unacked[packet.packet_number] = packet
            self._bytes_in_flight += size
            self.trace.sent += 1
            self.cc.on_packet_sent(packet, self._bytes_in_flight, self.now)
            self._next_send_time = _quantise(max(self._next_send_time, self.now) + size / self.cc.pacing_rate)
            self._enqueue(packet)

    def _on_ack(self, packet_number: int) -> None:
        packet = self._unacked.pop(packet_number, None)
        if packet is None:
            return
        # FIFO link: everything sent before an acknowledged packet and still
        # unacknowledged was dropped.
        lost = [p for pn, p in self._unacked.items() if pn < packet_number]
        for p in lost:
            del self._unacked[p.packet_number]
            self._bytes_in_flight -= p.size
        self._bytes_in_flight -= packet.size
        self.rtt.update(self.now - packet.time_sent)
        self.trace.delivered += packet.size
        stamp = getattr(self.cc, "min_rtt_stamp", None)
        self.cc.on_packets_acked([packet], self.rtt, self._bytes_in_flight, self.now)
        if lost:
            self.trace.lost += len(lost)
            self.cc.on_packets_lost(lost, self._bytes_in_flight, self.now)
        if getattr(self.cc, "min_rtt_stamp", None) != stamp:
            self.trace.min_rtt_refreshed.append(self.now)
        self.trace.cwnd.append((self.now, self.cc.congestion_window))
        self.trace.acked.append((self.now, packet.size))
        if self._probe is not None:
            self.trace.bandwidth.append((self.now, self._probe(self.cc)))

    def _rto(self) -> float:
        return max(0.2, 3 * self.rtt.smoothed_rtt)

    def _check_retransmission_timeout(self) -> None:
        if not self._unacked:
            return
        oldest = next(iter(self._unacked.values()))
        if self.now < oldest.time_sent + self._rto():
            self._wake(oldest.time_sent + self._rto())
            return
        # The tail was dropped and nothing will be acknowledged: declare it all lost.
        lost = list(self._unacked.values())
        self._unacked.clear()
        self._bytes_in_flight = 0
        self.trace.lost += len(lost)
        self.cc.on_packets_lost(lost, 0, self.now)
        self.cc.on_retransmission_timeout(self.now)

    def run(self, until: float, max_events: int = 2_000_000) -> Trace:
        """Run the simulation to virtual time ``until`` (bounded by ``max_events``)."""
        self._record_mode()
        self._try_send()
        for _ in range(max_events):
            if not self._events or self._events[0][0] > until:
                break
            time, _, kind, value = heapq.heappop(self._events)
            self.now = time
            if kind == _ACK:
                self._on_ack(value)
            else:
                self._pending_wakes.discard(time)
            self._check_retransmission_timeout()
            self._record_mode()
            self._try_send()
            self._record_mode()
        else:
            raise AssertionError(f"simulation did not reach t={until} in {max_events} events")
        self.now = until
        return self.trace


def _quantise(time: float) -> float:
    """Round to the microsecond grid, so equal delays give equal floats."""
    return round(time, 6)
