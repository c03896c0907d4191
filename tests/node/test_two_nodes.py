"""Nodes in one process on loopback, joined by ticket, sync both ways."""

from __future__ import annotations

from pathlib import Path

from aetherflow_node import open_node

from ._helpers import loopback, wait_until


async def test_two_nodes_join_by_ticket_and_sync_both_ways(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="bob", **loopback()) as bob,  # type: ignore[arg-type]
    ):
        doc_a = await alice.open_document("notes")
        doc_a.insert(0, "hello")
        ticket = alice.share(doc_a, user="bob", perm="rw")
        doc_b = await bob.open_document(ticket)
        assert doc_b.name == "notes" and doc_b.doc_id == doc_a.doc_id
        await wait_until(lambda: doc_b.text == "hello", 10, "bob got alice's text", alice, bob)
        doc_b.insert(5, " world")
        await wait_until(lambda: doc_a.text == "hello world", 10, "alice got bob's edit", alice, bob)
        assert [p.name for p in alice.peers] == ["bob"]
        assert alice.peers[0].path == "lan" and alice.peers[0].documents == ("notes",)
