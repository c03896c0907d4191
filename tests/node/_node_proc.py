"""One node in its own process, driven by JSON lines on stdin (used by test_restart.py, and as
the local editor of an ``aetherflow node`` in tests/relay/test_nat_nodes.py).

argv: DATA_DIR DOC [PEER]   DOC: a name, a document ID or an af1… ticket; PEER: HOST:PORT to link to
stdout: {"ready": true, "text": str, "node_id": str}
stdin:  {"insert": str}     append, make durable, then print {"durable": str (the whole text)}
        {"wait": str}       wait until the text contains it, then print {"text": str}
"""

from __future__ import annotations

import json
import sys

import anyio
import trio

from aetherflow_node import open_node


def _say(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def _main(data_dir: str, doc_text: str, *peers: str) -> None:
    async with open_node(
        data_dir=data_dir, listen=("127.0.0.1", 0), discovery=False, name="proc", peers=peers
    ) as node:
        doc = await node.open_document(doc_text)
        _say({"ready": True, "text": doc.text, "node_id": node.node_id})
        stdin = anyio.wrap_file(sys.stdin)
        async for line in stdin:
            command = json.loads(line)
            if "insert" in command:
                doc.insert(len(doc), command["insert"])
                await doc.flush()
                _say({"durable": doc.text})
            elif "wait" in command:
                while command["wait"] not in doc.text:
                    event = doc.sync.activity
                    await event.wait()
                _say({"text": doc.text})


if __name__ == "__main__":
    trio.run(_main, *sys.argv[1:])
