"""open_node(relay=...): a node registers with its home relay, and a mesh connection moved onto
the relay is reported as "relayed" in node.peers while the document keeps syncing through it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from aetherflow_node import open_node
from aetherflow_relay._shell import serve_relay
from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk._identity import format_node_id

from ..node._helpers import loopback, wait_until


async def test_a_node_syncs_a_document_over_its_relay_and_says_so(tmp_path: Path) -> None:
    async with serve_relay(("127.0.0.1", 0)) as relay:
        where = f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"
        async with (
            open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "b", name="bob", relay=where, **loopback()) as bob,  # type: ignore[arg-type]
        ):
            assert alice.home_relay is not None and bob.home_relay is not None
            with anyio.fail_after(10):
                client = await alice.home_relay.wait_registered()
                await bob.home_relay.wait_registered()
            assert client.observed == alice.address
            doc_a = await alice.open_document("notes")
            doc_a.insert(0, "hello")
            doc_b = await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
            await wait_until(lambda: doc_b.text == "hello", 10, "bob got alice's text", alice, bob)
            assert alice.peers[0].path == "lan"
            # Move bob's connection to alice onto the relay, as a node behind a symmetric NAT stays.
            (link,) = [lnk for lnk in bob.mesh.links.values() if not lnk.closed.is_set()]
            alice.mesh.endpoint.add_path(alice.home_relay.relayed_path(bob.identity.node_id))
            await link.conn.migrate_to_path(bob.home_relay.relayed_path(alice.identity.node_id))
            before = relay.statistics().forwarded_packets
            doc_b.insert(5, " world")
            await wait_until(
                lambda: doc_a.text == "hello world", 10, "alice got bob's edit via the relay", alice, bob
            )
            await wait_until(lambda: any(p.path == "relayed" for p in bob.peers), 10, "bob says relayed", bob)
            assert [p.path for p in bob.peers] == ["relayed"]
            assert [p.path for p in bob.statistics().peers] == ["relayed"]
            assert relay.statistics().forwarded_packets > before


async def test_a_bad_relay_address_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match="NODE_ID@HOST:PORT"):
        async with open_node(data_dir=tmp_path / "a", relay="nonsense@127.0.0.1:1", **loopback()):  # type: ignore[arg-type]
            pass
