"""NewReno congestion control, as RFC 9002 §7 and its Appendix B pseudocode describe it.

Registered under the name ``"newreno"`` when this module is imported.

* Slow start: the window grows by the bytes acknowledged (§7.3.1).
* Congestion avoidance: about one datagram per window of bytes acknowledged (§7.3.3).
* Loss: one reduction per recovery period -- packets sent before the period
  began do not reduce it again (§7.3.2); the reduction halves the window
  (kLossReductionFactor = 0.5, §7.3.2 / B.2), never below the minimum window.
* RTO: the window collapses to the minimum window (§7.6, RFC 6298 §5 / RFC 5681 §3.1).
* App-limited: the window does not grow while the sender did not use it (§7.8).
* Pacing rate: 1.25 * cwnd / smoothed_rtt (§7.7), so a window is sent in ~0.8 RTT.
"""

from __future__ import annotations

from collections.abc import Sequence

from aetherflow_sdk.quantum._congestion import RttView, SentPacketInfo, register

LOSS_REDUCTION_FACTOR = 0.5  # RFC 9002 §7.3.2 / B.2 kLossReductionFactor
MINIMUM_WINDOW_PACKETS = 2  # RFC 9002 §7.2 kMinimumWindow = 2 * max_datagram_size
PACING_GAIN = 1.25  # RFC 9002 §7.7 (N = 1.25)
INITIAL_RTT_FOR_PACING = 0.1  # before any RTT sample (matches QuantumConfig.initial_rtt's default)


class NewReno:
    """A sans-I/O NewReno controller satisfying ``CongestionController``."""

    name = "newreno"

    def __init__(self, max_datagram_size: int, initial_window_packets: int = 10) -> None:
        self.max_datagram_size = max_datagram_size
        self.minimum_window = MINIMUM_WINDOW_PACKETS * max_datagram_size
        self._cwnd = max(initial_window_packets * max_datagram_size, self.minimum_window)
        self.ssthresh: float = float("inf")
        """Slow-start threshold in bytes (infinite until the first congestion event)."""
        self.recovery_start_time: float | None = None
        """``now`` when the current recovery period began (RFC 9002 B.2 congestion_recovery_start_time)."""
        self._bytes_acked = 0  # congestion-avoidance accumulator (RFC 3465-style byte counting)
        self._smoothed_rtt = INITIAL_RTT_FOR_PACING
        self._app_limited = False
        self._in_recovery = False
        self.congestion_events = 0
        """Window reductions caused by loss (not counting RTOs)."""

    @property
    def congestion_window(self) -> int:
        """Bytes that may be in flight."""
        return self._cwnd

    @property
    def pacing_rate(self) -> float:
        """Bytes per second (RFC 9002 §7.7)."""
        return PACING_GAIN * self._cwnd / self._smoothed_rtt

    @property
    def app_limited(self) -> bool:
        """The sender last reported having nothing to send with room in the window."""
        return self._app_limited

    def _in_recovery_period(self, time_sent: float) -> bool:
        # RFC 9002 B.4 InCongestionRecovery: sent at or before the period began.
        return self.recovery_start_time is not None and time_sent <= self.recovery_start_time

    def on_packet_sent(self, packet: SentPacketInfo, bytes_in_flight: int, now: float) -> None:
        """A full window (or near enough that another datagram would not fit) ends app-limited."""
        if bytes_in_flight + self.max_datagram_size > self._cwnd:
            self._app_limited = False

    def on_packets_acked(
        self, acked: Sequence[SentPacketInfo], rtt: RttView, bytes_in_flight: int, now: float
    ) -> None:
        """Grow the window for acknowledged packets sent outside recovery (RFC 9002 B.5)."""
        if rtt.smoothed_rtt > 0:
            self._smoothed_rtt = rtt.smoothed_rtt
        mds = self.max_datagram_size
        for p in acked:
            if self._in_recovery_period(p.time_sent):
                continue
            # A packet sent after the period began is acknowledged: recovery is over.
            self._in_recovery = False
            if self._app_limited:
                continue
            if self._cwnd < self.ssthresh:
                self._cwnd += p.size
            else:
                # Congestion avoidance: +1 datagram per cwnd bytes acknowledged.
                self._bytes_acked += p.size
                if self._bytes_acked >= self._cwnd:
                    self._bytes_acked -= self._cwnd
                    self._cwnd += mds

    def _on_congestion_event(self, time_sent: float, now: float) -> None:
        # RFC 9002 B.6 OnCongestionEvent: at most one reduction per recovery period.
        if self._in_recovery_period(time_sent):
            return
        self.recovery_start_time = now
        self._in_recovery = True
        self.congestion_events += 1
        self.ssthresh = self._cwnd * LOSS_REDUCTION_FACTOR
        self._cwnd = max(int(self.ssthresh), self.minimum_window)
        self._bytes_acked = 0

    def on_packets_lost(self, lost: Sequence[SentPacketInfo], bytes_in_flight: int, now: float) -> None:
        """One congestion event for the newest lost packet (RFC 9002 B.8)."""
        if lost:
            self._on_congestion_event(max(p.time_sent for p in lost), now)

    def on_retransmission_timeout(self, now: float) -> None:
        """Collapse to the minimum window and start a recovery period (RFC 9002 §7.6, RFC 5681 §3.1)."""
        self.ssthresh = max(self._cwnd * LOSS_REDUCTION_FACTOR, self.minimum_window)
        self._cwnd = self.minimum_window
        self._bytes_acked = 0
        self.recovery_start_time = now
        self._in_recovery = True

    def on_app_limited(self, bytes_in_flight: int, now: float) -> None:
        """The sender had room but nothing to send: stop growing until the window is used (§7.8)."""
        if bytes_in_flight + self.max_datagram_size <= self._cwnd:
            self._app_limited = True

    def state_name(self) -> str:
        """The state: recovery, slow_start or congestion_avoidance (suffixed +app_limited)."""
        if self._in_recovery:
            state = "recovery"
        elif self._cwnd < self.ssthresh:
            state = "slow_start"
        else:
            state = "congestion_avoidance"
        return state + "+app_limited" if self._app_limited else state


def _factory(max_datagram_size: int, initial_window_packets: int) -> NewReno:
    return NewReno(max_datagram_size, initial_window_packets)


register("newreno", _factory)
