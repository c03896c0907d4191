"""A token-bucket pacer (sans-I/O).

Sending a whole congestion window at once overflows shallow router queues;
RFC 9002 §7.7 asks senders to pace. Tokens (bytes) refill at the rate the
congestion controller chooses and are capped at ``burst_packets`` datagrams, so
after an idle spell at most a small burst leaves at once (Linux fq allows 10
packets initially, as does RFC 9002 §7.7's example of an initial burst).

A send may overdraw the bucket (tokens go negative); the debt delays the next
packet, so the long-run rate is exact even when the caller sends slightly early.
"""

from __future__ import annotations

from aetherflow_sdk._errors import LocalProtocolError

# An event loop wakes a timer ~1 ms late at best, so the bucket always holds at
# least this much sending time; otherwise a 10-packet bucket would cap a paced
# sender near 10 packets per millisecond (~110 Mbit/s) whatever the rate.
MIN_BURST_SECONDS = 0.001

# Waits shorter than this are treated as "now": float rounding of now + wait can
# leave a few ulps of deficit, and the overdraw above makes up for it on average.
_TOLERANCE = 1e-6


class Pacer:
    """Releases ``rate`` bytes per second, with bursts of up to ``burst_packets`` datagrams."""

    __slots__ = ("_base_capacity", "_capacity", "_last", "_rate", "_tokens")

    def __init__(self, *, max_datagram_size: int, burst_packets: int = 10) -> None:
        if max_datagram_size <= 0 or burst_packets <= 0:
            raise LocalProtocolError(
                f"Pacer needs max_datagram_size > 0 and burst_packets > 0, "
                f"got {max_datagram_size!r}, {burst_packets!r}"
            )
        self._base_capacity = float(max_datagram_size * burst_packets)
        self._capacity = self._base_capacity
        self._tokens = self._capacity
        self._rate = float("inf")  # unpaced until the first set_rate()
        self._last: float | None = None

    @property
    def rate(self) -> float:
        """Bytes per second (infinite until ``set_rate`` is called)."""
        return self._rate

    @property
    def capacity(self) -> float:
        """Bucket size in bytes: burst_packets datagrams, or 1 ms at the rate if larger."""
        return self._capacity

    @property
    def tokens(self) -> float:
        """Bytes that may leave now, as of the last update (may be negative: a debt)."""
        return self._tokens

    def set_rate(self, bytes_per_second: float) -> None:
        """Change the rate (the congestion controller's ``pacing_rate``)."""
        if bytes_per_second == self._rate:
            return  # the usual case: set before every packet, the rate changes per ACK at most
        if not bytes_per_second > 0:
            raise LocalProtocolError(f"Pacer rate must be > 0 bytes/s, got {bytes_per_second!r}")
        self._rate = bytes_per_second
        self._capacity = max(self._base_capacity, bytes_per_second * MIN_BURST_SECONDS)

    def _refill(self, now: float) -> None:
        last = self._last
        if last is not None and now > last:
            tokens = self._tokens + (now - last) * self._rate
            self._tokens = tokens if tokens < self._capacity else self._capacity
        if last is None or now > last:
            self._last = now

    def next_send_time(self, size: int, now: float) -> float | None:
        """None if a ``size``-byte packet may leave now, else when it may."""
        self._refill(now)
        deficit = size - self._tokens
        if deficit <= 0:
            return None
        wait = deficit / self._rate
        if wait <= _TOLERANCE:
            return None
        return now + wait

    def on_packet_sent(self, size: int, now: float) -> None:
        """Spend ``size`` bytes of tokens."""
        self._refill(now)
        self._tokens -= size
