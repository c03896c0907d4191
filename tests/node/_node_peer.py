"""One node in its own process for the namespace tests (test_node_netns.py).

argv: BACKEND ROLE DATA_DIR LISTEN_HOST LISTEN_PORT NAME [--interface ADDR] [--peer HOST:PORT]
ROLE "holder": create "notes", type into it, print a ticket that carries NO address (so a joiner
can only find this node on the LAN, or through a peer given by address), then wait for the
joiner's edit.  ROLE "joiner": read that ticket from stdin, join, wait for the holder's text,
type an edit.  Both print JSON lines and stay up until stdin says "quit".
"""

from __future__ import annotations

import json
import logging
import sys
import time

import anyio
import attrs

from aetherflow_node import open_node
from aetherflow_sdk.session import Ticket

HOLDER_TEXT = "hello from the holder"
JOINER_TEXT = " and the joiner"


def _say(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def _wait_text(doc, predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout):
        async with doc.changes() as changes:
            if predicate(doc.text):
                return
            async for _ in changes:
                if predicate(doc.text):
                    return


async def _main(
    role: str, data: str, host: str, port: int, name: str, interfaces: list[str], peers: list[str]
):  # type: ignore[no-untyped-def]
    stdin = anyio.wrap_file(sys.stdin)
    async with open_node(
        data_dir=data,
        name=name,
        listen=(host, port),
        discovery=True,
        interfaces=interfaces or None,
        peers=peers,
    ) as node:
        _say({"event": "ready", "node_id": node.node_id, "address": list(node.address)})
        if role == "holder":
            doc = await node.open_document("notes")
            doc.insert(0, HOLDER_TEXT)
            ticket = attrs.evolve(Ticket.parse(node.share(doc, user="joiner", perm="rw")), direct=())
            _say({"event": "ticket", "ticket": ticket.encode()})
            await _wait_text(doc, lambda t: JOINER_TEXT in t)
        else:
            ticket_text = json.loads(await stdin.readline())["ticket"]
            started = time.monotonic()
            doc = await node.open_document(ticket_text)
            await _wait_text(doc, lambda t: HOLDER_TEXT in t)
            synced_after = time.monotonic() - started
            doc.insert(len(doc.text), JOINER_TEXT)
            await _wait_text(doc, lambda t: JOINER_TEXT in t)
            _say({"event": "joined", "seconds": round(synced_after, 3)})
        stats = node.statistics()
        _say(
            {
                "event": "synced",
                "text": doc.text,
                "peers": [[p.node_id, p.path] for p in node.peers],
                "discovery_available": stats.discovery_available,
            }
        )
        async for line in stdin:
            if json.loads(line).get("quit"):
                break
    _say({"event": "bye"})


def main() -> None:
    backend, role, data, host, port, name, *rest = sys.argv[1:]
    interfaces = [rest[i + 1] for i, a in enumerate(rest) if a == "--interface"]
    peers = [rest[i + 1] for i, a in enumerate(rest) if a == "--peer"]
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("zeroconf").setLevel(logging.ERROR)
    anyio.run(_main, role, data, host, int(port), name, interfaces, peers, backend=backend)


if __name__ == "__main__":
    main()
