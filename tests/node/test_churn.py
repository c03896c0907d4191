"""Churn: five nodes, three of them joining and leaving at random (seeded), while two edit.

At the end every node is back, every replica is identical, and every edit appears exactly once.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import anyio

from aetherflow_node import Document, Node, open_node

from ._helpers import loopback, wait_until

SEED = 20261201
EDITS = 60
"""Edits per editor (bounded)."""
CHURN_ROUNDS = 3
"""Times each churning node leaves and comes back (bounded)."""


async def _churner(
    rng: random.Random,
    data_dir: Path,
    ticket: str,
    name: str,
    editing: anyio.Event,
    done: list[str],
    seen: list[int],
) -> None:
    for _ in range(CHURN_ROUNDS):
        async with open_node(data_dir=data_dir, name=name, **loopback()) as node:  # type: ignore[arg-type]
            doc = await node.open_document(ticket)
            # Catch up first (bounded), then stay a random while and leave mid-edit.
            await wait_until(lambda d=doc: bool(d.text), 10, f"{name} caught up", node)
            await anyio.sleep(rng.uniform(0.05, 0.4))
            seen.append(len(re.findall(r"<[ab]\d+>", doc.text)))
        await anyio.sleep(rng.uniform(0.05, 0.3))  # away
        if editing.is_set():
            break
    done.append(name)


async def _editor(rng: random.Random, doc: Document, tag: str) -> None:
    for i in range(EDITS):
        text = doc.text
        boundaries = [0] + [at + 1 for at, char in enumerate(text) if char == ">"]  # never inside a mark
        doc.insert(rng.choice(boundaries), f"<{tag}{i}>")
        await anyio.sleep(rng.uniform(0.005, 0.03))


async def test_five_nodes_churn_while_two_edit_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    async with (
        open_node(data_dir=tmp_path / "e1", name="e1", **loopback()) as e1,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "e2", name="e2", **loopback()) as e2,  # type: ignore[arg-type]
    ):
        doc1 = await e1.open_document("churn")
        doc1.insert(0, "start ")
        doc2 = await e2.open_document(e1.share(doc1, user="e2"))
        tickets = {f"c{i}": e1.share(doc1, user=f"c{i}") for i in range(3)}
        editing_done = anyio.Event()
        left: list[str] = []
        seen: list[int] = []
        async with anyio.create_task_group() as tg:
            for name, ticket in tickets.items():
                tg.start_soon(
                    _churner,
                    random.Random(rng.random()),
                    tmp_path / name,
                    ticket,
                    name,
                    editing_done,
                    left,
                    seen,
                )
            async with anyio.create_task_group() as editors:
                editors.start_soon(_editor, random.Random(rng.random()), doc1, "a")
                editors.start_soon(_editor, random.Random(rng.random()), doc2, "b")
            editing_done.set()
        # Everyone comes back (from its own data directory) and catches up.
        async with (
            open_node(data_dir=tmp_path / "c0", name="c0", **loopback()) as c0,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "c1", name="c1", **loopback()) as c1,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "c2", name="c2", **loopback()) as c2,  # type: ignore[arg-type]
        ):
            docs = [doc1, doc2] + [await n.open_document(doc1.doc_id) for n in (c0, c1, c2)]
            nodes: tuple[Node, ...] = (e1, e2, c0, c1, c2)
            await wait_until(lambda: len({d.text for d in docs}) == 1, 30, f"converged (seed {SEED})", *nodes)
        marks = re.findall(r"<([ab]\d+)>", doc1.text)
        assert sorted(marks) == sorted([f"a{i}" for i in range(EDITS)] + [f"b{i}" for i in range(EDITS)])
        assert sorted(left) == ["c0", "c1", "c2"]
        assert len(seen) >= 3  # every churning node caught up at least once, each time it came
