"""The node's side of LAN discovery: advertise keyed tags of open documents, dial holders found.

Discovery itself (mDNS through zeroconf, bridged to trio and asyncio) lives in
``_discovery.py``; this module only decides what to advertise and whom to dial.
A tag is a keyed hash of a document's secret and the advertiser's node ID, so a LAN
observer cannot tell which documents a node holds, nor link two of them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aetherflow_node._node import Node

logger = logging.getLogger("aetherflow.node")


async def run(node: Node, interfaces: Sequence[str] | None) -> None:
    """Run discovery for ``node`` until cancelled."""
    try:
        discovery: Any = importlib.import_module("aetherflow_node._discovery")
    except ImportError:
        logger.warning("LAN discovery is not available in this version; peers and tickets still work")
        return
    await discovery.run_for_node(node, interfaces)
