"""The congestion-controller interface and the registry of implementations.

A congestion controller is a sans-I/O object: the connection tells it what was
sent, acknowledged and lost (with ``now``), and reads back a congestion window
and a pacing rate. Implementations live in their own modules
(``_newreno.py``, ``_bbr.py``) and register here by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs


@attrs.frozen(kw_only=True, slots=True)
class PacketInfo:
    """What a congestion controller learns about one sent packet."""

    packet_number: int
    """Unique, increasing packet number."""
    size: int
    """Bytes on the wire (header + payload + AEAD tag); counts in bytes in flight."""
    time_sent: float
    """``now`` when the packet was handed to the socket."""


class SentPacketInfo(Protocol):
    """What a controller reads of a sent packet: :class:`PacketInfo`, or loss recovery's own
    ``SentPacket`` record (passed as is, so that no object is built per packet)."""

    @property
    def packet_number(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def time_sent(self) -> float: ...


class RttView(Protocol):
    """The read-only RTT state a controller may consult (see ``_rtt.RttEstimator``)."""

    @property
    def latest_rtt(self) -> float: ...
    @property
    def smoothed_rtt(self) -> float: ...
    @property
    def min_rtt(self) -> float: ...


class CongestionController(Protocol):
    """What the connection requires of a congestion controller."""

    name: str

    @property
    def congestion_window(self) -> int:
        """Bytes that may be in flight."""

    @property
    def pacing_rate(self) -> float:
        """Bytes per second the pacer releases packets at."""

    def on_packet_sent(self, packet: SentPacketInfo, bytes_in_flight: int, now: float) -> None:
        """A packet counted in flight was sent; ``bytes_in_flight`` includes it."""

    def on_packets_acked(
        self, acked: Sequence[SentPacketInfo], rtt: RttView, bytes_in_flight: int, now: float
    ) -> None:
        """Packets were newly acknowledged; ``bytes_in_flight`` already excludes them."""

    def on_packets_lost(self, lost: Sequence[SentPacketInfo], bytes_in_flight: int, now: float) -> None:
        """Packets were declared lost; ``bytes_in_flight`` already excludes them."""

    def on_retransmission_timeout(self, now: float) -> None:
        """The RTO fired with nothing acknowledged (RFC 6298 §5.5: collapse the window)."""

    def on_app_limited(self, bytes_in_flight: int, now: float) -> None:
        """The sender had room in the window but nothing to send."""

    def state_name(self) -> str:
        """A short name of the controller's current state, for statistics."""


CongestionFactory = Callable[[int, int], CongestionController]
"""``factory(max_datagram_size, initial_window_packets)`` builds a controller."""

CONGESTION_CONTROLLERS: dict[str, CongestionFactory] = {}
"""Name -> factory. Each implementation module registers itself on import."""


def register(name: str, factory: CongestionFactory) -> None:
    """Register a congestion controller under ``name`` (used by QuantumConfig)."""
    CONGESTION_CONTROLLERS[name] = factory


def create(name: str, max_datagram_size: int, initial_window_packets: int) -> CongestionController:
    """Build the controller named ``name``."""
    return CONGESTION_CONTROLLERS[name](max_datagram_size, initial_window_packets)
