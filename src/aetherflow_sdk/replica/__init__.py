"""The local replica: a pycrdt text document, the Yjs sync protocol, durable SQLite storage, presence.

Start with :class:`Replica`; sync it with :class:`ReplicaSync` over any
MessageChannel (docs/replica.md).
"""

from aetherflow_sdk.replica._awareness import Awareness, AwarenessChange
from aetherflow_sdk.replica._events import (
    ChangeStream,
    Delete,
    Insert,
    ReplicaStatistics,
    Retain,
    TextChange,
)
from aetherflow_sdk.replica._replica import Replica
from aetherflow_sdk.replica._shell import ReplicaSync
from aetherflow_sdk.replica._store import SqliteStore
from aetherflow_sdk.replica._sync import Outgoing, PeerPresence, SyncProtocol, SyncStatistics
from aetherflow_sdk.replica._wire import is_write_message

__all__ = [
    "Awareness",
    "AwarenessChange",
    "ChangeStream",
    "Delete",
    "Insert",
    "Outgoing",
    "PeerPresence",
    "Replica",
    "ReplicaStatistics",
    "ReplicaSync",
    "Retain",
    "SqliteStore",
    "SyncProtocol",
    "SyncStatistics",
    "TextChange",
    "is_write_message",
]
