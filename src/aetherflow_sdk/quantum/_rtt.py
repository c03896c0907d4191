"""Round-trip time estimation and the retransmission timeout (RFC 6298, with RFC 9002 §5).

Sans-I/O: the caller measures ``now - time_sent`` and hands in the sample.

Karn's rule (RFC 6298 §3, Karn & Partridge 1987) says never to take an RTT
sample from a retransmitted segment, because the ACK could be for either
transmission. Quantum never reuses a packet number: retransmitted data rides in
a *new* packet, and an ACK names the exact packet it acknowledges. So every
sample comes from the exact packet acked and is unambiguous; the rule reduces
to its second half (RFC 6298 §5.7): once the timer has backed off, keep the
backed-off RTO until a valid sample arrives, and only then recompute it.
"""

from __future__ import annotations

from aetherflow_sdk._errors import LocalProtocolError

ALPHA = 1 / 8  # RFC 6298 §2.3: SRTT gain
BETA = 1 / 4  # RFC 6298 §2.3: RTTVAR gain
K = 4  # RFC 6298 §2.2: RTO = SRTT + max(G, K*RTTVAR)
MAX_BACKOFF = 32  # 2**32 times any RTO is far past any sane max_rto; keeps the float exact


class RttEstimator:
    """SRTT/RTTVAR/RTO state of one path (RFC 6298), readable as a congestion ``RttView``."""

    __slots__ = (
        "_backoff",
        "_granularity",
        "_has_sample",
        "_latest_rtt",
        "_max_ack_delay",
        "_max_rto",
        "_min_rto",
        "_min_rtt",
        "_rto",
        "_rttvar",
        "_smoothed_rtt",
    )

    def __init__(
        self,
        *,
        initial_rtt: float,
        min_rto: float,
        max_rto: float,
        granularity: float = 0.001,
        max_ack_delay: float | None = None,
    ) -> None:
        if not (initial_rtt > 0 and 0 < min_rto <= max_rto and granularity > 0):
            raise LocalProtocolError(
                f"RttEstimator needs initial_rtt > 0, 0 < min_rto <= max_rto and granularity > 0; "
                f"got initial_rtt={initial_rtt!r}, min_rto={min_rto!r}, max_rto={max_rto!r}, "
                f"granularity={granularity!r}"
            )
        self._min_rto = min_rto
        self._max_rto = max_rto
        # The peer's promised ACK delay bound; a reported delay is capped by it (RFC 9002 §5.3),
        # so a peer cannot shrink our RTT estimate by claiming long delays. None: no cap.
        self._max_ack_delay = max_ack_delay
        self._granularity = granularity
        self._latest_rtt = initial_rtt
        self._smoothed_rtt = initial_rtt
        # RFC 6298 §2.2 initialises RTTVAR to R/2 on the first sample; before it we
        # use the same shape around the configured initial RTT (RFC 9002 §5.3).
        self._rttvar = initial_rtt / 2
        self._min_rtt = initial_rtt
        self._has_sample = False
        self._backoff = 0
        self._rto = self._compute_rto()  # cached: the connection reads it on every timer query

    @property
    def max_ack_delay(self) -> float | None:
        """Cap on the peer's reported ACK delay (None: uncapped)."""
        return self._max_ack_delay

    @max_ack_delay.setter
    def max_ack_delay(self, value: float | None) -> None:
        # Known only once the handshake delivers the peer's transport parameters.
        self._max_ack_delay = value

    @property
    def latest_rtt(self) -> float:
        """The most recent sample (``initial_rtt`` before any)."""
        return self._latest_rtt

    @property
    def smoothed_rtt(self) -> float:
        """SRTT (``initial_rtt`` before any sample)."""
        return self._smoothed_rtt

    @property
    def rttvar(self) -> float:
        """RTTVAR (``initial_rtt / 2`` before any sample)."""
        return self._rttvar

    @property
    def min_rtt(self) -> float:
        """Smallest sample seen, without ack-delay adjustment (RFC 9002 §5.2)."""
        return self._min_rtt

    @property
    def has_sample(self) -> bool:
        """True once a valid sample has been taken."""
        return self._has_sample

    @property
    def backoff(self) -> int:
        """Consecutive RTO expirations since the last valid sample."""
        return self._backoff

    def on_sample(self, rtt: float, ack_delay: float = 0.0) -> None:
        """Fold in one RTT sample taken from the exact packet acknowledged.

        ``ack_delay`` is the time the peer says it held the ACK back; it is
        subtracted when that does not take the sample below ``min_rtt``
        (RFC 9002 §5.3). Non-positive samples (clock trouble) are ignored.
        """
        if not rtt > 0:
            return
        self._latest_rtt = rtt
        # A valid sample after a timeout ends the backoff (RFC 6298 §5.7).
        self._backoff = 0
        if not self._has_sample:
            self._has_sample = True
            self._min_rtt = rtt
            # RFC 6298 §2.2: first measurement R -> SRTT = R, RTTVAR = R/2.
            self._smoothed_rtt = rtt
            self._rttvar = rtt / 2
            self._rto = self._compute_rto()
            return
        if rtt < self._min_rtt:
            self._min_rtt = rtt
        adjusted = rtt
        if self._max_ack_delay is not None and ack_delay > self._max_ack_delay:
            ack_delay = self._max_ack_delay
        if ack_delay > 0 and rtt - ack_delay >= self._min_rtt:
            adjusted = rtt - ack_delay
        # RFC 6298 §2.3: RTTVAR first (it uses the old SRTT), then SRTT.
        self._rttvar = (1 - BETA) * self._rttvar + BETA * abs(self._smoothed_rtt - adjusted)
        self._smoothed_rtt = (1 - ALPHA) * self._smoothed_rtt + ALPHA * adjusted
        self._rto = self._compute_rto()

    def _base_rto(self) -> float:
        # RFC 6298 §2.2-§2.5: SRTT + max(G, K*RTTVAR), floored and capped.
        rto = self._smoothed_rtt + max(self._granularity, K * self._rttvar)
        return min(max(rto, self._min_rto), self._max_rto)

    def _compute_rto(self) -> float:
        return min(self._base_rto() * (1 << self._backoff), self._max_rto)

    @property
    def rto(self) -> float:
        """The retransmission timeout, backed off by ``2**backoff`` (RFC 6298 §5.5), <= max_rto."""
        return self._rto

    def on_timeout(self) -> None:
        """The RTO expired: double the timer (RFC 6298 §5.5), stopping once it reaches max_rto."""
        if self._backoff < MAX_BACKOFF and self._base_rto() * (1 << self._backoff) < self._max_rto:
            self._backoff += 1
            self._rto = self._compute_rto()
