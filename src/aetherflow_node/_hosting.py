"""A node's documents on its relay's persistence peer (``aetherflow relay --data-dir``).

A relay that hosts documents runs a node beside it, with the relay's node ID, and names its
address in REGISTERED. Two things follow on the node's side:

* :func:`follow_persistence_peer`: while registered with such a relay, the node keeps a link to
  that node, as to any holder. The persistence peer opens a channel only for the documents it
  holds (channel names are keyed hashes of a document's secret), so a node that joined a
  document by ticket gets the latest state from it while every other holder is offline.
* :func:`host_on_relay`: the creator of a document issues a ``serve`` ticket bound to the relay's
  node ID and hands it over (SERVE); the relay's node joins the document with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

from aetherflow_node._relay_client import HomeRelay, ServeRefused
from aetherflow_node._relay_wire import ServeCode
from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk._identity import format_node_id

if TYPE_CHECKING:
    from aetherflow_node._document import Document
    from aetherflow_node._node import Node

SERVE_TICKET_LIFETIME: Final = 365 * 86_400
"""A serve ticket's lifetime: the relay's sessions on the document end when it expires."""
REGISTRATION_WAIT: Final = 10.0


async def follow_persistence_peer(node: Node, home: HomeRelay) -> None:
    """Keep a link to the home relay's persistence peer whenever the relay names one."""
    while True:
        client = await home.wait_registered()
        while not node.documents:  # nothing it could hold for us yet: no link
            await node._documents_changed.wait()
        peer = client.persistence_peer
        if peer is not None:
            node.mesh.want(peer, client.connection.peer_id, persistent=True)
        await client.closed.wait()
        while home.client is client:  # gone: wait until the home relay lets go of it
            await home._changed.wait()


async def host_on_relay(node: Node, document: Document, *, expires_in: float = SERVE_TICKET_LIFETIME) -> None:
    """Have the home relay's persistence peer keep ``document`` (see the module)."""
    home = node.home_relay
    if home is None:
        raise LocalProtocolError("this node has no home relay: open it with open_node(relay=...)")
    node._issued_here(document, "host it on a relay")
    with anyio.fail_after(REGISTRATION_WAIT):
        client = await home.wait_registered()
    peer = client.persistence_peer
    relay_id = client.connection.peer_id
    if peer is None:
        raise ServeRefused(
            f"the relay {format_node_id(relay_id)[:12]}… hosts no documents (start it with --data-dir DIR)",
            code=ServeCode.NOT_HOSTING,
        )
    ticket = node.share(
        document,
        user="persistence-peer",
        perm="serve",
        holder=format_node_id(relay_id),
        expires_in=expires_in,
    )
    await client.serve(ticket)
    node.mesh.want(peer, relay_id, persistent=True)
