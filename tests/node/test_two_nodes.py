"""Nodes in one process on loopback, joined by ticket, sync both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

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


async def test_rejoining_with_a_fresh_ticket_after_both_restart_dials_its_new_address(tmp_path: Path) -> None:
    """The issuer restarts on a new port; the joiner knows the document (and the old address)
    from its first run. The new ticket's address must win over the stored, stale one."""
    for run in range(2):
        async with (
            open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "b", name="bob", **loopback()) as bob,  # type: ignore[arg-type]
        ):
            doc_a = await alice.open_document("notes")
            doc_a.insert(len(doc_a), f"run {run}. ")
            doc_b = await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
            same = lambda a=doc_a, b=doc_b: a.text == b.text  # noqa: E731
            await wait_until(same, 10, f"run {run}: bob synced", alice, bob)
            assert doc_b.text == "run 0. " * (run == 0) + "run 0. run 1. " * (run == 1)


async def test_a_document_whose_channel_setup_times_out_is_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a document's channel setup can time out while the peers' connection stays up:
    the opener tries again (with backoff), so the document does not stay offline for good."""
    from aetherflow_node import _mesh

    async with (
        open_node(data_dir=tmp_path / "a", name="alice", **loopback()) as alice,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="bob", **loopback()) as bob,  # type: ignore[arg-type]
    ):
        doc_a = await alice.open_document("notes")
        doc_a.insert(0, "hello")
        monkeypatch.setattr(_mesh, "FIRST_MESSAGE_TIMEOUT", 0.0)  # every setup times out for now
        doc_b = await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
        await wait_until(
            lambda: any(node.mesh.counters["document_reopens"] for node in (alice, bob)),
            10, "a failed channel setup was retried", alice, bob,
        )  # fmt: skip
        assert doc_b.text == "" and all(node.mesh.links for node in (alice, bob)), "linked, not synced"
        monkeypatch.setattr(_mesh, "FIRST_MESSAGE_TIMEOUT", 10.0)  # the load passes
        await wait_until(lambda: doc_b.text == "hello", 15, "the document synced on a retry", alice, bob)
