"""The embeddable AetherFlow node runtime and the ``aetherflow`` command.

::

    from aetherflow_node import open_node

    async with open_node(name="alice", discovery=False) as node:
        doc = await node.open_document("notes")
        doc.insert(0, "hello")
        ticket = node.share(doc, user="bob", perm="rw")

docs/sdk.md is the guide. The names below are the public surface; ``tests/test_exports.py``
pins them. They load on first use (PEP 562), so that the ``aetherflow`` command's
dispatcher, which lives in this package, starts without importing the node.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aetherflow_node._datadir import DataDirError, default_data_dir
    from aetherflow_node._document import Document, DocumentStatistics, Presence
    from aetherflow_node._limits import Limits
    from aetherflow_node._node import Node, PeerInfo, open_node
    from aetherflow_node._relay_client import ServeRefused
    from aetherflow_node._stats import NodeStatistics
    from aetherflow_sdk._identity import Identity, format_node_id, parse_node_id

_WHERE = {
    "DataDirError": "aetherflow_node._datadir",
    "Document": "aetherflow_node._document",
    "DocumentStatistics": "aetherflow_node._document",
    "Identity": "aetherflow_sdk._identity",
    "Limits": "aetherflow_node._limits",
    "Node": "aetherflow_node._node",
    "NodeStatistics": "aetherflow_node._stats",
    "PeerInfo": "aetherflow_node._node",
    "Presence": "aetherflow_node._document",
    "ServeRefused": "aetherflow_node._relay_client",
    "default_data_dir": "aetherflow_node._datadir",
    "format_node_id": "aetherflow_sdk._identity",
    "open_node": "aetherflow_node._node",
    "parse_node_id": "aetherflow_sdk._identity",
}

__all__ = [
    "DataDirError",
    "Document",
    "DocumentStatistics",
    "Identity",
    "Limits",
    "Node",
    "NodeStatistics",
    "PeerInfo",
    "Presence",
    "ServeRefused",
    "default_data_dir",
    "format_node_id",
    "open_node",
    "parse_node_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'aetherflow_node' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
