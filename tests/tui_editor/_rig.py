"""Two editors, each over its own real node on loopback: the owner and one who joined by ticket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from aetherflow_node import open_node
from tui_editor._app import EditorApp
from tui_editor._nodeport import NodeDocument

WAIT = 10.0  # seconds any one expected thing may take on loopback before the test fails


async def wait_for(what: str, condition: Callable[[], bool], pilots: tuple[object, ...] = ()) -> None:
    """Let the apps run until ``condition()`` holds (bounded; each turn yields to the loop)."""
    with anyio.move_on_after(WAIT):
        while not condition():
            for pilot in pilots:
                await pilot.pause()  # type: ignore[attr-defined]
            await anyio.sleep(0.005)
        return
    raise AssertionError(f"{what}: not within {WAIT} s")


@contextlib.asynccontextmanager
async def two_peers(
    tmp: Path, text: str = "", *, perm: str = "rw"
) -> AsyncIterator[tuple[NodeDocument, NodeDocument]]:
    """Alice's node holds a document with ``text``; Bob's node joins it with a ``perm`` ticket."""
    async with (
        open_node(data_dir=tmp / "alice", name="alice", listen=("127.0.0.1", 0), discovery=False) as a,
        open_node(data_dir=tmp / "bob", name="bob", listen=("127.0.0.1", 0), discovery=False) as b,
    ):
        doc_a = await a.open_document("notes.txt")
        if text:
            doc_a.replica.seed(text)
        doc_b = await b.open_document(a.share(doc_a, user="bob", perm=perm))
        owner, guest = NodeDocument(a, doc_a), NodeDocument(b, doc_b)
        await wait_for("the guest receives the text", lambda: guest.replica.text == owner.replica.text)
        yield owner, guest


def app_for(peer: NodeDocument, user: str, **kwargs: object) -> EditorApp:
    return EditorApp(document=peer, node=peer, user=user, **kwargs)  # type: ignore[arg-type]
