"""Shared helpers of the node tests: wait on the nodes' own events, never on a sleep."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from aetherflow_node import Node


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, *nodes: Node) -> None:
    """Re-check ``condition`` whenever a node or one of its documents reports activity."""
    try:
        with anyio.fail_after(timeout):
            while True:
                events = [node.activity for node in nodes]
                events += [doc.sync.activity for node in nodes for doc in node.documents]
                if condition():
                    return
                async with anyio.create_task_group() as tg:

                    async def wake(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    for event in events:
                        tg.start_soon(wake, event)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


def loopback() -> dict[str, object]:
    """open_node arguments for a test node: loopback only, no mDNS."""
    return {"listen": ("127.0.0.1", 0), "discovery": False}
