"""A document holder in its own process, for the persistence-peer tests.

``python _holder.py DATA RELAY create NAME TEXT``: create the document, host it on the relay,
write TEXT, print ``{"doc_id", "ticket"}`` once the relay's node has synced it, and exit.
``python _holder.py DATA RELAY open DOC EXPECT [PREPEND]``: open DOC (an ID or a ticket), wait
until its text is EXPECT, prepend PREPEND if given, print ``{"text"}``, and exit.
RELAY ``-`` means none (a joiner then adopts its ticket's relay). It listens on ``$HOLDER_LISTEN``
(default ``127.0.0.1:0``). Exit status 1 (and ``{"error"}``) if a wait runs out.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import anyio

from aetherflow_node import Document, Node, open_node

TIMEOUT = 60.0


async def wait_for(condition: Callable[[], bool], node: Node, document: Document) -> None:
    while not condition():
        events = (node.activity, document.sync.activity)
        with anyio.move_on_after(0.5):  # a bounded re-check, in case a change sets no event
            async with anyio.create_task_group() as tg:
                for event in events:

                    async def wake(event: anyio.Event = event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(wake)


async def main(data: str, relay: str, command: str, *args: str) -> None:
    host, _, port = os.environ.get("HOLDER_LISTEN", "127.0.0.1:0").rpartition(":")
    async with open_node(
        data_dir=data, name=command, relay=None if relay == "-" else relay, listen=(host, int(port)),
        discovery=False,
    ) as node:  # fmt: skip
        try:
            with anyio.fail_after(TIMEOUT):
                if command == "create":
                    name, text = args
                    document = await node.open_document(name)
                    document.insert(0, text)
                    await node.host_on_relay(document)
                    relay_id = node.home_relay.client.connection.peer_id  # type: ignore[union-attr]
                    # The relay's node asked for our state and was answered (sync step 2).
                    protocol = document.sync.protocol
                    await wait_for(
                        lambda: relay_id in protocol.peers and protocol.peer_state(relay_id) == "synced",
                        node,
                        document,
                    )
                    print(
                        json.dumps({"doc_id": document.doc_id, "ticket": document.share(user="bob")}),
                        flush=True,
                    )
                else:
                    target, expect, *prepend = args
                    document = await node.open_document(target)
                    await wait_for(lambda: document.text == expect, node, document)
                    if prepend:
                        document.insert(0, prepend[0])
                        await document.flush()
                    print(json.dumps({"text": document.text}), flush=True)
        except TimeoutError:
            print(json.dumps({"error": f"timed out; text {document.text!r}"}), flush=True)
            sys.exit(1)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
