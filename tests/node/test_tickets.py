"""Tickets from a node carry the document's name, secret and the node's addresses; old ones still read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aetherflow_node import open_node
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import InvalidTicket, Ticket, share_ticket

from ._helpers import loopback


async def test_a_node_ticket_carries_addresses_name_and_secret(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path, name="alice", **loopback()) as node:  # type: ignore[arg-type]
        doc = await node.open_document("plans 🗺")
        ticket = Ticket.parse(node.share(doc, user="bob", perm="ro"))
        assert ticket.direct == (node.address,)
        assert ticket.document == doc.doc_id and ticket.name == "plans 🗺"
        assert ticket.secret == doc.record.secret and len(ticket.secret) == 32


async def test_binding_to_all_interfaces_lists_real_addresses(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path, listen=("0.0.0.0", 0), discovery=False) as node:
        addresses = node.reachable_addresses()
        assert addresses and all(host != "0.0.0.0" and port == node.address[1] for host, port in addresses)


def test_tickets_without_name_and_secret_still_parse_and_bad_ones_are_refused() -> None:
    identity = Identity.generate()
    old = share_ticket(identity, document="notes", user="u", permission="rw", expires_in=60, now=time.time())
    parsed = Ticket.parse(old.encode())
    assert parsed.name == "" and parsed.secret is None
    with pytest.raises(InvalidTicket, match="secret is 32 bytes"):
        Ticket(document="d", issuer=identity.node_id, token="t", secret=b"short")
    new = share_ticket(
        identity,
        document="d",
        user="u",
        permission="ro",
        expires_in=60,
        now=time.time(),
        name="n",
        secret=bytes(32),
    )
    assert Ticket.parse(new.encode()).secret == bytes(32)
