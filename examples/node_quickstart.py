"""Two nodes in one process share a document by ticket and edit it together -- on loopback.

Run it from the repository root::

    .venv/bin/python examples/node_quickstart.py

Alice's node creates "notes" and prints a read-write ticket for Bob. Bob's node joins with
it: it dials the address in the ticket and proves its right with the token inside. Both
type at once; both copies end identical. Their data directories are temporary here; a real
app leaves ``data_dir`` out and gets ``~/.local/share/aetherflow``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import trio

from aetherflow_node import Document, Node, open_node


async def wait_for(condition, *nodes: Node) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``condition()`` holds, re-checking whenever a node or document reports activity."""
    with anyio.fail_after(10):
        while not condition():
            events = [n.activity for n in nodes] + [d.sync.activity for n in nodes for d in n.documents]
            async with anyio.create_task_group() as tg:
                for event in events:

                    async def wake(e: anyio.Event = event) -> None:
                        await e.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(wake)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        loopback = {"listen": ("127.0.0.1", 0), "discovery": False}
        async with (
            open_node(data_dir=home / "alice", name="alice", **loopback) as alice,  # type: ignore[arg-type]
            open_node(data_dir=home / "bob", name="bob", **loopback) as bob,  # type: ignore[arg-type]
        ):
            notes: Document = await alice.open_document("notes")
            notes.insert(0, "Shopping: ")
            ticket = alice.share(notes, user="bob", perm="rw")
            print(f"alice: created {notes.name!r}, ticket for bob: {ticket[:24]}… ({len(ticket)} characters)")

            copy = await bob.open_document(ticket)
            await wait_for(lambda: copy.text == notes.text, alice, bob)
            print(f"bob:   joined {copy.name!r}, reads {copy.text!r}")

            notes.insert(len(notes), "milk 🥛")  # both type at the same time
            copy.insert(len(copy), "お茶, ")
            await wait_for(
                lambda: notes.text == copy.text and "milk" in copy.text and "お茶" in notes.text, alice, bob
            )
            print(f"both:  {notes.text!r}")
            peer = alice.peers[0]
            print(f"alice: connected to {peer.name} on the {peer.path} path, rtt {peer.rtt * 1000:.1f} ms")


if __name__ == "__main__":
    trio.run(main)
