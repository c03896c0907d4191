"""The node's frozen statistics records: what metrics, health and status bars read.

``Node.statistics()`` returns one :class:`NodeStatistics` snapshot. The Prometheus
collector (``_metrics.py``) reads only this record, at scrape time, so nothing
outside the node reaches into its objects. Counters only grow for the node's
lifetime; gauges (``*_now``-like values such as RTT, peers, pending updates) are
current values. Times are in seconds, sizes in bytes.
"""

from __future__ import annotations

import attrs

PATHS = ("lan", "direct", "relayed")
"""How a peer is reached: found on the LAN by mDNS, dialled directly, or through a relay."""


@attrs.frozen(kw_only=True)
class PeerStatistics:
    """One connected peer (one Quantum connection)."""

    node_id: str
    """The peer's node ID (text form)."""
    name: str
    """The name the peer gave itself (may be empty)."""
    path: str
    """``lan``, ``direct`` or ``relayed`` (see :data:`PATHS`)."""
    smoothed_rtt: float
    """SRTT of the connection (RFC 6298), seconds; 0 before the first sample."""
    loss: float
    """Fraction of DATA packets declared lost so far (packets_lost / packets_sent), 0..1."""
    bytes_sent: int
    """Bytes on the wire sent to this peer (UDP payloads)."""
    bytes_received: int
    """Bytes on the wire received from this peer."""
    packets_sent: int
    """DATA packets sent to this peer."""
    packets_lost: int
    """Packets to this peer declared lost."""
    packets_retransmitted: int
    """Lost packets whose content went again."""
    fec_recovered_packets: int
    """The peer's packets this node rebuilt from FEC parity."""
    documents: int
    """Documents synced with this peer now (channels open on the connection)."""


@attrs.frozen(kw_only=True)
class DocumentStatistics:
    """One open document."""

    name: str
    """The document's label (not its identity)."""
    peers: int
    """Peers this document is synced with now."""
    pending_updates: int
    """Local updates not yet acknowledged by every peer."""
    sync_lag: float
    """Seconds since the oldest pending update was made; 0 when in sync."""
    updates_sent: int
    """Update messages sent to peers (each link counted)."""
    updates_received: int
    """Updates received from peers that changed the document."""
    bad_messages: int
    """Messages from peers dropped as malformed or invalid."""
    writes_denied: int
    """Writes from read-only peers dropped."""
    storage_bytes: int = 0
    """Bytes it takes in the node's store (snapshot plus update log)."""
    quota_refusals: int = 0
    """Remote updates refused because it reached its byte quota (a persistence peer's)."""


@attrs.frozen(kw_only=True)
class NodeStatistics:
    """A snapshot of a whole node."""

    node_id: str
    """This node's ID (text form)."""
    name: str
    """This node's name."""
    running: bool
    """True between start-up and the start of shutdown (health reads this)."""
    uptime: float
    """Seconds since the node started."""
    connections: int
    """Quantum connections open now."""
    connections_opened: int
    """Connections established so far (dialled or accepted)."""
    connections_closed: int
    """Connections that ended so far, for any reason."""
    reconnects: int
    """Reconnection attempts made to peers that went away."""
    bytes_sent: int
    """Bytes the node's socket sent (all peers, handshakes included)."""
    bytes_received: int
    """Bytes the node's socket received."""
    datagrams_sent: int
    """UDP datagrams sent."""
    datagrams_received: int
    """UDP datagrams received."""
    bad_packets: int
    """Datagrams dropped as malformed, unauthenticated or for no connection."""
    peers_dropped: int
    """Peers disconnected for breaking the protocol (garbage, forged writes ...)."""
    messages_throttled: int
    """Messages delayed or dropped by the per-peer rate and byte limits."""
    discovery_available: bool
    """mDNS discovery is running (False when off, or when multicast is unavailable)."""
    discovered_peers: int
    """Peers seen on the LAN by mDNS now."""
    lan_peers: int = 0
    """Connected peers whose path is ``lan``."""
    direct_peers: int = 0
    """Connected peers whose path is ``direct`` (a public address, or punched through NATs)."""
    relayed_peers: int = 0
    """Connected peers whose packets go through the home relay."""
    punch_attempts: int = 0
    """Hole punches this node asked its home relay for (to dial a peer, or to upgrade a link)."""
    punch_successes: int = 0
    """Punches that proved a direct route."""
    path_upgrades: int = 0
    """Relayed links this node moved to a direct path (punch, then migrate)."""
    relayed_connects: int = 0
    """Connections this node dialled through its home relay."""
    peers: tuple[PeerStatistics, ...] = ()
    """One record per connected peer."""
    documents: tuple[DocumentStatistics, ...] = ()
    """One record per open document."""
