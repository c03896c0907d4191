"""A Quantum peer for the NAT test, run inside a network namespace (tests/quantum/test_paths_nat_netns.py).

    python _nat_peer.py server HOST PORT          echo each message, with the address it came from
    python _nat_peer.py client HOST PORT NAT_NS   talk, let the NAT rebind, talk again; one JSON line

The client changes the NAT itself (``ip netns exec NAT_NS``: a new port range for MASQUERADE
and a flush of the UDP conntrack entries), so the next packet leaves from a new public port.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import suppress

import trio

from aetherflow_sdk import ConnectionClosed, quantum


async def server(host: str, port: int) -> None:
    async with quantum.open_endpoint((host, port)) as endpoint:
        print("ready", flush=True)
        async with trio.open_nursery() as nursery:
            while True:
                conn = await endpoint.accept()

                async def echo(conn: quantum.Connection = conn) -> None:
                    with suppress(ConnectionClosed):
                        while True:
                            message = await conn.receive()
                            await conn.send(
                                message
                                + b" from %s:%d" % (conn.peer_address[0].encode(), conn.peer_address[1])
                            )

                nursery.start_soon(echo)


def rebind(nat: str) -> None:
    """A new port range for MASQUERADE, and the old mappings forgotten: a NAT rebinding."""
    commands = [
        ["iptables", "-t", "nat", "-R", "POSTROUTING", "1", "-p", "udp", "-j", "MASQUERADE",
         "--to-ports", "41000-41099"],
        ["conntrack", "-D", "-p", "udp"],
    ]  # fmt: skip
    for argv in commands:
        subprocess.run(["ip", "netns", "exec", nat, *argv], check=True, capture_output=True, timeout=10)


async def client(host: str, port: int, nat: str) -> None:
    async with quantum.open_endpoint(("0.0.0.0", 0)) as endpoint:
        with trio.fail_after(30):
            conn = await endpoint.connect((host, port))
            await conn.send(b"before")
            before = (await conn.receive()).decode()
            # Idle, as a connection is between edits (not a wait for something: the idleness itself).
            await trio.sleep(1.0)
            rebind(nat)
            await conn.send(b"after")
            after = (await conn.receive()).decode()
            stats = conn.statistics()
            await conn.aclose()
    print(
        json.dumps({"before": before, "after": after, "retransmitted": stats.packets_retransmitted}),
        flush=True,
    )


if __name__ == "__main__":
    role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "server":
        trio.run(server, host, port)
    else:
        trio.run(client, host, port, sys.argv[4])
