"""The node's side of LAN discovery: advertise keyed tags of open documents, dial holders found.

Discovery itself (mDNS through zeroconf, bridged to trio and asyncio) lives in
``_discovery.py``; this module only decides what to advertise and whom to dial.
A tag is a keyed hash of a document's secret and the advertiser's node ID
(:func:`document_tag`), so a LAN observer cannot tell which documents a node holds,
nor link two of them; a holder recomputes the tag for every node it sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from aetherflow_node._discovery import Discovery, FoundPeer, document_tag, open_discovery, shared_documents
from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk._identity import parse_node_id

if TYPE_CHECKING:
    from aetherflow_node._node import Node

logger = logging.getLogger("aetherflow.node")


def _tags(node: Node) -> frozenset[bytes]:
    mine = node.identity.node_id
    return frozenset(document_tag(d.record.secret, mine) for d in node.documents)


async def run(node: Node, interfaces: Sequence[str] | None) -> None:
    """Run discovery for ``node`` until cancelled."""
    async with open_discovery(
        node_id=node.node_id,
        port=node.address[1],
        interfaces=interfaces,
        name=node.name,
        tags=_tags(node),
    ) as discovery:
        node.discovery_available = discovery.available
        if not discovery.available:
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(_advertise, node, discovery)
            with discovery.found() as found:
                async for peer in found:
                    node.discovered_peers = len(discovery.peers)
                    _on_found(node, peer)


async def _advertise(node: Node, discovery: Discovery) -> None:
    while True:
        changed = node._documents_changed
        discovery.advertise(_tags(node))
        await changed.wait()


def _on_found(node: Node, peer: FoundPeer) -> None:
    try:
        node_id = parse_node_id(peer.node_id)
    except LocalProtocolError:
        return
    if peer.removed:
        node.mesh.lan_peers.discard(node_id)
        return
    node.mesh.lan_peers.add(node_id)
    secrets = {d.doc_id: d.record.secret for d in node.documents}
    if not shared_documents(peer, secrets):
        return  # it holds nothing we have open: no reason to connect
    for address in peer.addresses[:4]:
        node.mesh.want(address, node_id, persistent=False)
        break
