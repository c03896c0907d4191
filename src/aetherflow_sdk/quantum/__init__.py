"""Quantum: AetherFlow's reliable, encrypted transport over UDP.

::

    from aetherflow_sdk import quantum

    async with quantum.open_endpoint(("127.0.0.1", 0)) as ep:
        conn = await ep.connect(("127.0.0.1", port))
        await conn.send(b"hello", ordered=True)
        reply = await conn.receive()

The protocol core (:class:`QuantumConnection`, :class:`EndpointCore`) is
sans-I/O; :func:`open_endpoint` is the thin async shell around it. The wire
format is in docs/protocol.md.
"""

# Congestion controllers register themselves on import (see _congestion.py).
from aetherflow_sdk._errors import ChannelRefused
from aetherflow_sdk.quantum import _bbr, _newreno  # noqa: F401  (register "bbr", "newreno")
from aetherflow_sdk.quantum._channel_shell import Channel
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._connection import (
    ConnectionTerminated,
    HandshakeCompleted,
    PathMigrated,
    PathMigrationFailed,
    QuantumConnection,
)
from aetherflow_sdk.quantum._endpoint import Connection, Endpoint, open_endpoint
from aetherflow_sdk.quantum._endpoint_core import EndpointCore
from aetherflow_sdk.quantum._events import (
    ConnectionEnded,
    ConnectionEstablished,
    EndpointEvent,
    PathChanged,
)
from aetherflow_sdk.quantum._path_shell import PathMigration
from aetherflow_sdk.quantum._paths import DirectPath, Path, PathValidationFailed
from aetherflow_sdk.quantum._stats import ConnectionStatistics, EndpointStatistics

__all__ = [
    "Channel",
    "ChannelRefused",
    "Connection",
    "ConnectionEnded",
    "ConnectionEstablished",
    "ConnectionStatistics",
    "ConnectionTerminated",
    "DirectPath",
    "Endpoint",
    "EndpointCore",
    "EndpointEvent",
    "EndpointStatistics",
    "HandshakeCompleted",
    "Path",
    "PathChanged",
    "PathMigrated",
    "PathMigration",
    "PathMigrationFailed",
    "PathValidationFailed",
    "QuantumConfig",
    "QuantumConnection",
    "open_endpoint",
]
