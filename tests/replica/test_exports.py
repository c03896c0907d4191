"""The replica package's public names are deliberate: this pins them."""

from __future__ import annotations

import aetherflow_sdk.replica as replica


def test_public_names() -> None:
    assert sorted(replica.__all__) == [
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
    for name in replica.__all__:
        assert getattr(replica, name) is not None
