"""BBRv1 congestion control, as Linux ``net/ipv4/tcp_bbr.c`` does it, sans-I/O.

BBR models the path by two numbers and paces to them instead of reacting to loss:

* the bottleneck bandwidth ``bw``: the windowed *max* of delivery-rate samples over
  the last 10 packet-timed rounds (``_WindowedMax``, after ``lib/win_minmax.c``);
* the round-trip propagation time ``min_rtt``: the *min* RTT seen in the last 10 s.

``pacing_rate = pacing_gain * bw`` and ``cwnd = cwnd_gain * bw * min_rtt`` (+ a few
packets of quanta). The gains come from the mode (STARTUP, DRAIN, PROBE_BW,
PROBE_RTT); the mode changes are the table ``_TRANSITIONS``.

Delivery-rate samples come from :class:`DeliveryRateSampler`, which follows
``net/ipv4/tcp_rate.c`` and draft-cheng-iccrg-delivery-rate-estimation-02: every
sent packet gets a snapshot of the connection's delivery state, and an ACK turns
the newest acknowledged snapshot into ``delivered / max(send_elapsed, ack_elapsed)``.
Samples taken while the application had nothing to send are marked app-limited
and can only *raise* the bandwidth estimate (tcp_bbr.c ``bbr_update_bw``), so an
idle collaborative session keeps its rate.

Units: bytes, seconds, bytes per second. tcp_bbr counts packets; we count bytes
and round windows to whole ``max_datagram_size`` packets where tcp_bbr does.

Deliberate differences from tcp_bbr.c:

* no long-term ("policer") bandwidth estimator (``bbr_lt_bw_sampling``);
* the pacer's earliest departure time is not visible here, so
  ``bbr_packets_in_net_at_edt`` takes EDT = now;
* loss recovery is signalled by ``on_packets_lost`` / ``on_retransmission_timeout``:
  the first loss starts a recovery episode that ends when a packet sent after it
  is acknowledged (TCP's ``high_seq``), which is what tcp_bbr sees as
  ``TCP_CA_Recovery`` / ``TCP_CA_Loss``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence

import attrs

from aetherflow_sdk.quantum._congestion import CongestionController, RttView, SentPacketInfo, register

# --------------------------------------------------------------------------------------------
# Constants. Every one is tcp_bbr.c's (Linux 6.x) unless said otherwise.
# --------------------------------------------------------------------------------------------

HIGH_GAIN = 2 / math.log(2)
"""STARTUP pacing and cwnd gain, 2/ln 2 ≈ 2.885: the smallest gain that doubles the
delivery rate every round, like slow start (tcp_bbr.c ``bbr_high_gain`` = 739/256)."""

DRAIN_GAIN = 1 / HIGH_GAIN
"""DRAIN pacing gain: drains the STARTUP queue in about one round (``bbr_drain_gain``)."""

CWND_GAIN = 2.0
"""PROBE_BW cwnd gain: tolerates delayed and stretched ACKs (``bbr_cwnd_gain``)."""

PACING_GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""PROBE_BW gain cycle: probe up, drain what that queued, cruise six rounds
(``bbr_pacing_gain[]``, CYCLE_LEN = 8)."""

CYCLE_RANDOM_PHASES = 7
"""PROBE_BW starts at a random phase among the 7 that are not the 0.75 one, so flows
desynchronise (``bbr_cycle_rand``)."""

BW_FILTER_ROUNDS = len(PACING_GAIN_CYCLE) + 2
"""Window of the max-bandwidth filter, in packet-timed rounds (``bbr_bw_rtts`` = CYCLE_LEN + 2)."""

MIN_RTT_WINDOW = 10.0
"""Window of the min-RTT filter, in seconds (``bbr_min_rtt_win_sec``)."""

PROBE_RTT_DURATION = 0.2
"""Time spent at the minimum cwnd in PROBE_RTT: bounds its cost to ~2 % of 10 s
(``bbr_probe_rtt_mode_ms``)."""

CWND_MIN_TARGET_PACKETS = 4
"""Smallest cwnd, and the PROBE_RTT cwnd: two 2-packet delayed-ACK pairs in flight
(``bbr_cwnd_min_target``)."""

FULL_BW_THRESHOLD = 1.25
"""STARTUP keeps going while the bandwidth still grows by 25 % per round (``bbr_full_bw_thresh``)."""

FULL_BW_ROUNDS = 3
"""... and declares the pipe full after 3 rounds without such growth (``bbr_full_bw_cnt``)."""

PACING_MARGIN = 0.01
"""Pace 1 % below the estimate so the bottleneck queue stays small (``bbr_pacing_margin_percent``)."""

EXTRA_ACKED_GAIN = 1.0
"""Gain on the ACK-aggregation allowance added to cwnd (``bbr_extra_acked_gain``)."""

EXTRA_ACKED_WINDOW_ROUNDS = 5
"""The aggregation max-filter holds 5-10 rounds (``bbr_extra_acked_win_rtts``)."""

EXTRA_ACKED_MAX_TIME = 0.1
"""The aggregation allowance is at most 100 ms of bandwidth (``bbr_extra_acked_max_us``)."""

ACK_EPOCH_RESET_PACKETS = 1 << 20
"""Restart an aggregation epoch after this many packets ACKed (``bbr_ack_epoch_acked_reset_thresh``)."""

NOMINAL_RTT = 0.001
"""RTT assumed for the initial pacing rate before any sample (``bbr_init_pacing_rate_from_rtt``:
USEC_PER_MSEC)."""

PACING_SHIFT = 10
"""A send quantum is pacing_rate >> 10, about 1 ms of data (``sk_pacing_shift``, include/net/sock.h)."""

MIN_TSO_RATE = 1_200_000 / 8
"""Below 1.2 Mbit/s the quantum is 1 packet, above it at least 2 (``bbr_min_tso_rate``, bytes/s)."""

MAX_QUANTUM_BYTES = 65536 - 1 - 320
"""A quantum never exceeds one legacy GSO super-packet (tcp_bbr.c ``bbr_tso_segs_goal``:
GSO_LEGACY_MAX_SIZE - 1 - MAX_TCP_HEADER, MAX_TCP_HEADER ≈ 320 on x86-64)."""

MAX_QUANTUM_PACKETS = 0x7F
"""... nor 127 packets (``bbr_tso_segs_goal``)."""


class Mode(enum.Enum):
    """BBR's modes (tcp_bbr.c ``enum bbr_mode``)."""

    STARTUP = "startup"
    """Ramp up at 2/ln 2 per round to fill the pipe."""
    DRAIN = "drain"
    """Drain the queue STARTUP built."""
    PROBE_BW = "probe_bw"
    """Steady state: cycle the pacing gain around the estimate."""
    PROBE_RTT = "probe_rtt"
    """Cut inflight to 4 packets to re-measure min RTT."""


class _Event(enum.Enum):
    PIPE_FULL = "bandwidth stopped growing for 3 rounds"
    QUEUE_DRAINED = "inflight fell to one BDP"
    MIN_RTT_EXPIRED = "min RTT is 10 s old"
    PROBED_PIPE_FULL = "PROBE_RTT done, pipe was full"
    PROBED_PIPE_NOT_FULL = "PROBE_RTT done, pipe not yet full"


# Rule: every mode change goes through this table (``Bbr._transition``), after the
# diagram at the top of tcp_bbr.c.
_TRANSITIONS: dict[tuple[Mode, _Event], Mode] = {
    (Mode.STARTUP, _Event.PIPE_FULL): Mode.DRAIN,
    (Mode.DRAIN, _Event.QUEUE_DRAINED): Mode.PROBE_BW,
    (Mode.STARTUP, _Event.MIN_RTT_EXPIRED): Mode.PROBE_RTT,
    (Mode.DRAIN, _Event.MIN_RTT_EXPIRED): Mode.PROBE_RTT,
    (Mode.PROBE_BW, _Event.MIN_RTT_EXPIRED): Mode.PROBE_RTT,
    (Mode.PROBE_RTT, _Event.PROBED_PIPE_FULL): Mode.PROBE_BW,
    (Mode.PROBE_RTT, _Event.PROBED_PIPE_NOT_FULL): Mode.STARTUP,
}

# (pacing gain, cwnd gain) per mode (tcp_bbr.c ``bbr_update_gains``); None = the PROBE_BW cycle.
_GAINS: dict[Mode, tuple[float | None, float]] = {
    Mode.STARTUP: (HIGH_GAIN, HIGH_GAIN),
    Mode.DRAIN: (DRAIN_GAIN, HIGH_GAIN),
    Mode.PROBE_BW: (None, CWND_GAIN),
    Mode.PROBE_RTT: (1.0, 1.0),
}


# --------------------------------------------------------------------------------------------
# Delivery-rate estimation (net/ipv4/tcp_rate.c, draft-cheng-iccrg-delivery-rate-estimation)
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _SentSnapshot:
    """The connection's delivery state when one packet was sent (tcp_rate.c ``tcp_rate_skb_sent``).

    That state changes only on ACKs, idle restarts and app-limited marks, so every packet sent
    between two such events shares one snapshot; the packet's own send time comes with it."""

    delivered: int
    """Bytes delivered before this packet was sent (draft §3.1 ``P.delivered``)."""
    delivered_time: float
    """When ``delivered`` was last updated (``P.delivered_time``)."""
    first_sent_time: float
    """Send time of the first packet of the current flight (``P.first_sent_time``)."""
    is_app_limited: bool
    """The sender was in an app-limited period (``P.is_app_limited``)."""


@attrs.frozen(kw_only=True)
class RateSample:
    """What one ACK taught about the path (tcp_rate.c ``struct rate_sample``)."""

    delivered: int | None
    """Bytes delivered over ``interval``; None when the ACK gives no valid rate sample."""
    interval: float | None
    """max(send elapsed, ACK elapsed) of the sample (draft §3.3); None when invalid."""
    prior_delivered: int
    """Delivered bytes when the newest acknowledged packet was sent (starts BBR's rounds)."""
    is_app_limited: bool
    """The newest acknowledged packet was sent in an app-limited period."""
    acked_bytes: int
    """Bytes newly acknowledged by this ACK (``acked_sacked``)."""
    rtt: float | None
    """RTT of the newest acknowledged packet (tcp_bbr's ``rs->rtt_us``), if any."""

    @property
    def bandwidth(self) -> float | None:
        """The sampled delivery rate in bytes/s, or None."""
        if self.delivered is None or self.interval is None or self.interval <= 0:
            return None
        return self.delivered / self.interval


class DeliveryRateSampler:
    """Per-packet snapshots turned into delivery-rate samples, as ``tcp_rate.c``.

    Snapshots live in a dict keyed by packet number: filled by :meth:`on_packet_sent`,
    consumed by :meth:`on_packets_acked` and :meth:`on_packets_lost`.
    """

    def __init__(self) -> None:
        self.delivered = 0
        """Total bytes acknowledged (``tp->delivered``)."""
        self.delivered_time: float | None = None
        """When ``delivered`` last grew (``tp->delivered_mstamp``)."""
        self.first_sent_time: float | None = None
        """Send time of the newest acknowledged packet's flight start (``tp->first_tx_mstamp``)."""
        self.app_limited = 0
        """0, or the ``delivered`` value after which the app-limited bubble is gone (``tp->app_limited``)."""
        self.min_rtt = math.inf
        """Lowest RTT sample ever; shorter rate intervals are bogus (tcp_rate.c ``tcp_min_rtt``)."""
        self._sent: dict[int, _SentSnapshot] = {}
        self._current: _SentSnapshot | None = None  # the state now; None once it changed

    def __len__(self) -> int:
        return len(self._sent)

    def on_packet_sent(self, packet: SentPacketInfo, bytes_in_flight: int) -> None:
        """Snapshot the delivery state for ``packet``; ``bytes_in_flight`` includes it."""
        now = packet.time_sent
        if bytes_in_flight - packet.size <= 0 or self.delivered_time is None or self.first_sent_time is None:
            # Nothing in flight: this packet starts a new flight, and the idle time
            # must not count in the sample (tcp_rate.c: "in case we restart from idle").
            # (A controller made for a new path may see ACKs of the old path's packets
            # before its own first send: those set ``delivered_time`` alone.)
            self.first_sent_time = now
            self.delivered_time = now
            self._current = None
        snapshot = self._current
        if snapshot is None:
            assert self.first_sent_time is not None
            snapshot = self._current = _SentSnapshot(
                delivered=self.delivered,
                delivered_time=self.delivered_time,
                first_sent_time=self.first_sent_time,
                is_app_limited=self.app_limited != 0,
            )
        self._sent[packet.packet_number] = snapshot

    def on_packets_lost(self, lost: Sequence[SentPacketInfo]) -> None:
        """Forget lost packets: they deliver nothing (``tcp_rate_skb_delivered`` never sees them)."""
        for packet in lost:
            self._sent.pop(packet.packet_number, None)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """Mark an app-limited bubble until what is in flight now is delivered
        (``tcp_rate_check_app_limited``)."""
        self.app_limited = (self.delivered + bytes_in_flight) or 1
        self._current = None

    def on_packets_acked(self, acked: Sequence[SentPacketInfo], now: float) -> RateSample:
        """Account newly acknowledged packets and build the rate sample of this ACK."""
        newest: _SentSnapshot | None = None
        newest_number = -1
        newest_sent = 0.0
        acked_bytes = 0
        for packet in acked:
            acked_bytes += packet.size
            snapshot = self._sent.pop(packet.packet_number, None)
            # A packet declared lost then acknowledged counts as delivered, but its
            # snapshot is gone, so it cannot be the sample's reference.
            if snapshot is not None and packet.packet_number > newest_number:
                newest, newest_number, newest_sent = snapshot, packet.packet_number, packet.time_sent
        self._current = None
        rtt: float | None = None
        if newest is not None:
            # Whole microseconds, as tcp_bbr's min_rtt_us: equal RTTs then compare equal.
            rtt = round(now - newest_sent, 6)
            self.min_rtt = min(self.min_rtt, rtt)
            self.first_sent_time = newest_sent
        self.delivered += acked_bytes
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0  # the bubble is acknowledged and gone (tcp_rate_gen)
        if acked_bytes:
            self.delivered_time = now
        if newest is None:
            return RateSample(
                delivered=None,
                interval=None,
                prior_delivered=0,
                is_app_limited=False,
                acked_bytes=acked_bytes,
                rtt=None,
            )
        # draft §3.3: the sample's interval is the longer of the send and the ACK
        # phases, so neither ACK compression nor a send burst inflates the rate.
        send_elapsed = newest_sent - newest.first_sent_time
        ack_elapsed = now - newest.delivered_time
        interval: float | None = max(send_elapsed, ack_elapsed)
        delivered: int | None = self.delivered - newest.delivered
        if interval is not None and interval < self.min_rtt:
            delivered = interval = None  # shorter than any RTT: bogus (tcp_rate_gen)
        return RateSample(
            delivered=delivered,
            interval=interval,
            prior_delivered=newest.delivered,
            is_app_limited=newest.is_app_limited,
            acked_bytes=acked_bytes,
            rtt=rtt,
        )


class _WindowedMax:
    """Kathleen Nichols' windowed max over ``window`` ticks, three samples (lib/win_minmax.c)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._samples: list[tuple[int, float]] = [(0, 0.0)] * 3  # (time, value), best first

    def get(self) -> float:
        return self._samples[0][1]

    def reset(self, time: int, value: float) -> None:
        self._samples = [(time, value)] * 3

    def update(self, time: int, value: float) -> float:
        s = self._samples
        if value >= s[0][1] or time - s[2][0] > self._window:
            self.reset(time, value)
            return value
        if value >= s[1][1]:
            s[1] = s[2] = (time, value)
        elif value >= s[2][1]:
            s[2] = (time, value)
        # minmax_subwin_update: age out the best samples as the window slides.
        elapsed = time - s[0][0]
        if elapsed > self._window:
            s[0], s[1], s[2] = s[1], s[2], (time, value)
            if time - s[0][0] > self._window:
                s[0], s[1], s[2] = s[1], s[2], (time, value)
        elif s[1][0] == s[0][0] and elapsed > self._window / 4:
            s[1] = s[2] = (time, value)
        elif s[2][0] == s[1][0] and elapsed > self._window / 2:
            s[2] = (time, value)
        return s[0][1]


# --------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------

_OPEN, _RECOVERY, _LOSS = 0, 1, 2  # TCP_CA_Open, TCP_CA_Recovery, TCP_CA_Loss (ordered as in TCP)


class Bbr:
    """BBRv1 (tcp_bbr.c) behind the :class:`CongestionController` interface.

    ``rng`` picks the random PROBE_BW starting phase; tests pass a seeded one.
    """

    name = "bbr"

    def __init__(
        self, max_datagram_size: int, initial_window_packets: int, *, rng: random.Random | None = None
    ) -> None:
        self._mss = max_datagram_size
        self._initial_window = initial_window_packets * max_datagram_size
        self._rng = rng if rng is not None else random.Random()
        self._sampler = DeliveryRateSampler()
        self._cwnd = self._initial_window
        self._prior_cwnd = 0
        self._mode = Mode.STARTUP
        self._pacing_gain = HIGH_GAIN
        self._cwnd_gain = HIGH_GAIN
        self._bw = _WindowedMax(BW_FILTER_ROUNDS)
        self._round_count = 0
        self._next_round_delivered = 0
        self._round_start = False
        self._min_rtt = math.inf
        self._min_rtt_stamp: float | None = None  # set by the first event (bbr_init: now)
        self._probe_rtt_done_stamp: float | None = None
        self._probe_rtt_round_done = False
        self._idle_restart = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._full_bw_reached = False
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._has_seen_rtt = False
        # Nominal 1 ms RTT until a real sample: a fast first flight (bbr_init_pacing_rate_from_rtt).
        self._pacing_rate = HIGH_GAIN * self._initial_window / NOMINAL_RTT
        # Loss recovery, as TCP's CA states seen by tcp_bbr.
        self._ca_state = _OPEN
        self._prev_ca_state = _OPEN
        self._recovery_end = -1
        self._packet_conservation = False
        self._pending_losses = 0
        self._largest_sent = -1
        # ACK aggregation (bbr_update_ack_aggregation).
        self._ack_epoch_stamp: float | None = None
        self._ack_epoch_acked = 0
        self._extra_acked = [0, 0]
        self._extra_acked_window_rounds = 0
        self._extra_acked_index = 0

    # ---- read-only model, for statistics and tests ------------------------------------------

    def use_rng(self, rng: random.Random) -> None:
        """Draw random choices (the PROBE_BW starting phase) from ``rng``: a seeded one makes a
        whole connection replayable on a virtual clock."""
        self._rng = rng

    @property
    def congestion_window(self) -> int:
        return self._cwnd

    @property
    def pacing_rate(self) -> float:
        return self._pacing_rate

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def bandwidth(self) -> float:
        """The bottleneck bandwidth estimate (max filter), bytes/s; 0 before any sample."""
        return self._bw.get()

    @property
    def min_rtt(self) -> float:
        """The min-RTT estimate in seconds; inf before any sample."""
        return self._min_rtt

    @property
    def min_rtt_stamp(self) -> float | None:
        """When ``min_rtt`` was last refreshed."""
        return self._min_rtt_stamp

    @property
    def pacing_gain(self) -> float:
        return self._pacing_gain

    @property
    def cwnd_gain(self) -> float:
        return self._cwnd_gain

    @property
    def full_bandwidth_reached(self) -> bool:
        """STARTUP has estimated that the pipe is full."""
        return self._full_bw_reached

    @property
    def round_count(self) -> int:
        """Packet-timed round trips elapsed."""
        return self._round_count

    @property
    def is_app_limited(self) -> bool:
        """An app-limited bubble is in flight."""
        return self._sampler.app_limited != 0

    def state_name(self) -> str:
        return self._mode.value

    # ---- events from the connection -----------------------------------------------------------

    def on_packet_sent(self, packet: SentPacketInfo, bytes_in_flight: int, now: float) -> None:
        self._start_clock(now)
        if bytes_in_flight - packet.size <= 0 and self._sampler.app_limited:
            self._on_transmit_start_after_idle(now)
        self._largest_sent = max(self._largest_sent, packet.packet_number)
        self._sampler.on_packet_sent(packet, bytes_in_flight)

    def on_packets_acked(
        self, acked: Sequence[SentPacketInfo], rtt: RttView, bytes_in_flight: int, now: float
    ) -> None:
        # ``rtt`` is not needed: like tcp_bbr (rs->rtt_us) we time the newest acked packet.
        self._start_clock(now)
        prior_in_flight = bytes_in_flight + sum(p.size for p in acked)
        sample = self._sampler.on_packets_acked(acked, now)
        if self._ca_state != _OPEN and any(p.packet_number > self._recovery_end for p in acked):
            self._ca_state = _OPEN  # a packet sent after the loss is acked: recovery over
        losses, self._pending_losses = self._pending_losses, 0
        self._update_model(sample, losses, prior_in_flight, bytes_in_flight, now)
        bw = self._bw.get()
        self._set_pacing_rate(bw, self._pacing_gain, sample)
        self._set_cwnd(sample.acked_bytes, losses, bw, self._cwnd_gain, bytes_in_flight)
        self._prev_ca_state = self._ca_state

    def on_packets_lost(self, lost: Sequence[SentPacketInfo], bytes_in_flight: int, now: float) -> None:
        self._start_clock(now)
        self._sampler.on_packets_lost(lost)
        if not lost:
            return
        # tcp_bbr sees losses on the next ACK (rs->losses) and the CA state change.
        self._pending_losses += sum(p.size for p in lost)
        if self._ca_state == _OPEN:
            self._save_cwnd()  # bbr_ssthresh: entering recovery
            self._ca_state = _RECOVERY
            self._recovery_end = self._largest_sent

    def on_retransmission_timeout(self, now: float) -> None:
        self._start_clock(now)
        if self._ca_state != _LOSS:
            self._save_cwnd()  # bbr_ssthresh, called by tcp_enter_loss
        # bbr_set_state(TCP_CA_Loss): restart full-pipe detection, end the round.
        self._prev_ca_state = _LOSS
        self._ca_state = _LOSS
        self._recovery_end = self._largest_sent
        self._full_bw = 0.0
        self._round_start = True
        # tcp_enter_loss: cwnd = packets in flight (all now lost) + 1.
        self._cwnd = self._mss

    def on_app_limited(self, bytes_in_flight: int, now: float) -> None:
        self._start_clock(now)
        self._sampler.on_app_limited(bytes_in_flight)

    # ---- the model (bbr_update_model) -------------------------------------------------------

    def _start_clock(self, now: float) -> None:
        if self._min_rtt_stamp is None:
            self._min_rtt_stamp = now
            self._ack_epoch_stamp = now

    def _transition(self, event: _Event) -> None:
        try:
            self._mode = _TRANSITIONS[(self._mode, event)]
        except KeyError:
            raise RuntimeError(f"BBR has no transition from {self._mode.name} on {event.name}") from None

    def _update_model(
        self, sample: RateSample, losses: int, prior_in_flight: int, bytes_in_flight: int, now: float
    ) -> None:
        self._update_bw(sample)
        self._update_ack_aggregation(sample)
        self._update_cycle_phase(losses, prior_in_flight)
        self._check_full_bw_reached(sample)
        self._check_drain(bytes_in_flight)
        self._update_min_rtt(sample, bytes_in_flight, now)
        self._update_gains()

    def _update_bw(self, sample: RateSample) -> None:
        self._round_start = False
        bw = sample.bandwidth
        if bw is None or sample.delivered is None:
            return
        if sample.prior_delivered >= self._next_round_delivered:
            # Packet-timed round trip: the packet that opened this round is acked.
            self._next_round_delivered = self._sampler.delivered
            self._round_count += 1
            self._round_start = True
            self._packet_conservation = False
        # App-limited samples show the application's rate, not the path's: they may
        # raise the estimate but never lower it (bbr_update_bw).
        if not sample.is_app_limited or bw >= self._bw.get():
            self._bw.update(self._round_count, bw)

    def _update_ack_aggregation(self, sample: RateSample) -> None:
        if EXTRA_ACKED_GAIN <= 0 or sample.acked_bytes <= 0 or sample.bandwidth is None:
            return
        if self._round_start:
            self._extra_acked_window_rounds = min(0x1F, self._extra_acked_window_rounds + 1)
            if self._extra_acked_window_rounds >= EXTRA_ACKED_WINDOW_ROUNDS:
                self._extra_acked_window_rounds = 0
                self._extra_acked_index ^= 1
                self._extra_acked[self._extra_acked_index] = 0
        delivered_time = self._sampler.delivered_time
        assert delivered_time is not None and self._ack_epoch_stamp is not None
        expected = self._bw.get() * (delivered_time - self._ack_epoch_stamp)
        # Reset the epoch when ACKs come no faster than expected, or after very many.
        if (
            self._ack_epoch_acked <= expected
            or self._ack_epoch_acked + sample.acked_bytes >= ACK_EPOCH_RESET_PACKETS * self._mss
        ):
            self._ack_epoch_acked = 0
            self._ack_epoch_stamp = delivered_time
            expected = 0.0
        self._ack_epoch_acked += sample.acked_bytes
        extra = min(int(self._ack_epoch_acked - expected), self._cwnd)
        if extra > self._extra_acked[self._extra_acked_index]:
            self._extra_acked[self._extra_acked_index] = extra

    def _update_cycle_phase(self, losses: int, prior_in_flight: int) -> None:
        if self._mode is not Mode.PROBE_BW or not self._is_next_cycle_phase(losses, prior_in_flight):
            return
        self._advance_cycle_phase()

    def _is_next_cycle_phase(self, losses: int, prior_in_flight: int) -> bool:
        delivered_time = self._sampler.delivered_time or 0.0
        is_full_length = delivered_time - self._cycle_stamp > self._min_rtt
        if self._pacing_gain == 1.0:
            return is_full_length  # cruising: wall-clock phases of one min RTT
        inflight = self._in_net_at_edt(prior_in_flight)
        bw = self._bw.get()
        if self._pacing_gain > 1.0:
            # Probe until inflight reaches gain x BDP, unless that loses packets.
            return is_full_length and (losses > 0 or inflight >= self._inflight(bw, self._pacing_gain))
        # Draining: stop early once the queue is gone.
        return is_full_length or inflight <= self._inflight(bw, 1.0)

    def _advance_cycle_phase(self) -> None:
        self._cycle_index = (self._cycle_index + 1) % len(PACING_GAIN_CYCLE)
        self._cycle_stamp = self._sampler.delivered_time or 0.0

    def _reset_probe_bw_mode(self) -> None:
        # Random phase, never the 0.75 one (bbr_reset_probe_bw_mode).
        self._cycle_index = len(PACING_GAIN_CYCLE) - 1 - self._rng.randrange(CYCLE_RANDOM_PHASES)
        self._advance_cycle_phase()

    def _check_full_bw_reached(self, sample: RateSample) -> None:
        if self._full_bw_reached or not self._round_start or sample.is_app_limited:
            return
        if self._bw.get() >= self._full_bw * FULL_BW_THRESHOLD:
            self._full_bw = self._bw.get()
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        self._full_bw_reached = self._full_bw_count >= FULL_BW_ROUNDS

    def _check_drain(self, bytes_in_flight: int) -> None:
        if self._mode is Mode.STARTUP and self._full_bw_reached:
            self._transition(_Event.PIPE_FULL)
        if self._mode is Mode.DRAIN and self._in_net_at_edt(bytes_in_flight) <= self._inflight(
            self._bw.get(), 1.0
        ):
            self._transition(_Event.QUEUE_DRAINED)
            self._reset_probe_bw_mode()

    def _update_min_rtt(self, sample: RateSample, bytes_in_flight: int, now: float) -> None:
        assert self._min_rtt_stamp is not None
        expired = now > self._min_rtt_stamp + MIN_RTT_WINDOW
        if sample.rtt is not None and (sample.rtt < self._min_rtt or expired):
            self._min_rtt = sample.rtt
            self._min_rtt_stamp = now
        if expired and not self._idle_restart and self._mode is not Mode.PROBE_RTT:
            self._transition(_Event.MIN_RTT_EXPIRED)
            self._save_cwnd()
            self._probe_rtt_done_stamp = None
        if self._mode is Mode.PROBE_RTT:
            # Samples at 4 packets show the probe's rate, not the path's.
            self._sampler.on_app_limited(bytes_in_flight)
            if self._probe_rtt_done_stamp is None and bytes_in_flight <= CWND_MIN_TARGET_PACKETS * self._mss:
                # Hold the minimum for max(200 ms, one round).
                self._probe_rtt_done_stamp = now + PROBE_RTT_DURATION
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._sampler.delivered
            elif self._probe_rtt_done_stamp is not None:
                if self._round_start:
                    self._probe_rtt_round_done = True
                if self._probe_rtt_round_done:
                    self._check_probe_rtt_done(now)
        if sample.delivered is not None and sample.delivered > 0:
            self._idle_restart = False

    def _check_probe_rtt_done(self, now: float) -> None:
        if self._probe_rtt_done_stamp is None or now <= self._probe_rtt_done_stamp:
            return
        self._min_rtt_stamp = now  # wait another 10 s before the next PROBE_RTT
        self._cwnd = max(self._cwnd, self._prior_cwnd)
        if self._full_bw_reached:
            self._transition(_Event.PROBED_PIPE_FULL)
            self._reset_probe_bw_mode()
        else:
            self._transition(_Event.PROBED_PIPE_NOT_FULL)

    def _update_gains(self) -> None:
        pacing_gain, self._cwnd_gain = _GAINS[self._mode]
        self._pacing_gain = PACING_GAIN_CYCLE[self._cycle_index] if pacing_gain is None else pacing_gain

    def _on_transmit_start_after_idle(self, now: float) -> None:
        # bbr_cwnd_event(CA_EVENT_TX_START) while app-limited.
        self._idle_restart = True
        self._ack_epoch_stamp = now
        self._ack_epoch_acked = 0
        if self._mode is Mode.PROBE_BW:
            # Restarting from idle: pace at the estimate, no need to probe.
            self._set_pacing_rate(self._bw.get(), 1.0, None)
        elif self._mode is Mode.PROBE_RTT:
            self._check_probe_rtt_done(now)

    # ---- pacing rate and cwnd ----------------------------------------------------------------

    def _set_pacing_rate(self, bw: float, gain: float, sample: RateSample | None) -> None:
        if not self._has_seen_rtt and sample is not None and sample.rtt is not None:
            # First RTT sample: re-derive the initial rate from it (bbr_init_pacing_rate_from_rtt).
            self._has_seen_rtt = True
            rtt = max(sample.rtt, 1e-6)
            self._pacing_rate = HIGH_GAIN * self._cwnd / rtt * (1 - PACING_MARGIN)
        rate = bw * gain * (1 - PACING_MARGIN)
        # Until the pipe is full the rate only grows (bbr_set_pacing_rate).
        if self._full_bw_reached or rate > self._pacing_rate:
            self._pacing_rate = rate

    def _quantum_packets(self) -> int:
        """Packets per send burst at the current rate (tcp_bbr.c ``bbr_tso_segs_goal``)."""
        quantum = min(self._pacing_rate / (1 << PACING_SHIFT), MAX_QUANTUM_BYTES)
        minimum = 1 if self._pacing_rate < MIN_TSO_RATE else 2
        return min(max(int(quantum // self._mss), minimum), MAX_QUANTUM_PACKETS)

    def _bdp(self, bw: float, gain: float) -> int:
        """ceil(gain x bw x min_rtt) in whole packets (``bbr_bdp``)."""
        if math.isinf(self._min_rtt):
            return self._initial_window  # no RTT sample yet: TCP_INIT_CWND
        return math.ceil(bw * self._min_rtt * gain / self._mss) * self._mss

    def _quantization_budget(self, cwnd: int) -> int:
        """Room for send quanta at both ends (``bbr_quantization_budget``)."""
        packets = math.ceil(cwnd / self._mss) + 3 * self._quantum_packets()
        packets = (packets + 1) & ~1  # even, to suit ACK-every-other-packet receivers
        if self._mode is Mode.PROBE_BW and self._cycle_index == 0:
            packets += 2  # lets gain cycling rise above BDP even when the BDP is tiny
        return packets * self._mss

    def _inflight(self, bw: float, gain: float) -> int:
        return self._quantization_budget(self._bdp(bw, gain))

    def _in_net_at_edt(self, inflight: int) -> int:
        # The pacer's departure time is not visible here: EDT = now (bbr_packets_in_net_at_edt).
        if self._pacing_gain > 1.0:
            inflight += self._quantum_packets() * self._mss
        return inflight

    def _ack_aggregation_cwnd(self) -> int:
        if EXTRA_ACKED_GAIN <= 0 or not self._full_bw_reached:
            return 0
        cap = self._bw.get() * EXTRA_ACKED_MAX_TIME
        return int(min(EXTRA_ACKED_GAIN * max(self._extra_acked), cap))

    def _save_cwnd(self) -> None:
        """Remember the last good cwnd for after recovery or PROBE_RTT (``bbr_save_cwnd``)."""
        if self._prev_ca_state < _RECOVERY and self._mode is not Mode.PROBE_RTT:
            self._prior_cwnd = self._cwnd
        else:
            self._prior_cwnd = max(self._prior_cwnd, self._cwnd)

    def _recover_or_restore(self, acked: int, losses: int, bytes_in_flight: int) -> tuple[int, bool]:
        """Packet conservation in the first recovery round (``bbr_set_cwnd_to_recover_or_restore``)."""
        cwnd = self._cwnd
        if losses > 0:
            cwnd = max(cwnd - losses, self._mss)
        if self._ca_state == _RECOVERY and self._prev_ca_state != _RECOVERY:
            self._packet_conservation = True
            self._next_round_delivered = self._sampler.delivered  # start a round now
            cwnd = bytes_in_flight + acked  # cut what the application left unused
        elif self._prev_ca_state >= _RECOVERY and self._ca_state < _RECOVERY:
            cwnd = max(cwnd, self._prior_cwnd)  # recovery over: restore
            self._packet_conservation = False
        if self._packet_conservation:
            return max(cwnd, bytes_in_flight + acked), True
        return cwnd, False

    def _set_cwnd(self, acked: int, losses: int, bw: float, gain: float, bytes_in_flight: int) -> None:
        cwnd = self._cwnd
        if acked:
            cwnd, conserving = self._recover_or_restore(acked, losses, bytes_in_flight)
            if not conserving:
                target = self._bdp(bw, gain) + self._ack_aggregation_cwnd()
                target = self._quantization_budget(target)
                if self._full_bw_reached:
                    cwnd = min(cwnd + acked, target)  # only cut once the pipe was filled
                elif cwnd < target or self._sampler.delivered < self._initial_window:
                    cwnd += acked  # slow-start toward the target
                cwnd = max(cwnd, CWND_MIN_TARGET_PACKETS * self._mss)
        if self._mode is Mode.PROBE_RTT:
            cwnd = min(cwnd, CWND_MIN_TARGET_PACKETS * self._mss)  # drain the queue, refresh min RTT
        # tcp_bbr counts packets, so packet conservation (cwnd = in flight + acked) keeps a sparse
        # sender of small packets at 2+ packets. Counted in bytes it would fall below one full-size
        # packet (a 200 B edit in flight, one acked) and block the next edit for a round trip or,
        # with nothing in flight, for good. So the window never goes below bbr_cwnd_min_target
        # full-size packets here (PROBE_RTT's cap is the same 4 packets).
        self._cwnd = max(cwnd, CWND_MIN_TARGET_PACKETS * self._mss)


def _factory(max_datagram_size: int, initial_window_packets: int) -> CongestionController:
    return Bbr(max_datagram_size, initial_window_packets)


register("bbr", _factory)
