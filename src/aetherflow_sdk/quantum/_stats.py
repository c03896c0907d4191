"""Frozen statistics records of a connection and an endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from aetherflow_sdk.quantum._connection import QuantumConnection


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """A snapshot of one connection. Times in seconds, sizes in bytes, rates in bytes/s."""

    state: str
    """Connection state name (see _states.ConnectionState)."""
    smoothed_rtt: float
    """SRTT (RFC 6298)."""
    rtt_variance: float
    """RTTVAR (RFC 6298)."""
    min_rtt: float
    """Smallest RTT sample."""
    latest_rtt: float
    """Most recent RTT sample."""
    rto: float
    """Current retransmission timeout, including backoff."""
    congestion_control: str
    """Congestion controller name ("newreno", "bbr")."""
    congestion_state: str
    """Controller state (slow_start, congestion_avoidance, recovery; STARTUP ... for BBR)."""
    congestion_window: int
    """Bytes allowed in flight."""
    pacing_rate: float
    """Pacer release rate."""
    bytes_in_flight: int
    """Bytes sent, not yet acknowledged or declared lost."""
    packets_sent: int
    """DATA packets sent."""
    packets_received: int
    """DATA packets received and authenticated."""
    datagrams_sent: int
    """UDP datagrams sent (handshake and DATA)."""
    datagrams_received: int
    """UDP datagrams received for this connection (including bad ones)."""
    bytes_sent: int
    """Bytes on the wire sent (UDP payloads)."""
    bytes_received: int
    """Bytes on the wire received (UDP payloads)."""
    app_bytes_sent: int
    """Message bytes the application queued."""
    app_bytes_received: int
    """Message bytes delivered to the application."""
    messages_sent: int
    """Reliable messages queued by the application."""
    messages_received: int
    """Reliable messages delivered to the application."""
    packets_lost: int
    """Packets declared lost."""
    packets_retransmitted: int
    """Lost packets whose content was queued for retransmission (in new packets)."""
    spurious_retransmissions: int
    """Packets declared lost and acknowledged afterwards."""
    rto_count: int
    """Retransmission timeouts that fired."""
    tail_loss_probes: int
    """Tail-loss probe packets sent (RFC 8985 §7): ACKs had stopped, nothing was declared lost."""
    fec_enabled: bool
    """This side protects the packets it sends with FEC parity now (negotiated, and on or adaptive)."""
    fec_groups_sent: int
    """FEC groups closed by this side (full, or partial when the group timer expired)."""
    parity_packets_sent: int
    """FEC PARITY packets sent (not in ``packets_sent``; their bytes are in ``bytes_sent``)."""
    parity_bytes_sent: int
    """Bytes on the wire of those PARITY packets."""
    parity_packets_received: int
    """Authenticated FEC PARITY packets received (not in ``packets_received``)."""
    fec_recovered_packets: int
    """The peer's packets this side rebuilt from parity (received, acknowledged, never retransmitted)."""
    fec_peer_recovered_packets: int
    """Our packets the peer reports it rebuilt (its FEC_REPORT frames)."""
    bad_packets: int
    """Datagrams dropped as malformed or failing authentication."""
    replayed_packets: int
    """Datagrams dropped because their packet number was already received (replay or duplicate)."""
    dropped_packets: int
    """Datagrams dropped as unexpected in the current state."""
    duplicate_packets: int
    """Handshake retransmissions received."""
    unreliable_datagrams_sent: int
    """Unreliable datagrams sent."""
    unreliable_datagrams_received: int
    """Unreliable datagrams received."""
    unreliable_datagrams_dropped: int
    """Unreliable datagrams dropped because a queue was full."""
    path_migrations: int
    """Times the peer's address changed (NAT rebinding or migration)."""
    path_address: tuple[str, int] = ("", 0)
    """Where packets go now: the peer's address, or the relay's for a relayed path."""
    path_direct: bool = True
    """The active path sends Quantum packets as they are (False: framed, e.g. through a relay)."""
    path_validated: bool = True
    """The active path answered a PATH_CHALLENGE (or needed none)."""
    max_packet_size: int = 0
    """The largest Quantum packet on the active path: ours and the peer's ``max_datagram_size``,
    the path's own limit, less its framing."""
    channels_open: int = 0
    """Channels open now besides channel 0 (both directions; see QuantumConfig.max_channels)."""
    channels_opened: int = 0
    """Channels this side opened."""
    channels_refused: int = 0
    """Channel opens refused: ours by the peer, plus the peer's by us."""
    channel_frames_dropped: int = 0
    """Frames for a channel already closed (late stragglers), dropped."""


@attrs.frozen(kw_only=True)
class EndpointStatistics:
    """A snapshot of an endpoint (its socket and all its connections)."""

    datagrams_received: int
    """UDP datagrams read from the socket."""
    datagrams_sent: int
    """UDP datagrams written to the socket."""
    bytes_received: int
    """Bytes read from the socket."""
    bytes_sent: int
    """Bytes written to the socket."""
    bad_packets: int
    """Datagrams dropped before reaching a connection: not a Quantum header, malformed INITIAL."""
    unknown_connection: int
    """Datagrams dropped because no connection has their destination ID."""
    retries_sent: int
    """Stateless RETRY answers (address validation) sent."""
    invalid_cookies: int
    """INITIALs with a cookie that was forged, expired or for another address."""
    connections_accepted: int
    """Server-side connections created after a valid cookie."""
    connections_refused: int
    """INITIALs refused because the endpoint was at its connection limit or not accepting."""
    active_connections: int
    """Connections currently open."""
    internal_errors: int = 0
    """Exceptions inside one connection's processing; each closed that connection (with a reason)."""
    raw_datagrams_received: int = 0
    """Datagrams that are not Quantum (first byte 0x40 or above) handed to the raw handler."""
    raw_datagrams_sent: int = 0
    """Datagrams sent with ``send_raw``."""
    raw_datagrams_dropped: int = 0
    """Raw datagrams received with no raw handler set, or whose handler raised."""
    raw_datagrams_refused: int = 0
    """``send_raw`` calls refused by the anti-amplification limit of an unvalidated address."""
    framed_datagrams_received: int = 0
    """Datagrams that a framed path (e.g. a relay's) unwrapped into a Quantum packet."""
    framed_datagrams_dropped: int = 0
    """Datagrams a framed path took that led nowhere: a malformed packet inside, no such
    connection and not an INITIAL, or a path (from ``accept_paths``) that would not unwrap them."""
    peer_id_mismatches: int = 0
    """Connections refused after their handshake through a path that leads to another node
    than the one the client proved to be (``Path.peer_id``)."""


@attrs.define(slots=True)
class ConnectionCounters:
    """A connection's mutable counters (``statistics()`` snapshots them)."""

    packets_sent: int = 0
    packets_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    app_bytes_sent: int = 0
    app_bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    packets_retransmitted: int = 0
    tail_loss_probes: int = 0
    parity_received: int = 0
    bad_packets: int = 0
    replayed_packets: int = 0
    dropped_packets: int = 0
    duplicate_packets: int = 0
    unreliable_sent: int = 0
    unreliable_received: int = 0
    unreliable_dropped: int = 0
    path_migrations: int = 0


def connection_statistics(connection: QuantumConnection) -> ConnectionStatistics:
    """The snapshot behind ``QuantumConnection.statistics()`` (kept here, next to the record)."""
    s = connection._stats
    return ConnectionStatistics(
        state=connection.state.value,
        smoothed_rtt=connection.rtt.smoothed_rtt,
        rtt_variance=connection.rtt.rttvar,
        min_rtt=connection.rtt.min_rtt,
        latest_rtt=connection.rtt.latest_rtt,
        rto=connection.rtt.rto,
        congestion_control=connection.congestion.name,
        congestion_state=connection.congestion.state_name(),
        congestion_window=connection.congestion.congestion_window,
        pacing_rate=connection.congestion.pacing_rate,
        bytes_in_flight=connection.recovery.bytes_in_flight,
        packets_sent=s.packets_sent,
        packets_received=s.packets_received,
        datagrams_sent=s.datagrams_sent,
        datagrams_received=s.datagrams_received,
        bytes_sent=s.bytes_sent,
        bytes_received=s.bytes_received,
        app_bytes_sent=s.app_bytes_sent,
        app_bytes_received=s.app_bytes_received,
        messages_sent=s.messages_sent,
        messages_received=s.messages_received,
        packets_lost=connection.recovery.packets_lost,
        packets_retransmitted=s.packets_retransmitted,
        spurious_retransmissions=connection.recovery.spurious_retransmissions,
        rto_count=connection.recovery.rto_count,
        tail_loss_probes=s.tail_loss_probes,
        fec_enabled=connection._fec.sending,
        fec_groups_sent=connection._fec.encoder.statistics().groups,
        parity_packets_sent=connection._fec.parity_packets_sent,
        parity_bytes_sent=connection._fec.parity_bytes_sent,
        parity_packets_received=s.parity_received,
        fec_recovered_packets=connection._fec.recovered,
        fec_peer_recovered_packets=connection._fec.peer_recovered,
        bad_packets=s.bad_packets,
        replayed_packets=s.replayed_packets,
        dropped_packets=s.dropped_packets,
        duplicate_packets=s.duplicate_packets,
        unreliable_datagrams_sent=s.unreliable_sent,
        unreliable_datagrams_received=s.unreliable_received,
        unreliable_datagrams_dropped=s.unreliable_dropped,
        path_migrations=s.path_migrations,
        path_address=connection._path.address,
        path_direct=connection._path.direct,
        path_validated=connection._path.validated,
        max_packet_size=connection._path.packet_size,
        **connection.channels.statistics_fields(),
    )
