"""A node for the NAT tests, run in a private namespace: ``python _peer.py HOST PORT RELAY_ID``.

It opens a Quantum endpoint, registers with the relay and prints one JSON line
(``node_id``, ``observed``). Then it obeys JSON commands on stdin, one per line, and answers
each with one JSON line: ``punch`` (peer), ``connect`` (address, peer), ``accept``,
``listen_relayed`` (peer), ``to_relay``, ``to_direct`` (address), ``exchange`` (n), ``quit``.
"""

from __future__ import annotations

import json
import sys

import anyio
import anyio.to_thread

from aetherflow_node._relay_client import open_relay_client
from aetherflow_sdk import quantum


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def echo(conn: quantum.Connection) -> None:
    try:
        while True:
            await conn.send(await conn.receive())
    except Exception:
        pass


async def main(relay_host: str, relay_port: int, relay_id: bytes) -> None:
    async with (
        quantum.open_endpoint(("0.0.0.0", 0)) as endpoint,
        open_relay_client(endpoint, (relay_host, relay_port), relay_id=relay_id) as client,
        anyio.create_task_group() as tg,
    ):
        say(node_id=endpoint.node_id.hex(), observed=client.observed, local=endpoint.local_address)
        conn: quantum.Connection | None = None
        peer = b""
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            name = command["cmd"]
            try:
                with anyio.fail_after(20):
                    if name == "punch":
                        peer = bytes.fromhex(command["peer"])
                        outcome = await client.punch(peer)
                        say(address=outcome.address)
                    elif name == "connect":
                        peer = bytes.fromhex(command["peer"])
                        conn = await endpoint.connect(tuple(command["address"]), peer_id=peer)
                        say(ok=True)
                    elif name == "accept":
                        conn = await endpoint.accept()
                        tg.start_soon(echo, conn)
                        say(ok=True, peer=conn.peer_id.hex())
                    elif name == "listen_relayed":
                        endpoint.add_path(client.relayed_path(bytes.fromhex(command["peer"])))
                        say(ok=True)
                    elif name == "to_relay":
                        assert conn is not None
                        await conn.migrate_to_path(client.relayed_path(peer))
                        say(ok=True)
                    elif name == "to_direct":
                        assert conn is not None
                        await conn.migrate(tuple(command["address"]))
                        say(ok=True)
                    elif name == "exchange":
                        assert conn is not None
                        for i in range(command["n"]):
                            await conn.send(b"m%d" % i)
                            assert await conn.receive() == b"m%d" % i
                        say(ok=True, path=repr(conn.path))
                    elif name == "quit":
                        say(ok=True)
                        break
            except Exception as exc:  # reported to the test, which fails with it
                say(error=f"{type(exc).__name__}: {exc}")
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]))
