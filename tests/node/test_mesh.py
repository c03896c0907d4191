"""Three nodes, concurrent edits, two documents on one connection, read-only, revocation, asyncio."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from aetherflow_node import open_node
from aetherflow_sdk import LocalProtocolError

from ._helpers import loopback, wait_until

WORDS = ["héllo", "日本語", "🎉👩‍💻", "e\u0301", "naïve", "한국어", "Ω≈ç", "✓", "🇫🇷", "a"]


def _random_edit(rng: random.Random, doc) -> None:  # type: ignore[no-untyped-def]
    if len(doc) and rng.random() < 0.3:
        start = rng.randrange(len(doc))
        doc.delete(start, min(len(doc) - start, rng.randint(1, 3)))
    else:
        doc.insert(rng.randint(0, len(doc)), rng.choice(WORDS))


async def test_three_nodes_concurrent_unicode_edits_end_identical(tmp_path: Path) -> None:
    await _three_nodes(tmp_path)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_three_nodes_on_asyncio(tmp_path: Path) -> None:
    await _three_nodes(tmp_path)


async def _three_nodes(tmp_path: Path) -> None:
    rng = random.Random(9)
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "c", name="c", **loopback()) as c,  # type: ignore[arg-type]
    ):
        doc_a = await a.open_document("shared")
        doc_a.insert(0, "start ")
        doc_b = await b.open_document(a.share(doc_a, user="bob"))
        doc_c = await c.open_document(a.share(doc_a, user="carol"))
        docs = [doc_a, doc_b, doc_c]
        nodes = (a, b, c)
        await wait_until(lambda: all(d.text == "start " for d in docs), 10, "joined", *nodes)
        # b and c learn of each other from a: a full mesh, not a star.
        await wait_until(lambda: all(len(n.peers) == 2 for n in nodes), 10, "full mesh", *nodes)
        for _ in range(40):  # concurrent: each round every node edits before anything syncs
            for doc in docs:
                _random_edit(rng, doc)
            await anyio.lowlevel.checkpoint()
        await wait_until(lambda: len({d.text for d in docs}) == 1, 15, "converged", *nodes)
        assert len(docs[0].text) > len("start ")
        assert {p.name for p in c.peers} == {"a", "b"}


async def _two_documents_one_connection(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
    ):
        one, two = await a.open_document("one"), await a.open_document("two")
        one.insert(0, "first 🎉")
        two.insert(0, "second 日本")
        b_one = await b.open_document(a.share(one, user="b"))
        b_two = await b.open_document(a.share(two, user="b"))
        await wait_until(
            lambda: b_one.text == "first 🎉" and b_two.text == "second 日本", 10, "both synced", a, b
        )
        b_two.insert(0, "» ")
        await wait_until(lambda: two.text == "» second 日本", 10, "back", a, b)
        stats = a.statistics()
        assert stats.connections == 1 and len(stats.peers) == 1
        assert stats.peers[0].documents == 2
        assert a.peers[0].documents == ("one", "two")


async def test_two_documents_travel_over_one_connection(tmp_path: Path) -> None:
    await _two_documents_one_connection(tmp_path)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_same_on_asyncio(tmp_path: Path) -> None:
    await _two_documents_one_connection(tmp_path)


async def test_read_only_stays_read_only_towards_every_holder(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "r", name="r", **loopback()) as r,  # type: ignore[arg-type]
    ):
        doc_a = await a.open_document("doc")
        doc_a.insert(0, "text")
        doc_b = await b.open_document(a.share(doc_a, user="b", perm="rw"))
        doc_r = await r.open_document(a.share(doc_a, user="r", perm="ro"))
        nodes = (a, b, r)
        await wait_until(lambda: doc_r.text == "text" and doc_b.text == "text", 10, "joined", *nodes)
        await wait_until(lambda: len(r.peers) == 2, 10, "r meshed with b too", *nodes)
        assert doc_r.read_only
        with pytest.raises(LocalProtocolError, match="read-only"):
            doc_r.insert(0, "x")
        # Writing into the replica underneath stays local: holders never ask a read-only peer
        # for its state, so nothing is pushed (tests/node/test_hostile.py forges writes).
        doc_r.replica.insert(0, "local ")
        doc_b.insert(4, "!")
        await wait_until(lambda: doc_r.text == "local text!", 10, "r still reads", *nodes)
        await wait_until(lambda: doc_a.text == "text!", 10, "a has b's edit", *nodes)
        assert doc_a.text == doc_b.text == "text!"
        assert doc_a.text == "text!" and doc_b.text == "text!"


async def test_revocation_reaches_the_other_holders(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "m", name="m", **loopback()) as m,  # type: ignore[arg-type]
    ):
        doc_a = await a.open_document("doc")
        doc_b = await b.open_document(a.share(doc_a, user="b"))
        doc_m = await m.open_document(a.share(doc_a, user="mallory"))
        nodes = (a, b, m)
        await wait_until(lambda: len(m.peers) == 2, 10, "m meshed", *nodes)
        assert await a.revoke(doc_a, user="mallory") == 1
        mallory = m.identity.node_id

        def cut_off() -> bool:
            return all(
                doc_a.doc_id not in link.docs
                for node in (a, b)
                for link in node.mesh.links.values()
                if link.peer_id == mallory
            )

        await wait_until(cut_off, 10, "both a and b ended mallory's sessions", *nodes)
        doc_a.insert(0, "secret")
        await wait_until(lambda: doc_b.text == "secret", 10, "b still syncs", *nodes)
        assert doc_m.text == ""
        assert b.mesh.counters["revocations_applied"] == 1


async def test_same_name_different_documents_never_merge(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
    ):
        doc_a, doc_b_own = await a.open_document("notes"), await b.open_document("notes")
        doc_a.insert(0, "alice's")
        doc_b_own.insert(0, "bob's")
        joined = await b.open_document(a.share(doc_a, user="b"))
        await wait_until(lambda: joined.text == "alice's", 10, "joined", a, b)
        assert doc_b_own.text == "bob's" and doc_a.text == "alice's"
        with pytest.raises(LocalProtocolError, match="2 documents are called 'notes'"):
            await b.open_document("notes")


async def test_a_manual_peer_that_restarts_is_redialled_and_resyncs(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    a_args = {"data_dir": tmp_path / "a", "name": "a", "listen": ("127.0.0.1", port), "discovery": False}
    peers = [f"127.0.0.1:{port}"]
    async with open_node(data_dir=tmp_path / "b", name="b", peers=peers, seed=3, **loopback()) as b:  # type: ignore[arg-type]
        async with open_node(**a_args) as a:  # type: ignore[arg-type]
            doc_a = await a.open_document("doc")
            doc_b = await b.open_document(a.share(doc_a, user="b"))
            doc_a.insert(0, "before")
            await wait_until(lambda: doc_b.text == "before", 10, "synced", a, b)
        doc_b.insert(0, "offline ")  # a is gone: b keeps editing, and keeps redialling
        async with open_node(**a_args) as a:  # type: ignore[arg-type]
            doc_a = await a.open_document("doc")
            doc_a.insert(len(doc_a), " after")
            await wait_until(
                lambda: doc_b.text == doc_a.text == "offline before after", 20, "redialled and resynced", a, b
            )
        assert b.statistics().reconnects >= 1
