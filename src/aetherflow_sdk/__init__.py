"""AetherFlow SDK: what apps import to become a collaboration node.

Subpackages:

* :mod:`aetherflow_sdk.quantum` -- the Quantum reliable transport over UDP.

The names below are the deliberate public surface; ``tests/test_exports.py``
pins them.
"""

from aetherflow_sdk._errors import (
    AetherFlowError,
    AuthError,
    BadPacket,
    ChannelRefused,
    ClosedByPeer,
    ClosedLocally,
    ConnectionClosed,
    ConnectionTimeout,
    HandshakeFailed,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
    ReplicaError,
    StorageError,
    WouldBlock,
)
from aetherflow_sdk._uuid7 import uuid7, uuid7_unix_ms

__all__ = [
    "AetherFlowError",
    "AuthError",
    "BadPacket",
    "ChannelRefused",
    "ClosedByPeer",
    "ClosedLocally",
    "ConnectionClosed",
    "ConnectionTimeout",
    "HandshakeFailed",
    "LocalProtocolError",
    "MessageTooLarge",
    "RemoteProtocolError",
    "ReplicaError",
    "StorageError",
    "WouldBlock",
    "uuid7",
    "uuid7_unix_ms",
]

__version__ = "0.1.0"
