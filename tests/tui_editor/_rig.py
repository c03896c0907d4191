"""Two editors, each over its own peer on loopback: the owner and one who joined by ticket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from aetherflow_sdk.session import Ticket
from tui_editor._app import EditorApp
from tui_editor._direct import DirectPeer, open_direct_peer

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
    text: str = "", *, perm: str = "rw", tmp: Path | None = None, presence_timeout: float | None = None
) -> AsyncIterator[tuple[DirectPeer, DirectPeer]]:
    async with open_direct_peer(
        doc_id="notes", label="notes.txt", user="alice", seed=text or None, presence_timeout=presence_timeout
    ) as owner:
        ticket = Ticket.parse(owner.share(user="bob", perm=perm))  # type: ignore[arg-type]
        async with open_direct_peer(
            doc_id=ticket.document,
            label="notes.txt",
            user="bob",
            join=ticket,
            presence_timeout=presence_timeout,
        ) as guest:
            await wait_for("the guest receives the text", lambda: guest.replica.text == owner.replica.text)
            yield owner, guest


def app_for(peer: DirectPeer, user: str, **kwargs: object) -> EditorApp:
    return EditorApp(document=peer, node=peer, user=user, **kwargs)  # type: ignore[arg-type]
