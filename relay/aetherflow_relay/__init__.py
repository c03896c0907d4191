"""The AetherFlow relay: a node's home on the internet.

It tells each node its observed public address (as STUN does), times the two sides of a hole
punch (as libp2p's DCUtR does), and forwards end-to-end encrypted Quantum packets by node ID
when punching fails (as Tailscale's DERP and iroh's relays do). It never sees a key: the
packets it carries are the two nodes' ciphertext.

:class:`RelayCore` is the sans-I/O core; :func:`serve_relay` runs it on one Quantum endpoint;
``aetherflow relay`` is the command. The wire format is in docs/protocol.md ("Relay").
"""

from aetherflow_relay._core import (
    DROP_REASONS,
    RELAY_DOCUMENT,
    TRANSITIONS,
    ClientState,
    CloseRequest,
    RelayConfig,
    RelayCore,
    RelayStatistics,
)

__all__ = [
    "DROP_REASONS",
    "RELAY_DOCUMENT",
    "TRANSITIONS",
    "ClientState",
    "CloseRequest",
    "RelayConfig",
    "RelayCore",
    "RelayStatistics",
]
