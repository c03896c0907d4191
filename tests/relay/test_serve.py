"""The persistence peer: a relay with ``--data-dir`` hosts documents through its own node.

In one process here (SDK nodes, an in-process relay): hosting by serve ticket, catch-up while
the creator is offline, SERVE refusals, the byte quota. test_serve_processes.py does the
catch-up with real ``aetherflow relay`` processes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aetherflow_node import Node, ServeRefused, open_node
from aetherflow_node._relay_wire import ServeCode
from aetherflow_relay._serve import DocumentHost, ServeConfig, check_serve_ticket, open_document_host
from aetherflow_relay._shell import Relay, serve_relay
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session import Ticket, share_ticket

from ..node._helpers import loopback, wait_until


@contextlib.asynccontextmanager
async def hosting_relay(data_dir: Path, config: ServeConfig | None = None) -> AsyncIterator[tuple[Relay, DocumentHost, str]]:
    async with open_document_host(data_dir, ("127.0.0.1", 0), config=config) as host:
        async with serve_relay(("127.0.0.1", 0), identity=host.node.identity, host=host) as relay:
            yield relay, host, f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"


def served_text(host: DocumentHost, doc_id: str) -> str:
    return next((d.text for d in host.node.documents if d.doc_id == doc_id), "")


async def registered(node: Node) -> None:
    assert node.home_relay is not None
    with anyio.fail_after(10):
        await node.home_relay.wait_registered()


async def test_a_document_hosted_on_the_relay_reaches_a_joiner_while_its_creator_is_offline(
    tmp_path: Path,
) -> None:
    async with hosting_relay(tmp_path / "relay") as (relay, host, where):
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            await registered(alice)
            doc = await alice.open_document("notes")
            await alice.host_on_relay(doc)
            doc.insert(0, "written by alice")
            ticket = alice.share(doc, user="bob", perm="rw")
            await wait_until(lambda: served_text(host, doc.doc_id) == "written by alice", 10,
                             "the relay has alice's edit", alice, host.node)  # fmt: skip
            doc_id = doc.doc_id
        assert not [p for p in host.node.peers if p.name == "alice"]  # alice is gone
        async with open_node(data_dir=tmp_path / "b", name="bob", relay=where, **loopback()) as bob:  # type: ignore[arg-type]
            doc_b = await bob.open_document(ticket)
            await wait_until(lambda: doc_b.text == "written by alice", 15, "bob caught up", bob, host.node)
            doc_b.insert(0, "bob: ")
            await wait_until(lambda: served_text(host, doc_id) == "bob: written by alice", 10,
                             "the relay has bob's edit", bob, host.node)  # fmt: skip
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            doc = await alice.open_document(doc_id)
            await wait_until(lambda: doc.text == "bob: written by alice", 15, "alice got bob's edit",
                             alice, host.node)  # fmt: skip
        stats = host.statistics()
        assert stats.documents == 1 and stats.serve_accepted == 1 and stats.storage_bytes > 0
