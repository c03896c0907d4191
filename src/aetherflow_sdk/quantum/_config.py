"""Every knob of a Quantum connection, in one frozen record."""

from __future__ import annotations

from typing import Any

import attrs

from aetherflow_sdk._errors import LocalProtocolError


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise LocalProtocolError(f"QuantumConfig.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class QuantumConfig:
    """Configuration shared by an endpoint and all of its connections.

    Times are in seconds, sizes in bytes. Every default is explained in
    docs/protocol.md ("Defaults and why").
    """

    max_datagram_size: int = attrs.field(default=1400, validator=_positive)
    """Largest UDP payload we send. 1400 fits a 1500-byte Ethernet MTU with room for
    IPv6 and tunnel headers; loopback benchmarks may raise it."""

    max_message_size: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    """Largest message ``send()`` accepts; larger raises MessageTooLarge."""

    receive_window: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    """Bytes of message data the peer may make us hold that the application has not
    yet received. Must be >= max_message_size, or a maximal message could never fit."""

    send_buffer: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    """Unacknowledged plus unsent bytes beyond which ``send()`` waits (backpressure).
    A single message larger than this is still accepted when the buffer is empty."""

    initial_rtt: float = attrs.field(default=0.1, validator=_positive)
    """RTT assumed before the first sample (RFC 9002 §6.2.2 uses 333 ms; a LAN or
    loopback peer answers far sooner, and the first sample replaces it)."""

    min_rto: float = attrs.field(default=0.2, validator=_positive)
    """Floor of the retransmission timeout. RFC 6298 §2.4 says 1 s, a 1988-era
    safety margin for coarse clocks. With a microsecond clock and explicit
    ack-delay reporting, 200 ms (Linux TCP's TCP_RTO_MIN) is safe and keeps a tail
    loss from stalling an edit for a whole second."""

    max_rto: float = attrs.field(default=60.0, validator=_positive)
    """Ceiling of the backed-off retransmission timeout (RFC 6298 §2.5)."""

    max_ack_delay: float = attrs.field(default=0.025, validator=_positive)
    """Longest we hold back an ACK (RFC 9000 §13.2.1 default: 25 ms)."""

    ack_eliciting_threshold: int = attrs.field(default=2, validator=_positive)
    """ACK immediately after this many ack-eliciting packets (RFC 9000 §13.2.2)."""

    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Give up on a handshake that has not completed after this long."""

    idle_timeout: float = attrs.field(default=30.0, validator=_positive)
    """Close a connection that has heard nothing from its peer for this long."""

    keepalive_interval: float = attrs.field(default=10.0, validator=_positive)
    """Send a PING after this long without sending anything (keeps NAT bindings open)."""

    tail_loss_probes: int = attrs.field(default=2)
    """Probes sent when ACKs stop before the RTO may fire (RACK-TLP, RFC 8985 §7; RFC 9002
    §6.2). A probe goes out after ``srtt + max(4 rttvar, 1 ms) + max_ack_delay`` (doubled per
    unanswered probe) and lets loss detection find a lost tail from its ACK, without
    collapsing the window. 0 keeps the plain RFC 6298 RTO."""

    adaptive_reordering: bool = attrs.field(default=True)
    """After a spurious retransmission (a packet declared lost, then acknowledged: it was
    only reordered), widen loss detection's packet and time thresholds so that the same
    reordering is not taken for loss again (RFC 8985 §6.2 in spirit; Chromium QUIC's
    adaptive thresholds). False keeps RFC 9002's fixed 3 packets and 9/8 RTT."""

    fec: str = attrs.field(default="auto")
    """Forward error correction (Reed–Solomon over groups of 10 packets, docs/bbr-fec.md):
    "auto" sends parity in a direction while the loss measured on it exceeds 0.5 % (off
    again below 0.1 % for 5 s), sized to that loss (10+1, 10+2 or 10+3); "on" always, the
    full 10+3; "off" never, and this side does not offer to decode either.
    Parity is sent only to a peer that announced it can decode."""

    fec_group_timeout_fraction: float = attrs.field(default=0.125, validator=_positive)
    """A partial FEC group closes (and its parity leaves) this fraction of the smoothed
    RTT after its first packet, so a lone edit is protected too. The timer is the repair
    latency of a lost edit; an edit stream at 50/s fills one packet per group whatever the
    fraction, so srtt/8 costs it nothing over the first design's srtt/4 and repairs 5 ms sooner on a
    40 ms path (virtual p99 at 2-10 % loss: 30 -> 25 ms; 2 % bulk unchanged, docs/bbr-fec.md)."""

    congestion_control: str = attrs.field(default="bbr")
    """Name of the congestion controller: "bbr" (BBRv1, docs/bbr-fec.md; the default, because
    random loss does not collapse its rate) or "newreno" (RFC 9002 §7)."""

    initial_window_packets: int = attrs.field(default=10, validator=_positive)
    """Initial congestion window in packets (RFC 9002 §7.2)."""

    max_channels: int = attrs.field(default=64, validator=_positive)
    """Channels (besides the connection's own channel 0) open at once on one connection,
    both directions together; a CHANNEL_OPEN past it is refused. Each channel has its own
    receive window, so a peer can make us hold up to ``(1 + max_channels) x receive_window``
    bytes per connection: lower either to bound memory tighter."""

    @tail_loss_probes.validator
    def _check_probes(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 0:
            raise LocalProtocolError(f"QuantumConfig.tail_loss_probes must be >= 0, got {value!r}")

    @fec.validator
    def _check_fec(self, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in ("auto", "on", "off"):
            raise LocalProtocolError(f'QuantumConfig.fec must be "auto", "on" or "off", got {value!r}')

    @congestion_control.validator
    def _check_cc(self, attribute: attrs.Attribute[str], value: str) -> None:
        from aetherflow_sdk.quantum._congestion import CONGESTION_CONTROLLERS

        if value not in CONGESTION_CONTROLLERS:
            raise LocalProtocolError(
                f"QuantumConfig.congestion_control={value!r} is unknown; "
                f"choose one of {sorted(CONGESTION_CONTROLLERS)}"
            )

    def __attrs_post_init__(self) -> None:
        if self.receive_window < self.max_message_size:
            raise LocalProtocolError(
                f"QuantumConfig.receive_window ({self.receive_window}) must be >= "
                f"max_message_size ({self.max_message_size}), or a maximal message could never arrive"
            )
        if self.max_datagram_size < 1200:
            raise LocalProtocolError(
                f"QuantumConfig.max_datagram_size must be >= 1200 (the handshake pads to 1200), "
                f"got {self.max_datagram_size}"
            )
