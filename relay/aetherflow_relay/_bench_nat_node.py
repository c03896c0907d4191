"""One node of ``aetherflow bench relay --scenario direct|paths``, run inside a namespace.

``python -m aetherflow_relay._bench_nat_node RELAY_HOST RELAY_PORT RELAY_ID [DIAL_PEER_ID METHOD]``

The node opens a Quantum endpoint, keeps a home-relay registration and prints one JSON line
(its node ID, the address the relay observed, and ``time.monotonic()`` stamps: ``t_main`` once
its imports are done, ``t_registered``). With ``DIAL_PEER_ID`` it then reaches that peer at once
and prints ``t_connected`` (a connection is usable) and ``t_direct`` (it is on a direct path),
by METHOD: ``punch`` asks the relay to coordinate a hole punch and connects to the address the
punch proved (connected = direct); ``upgrade`` connects through the relay first
(``HomeRelay.connect_relayed``), then moves that connection to a direct path
(``HomeRelay.upgrade``: punch, then migrate). Every other node accepts connections and records
the one-way latency of each stamped message it receives (the clock is the machine's, shared by
every namespace).

Then it obeys JSON commands on stdin, one per line, each answered with one JSON line:
``connect`` (address, peer), ``listen_relayed`` (peer), ``to_relay``, ``stream`` (n, rate:
stamped messages to the connected peer), ``report`` (the latencies received since the last
report), ``quit``.
"""

from __future__ import annotations

import time

T_MAIN = time.monotonic()  # taken before the imports below

import json  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402

from aetherflow_node._relay_client import HomeRelay, RelayPath, open_home_relay  # noqa: E402
from aetherflow_sdk import quantum  # noqa: E402
from aetherflow_sdk._errors import LocalProtocolError  # noqa: E402

STAMP = struct.Struct("!dI")
TIMEOUT = 30.0


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


class Receiver:
    """Latencies of the stamped messages that arrive on any accepted connection."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    async def serve(self, endpoint: quantum.Endpoint) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                tg.start_soon(self._read, await endpoint.accept())

    async def _read(self, connection: quantum.Connection) -> None:
        try:
            while True:
                data = await connection.receive()
                stamp, _ = STAMP.unpack_from(data)
                self.latencies.append((time.monotonic() - stamp) * 1000)
        except Exception:  # the connection ended: the benchmark notices missing messages
            return


async def reach(
    endpoint: quantum.Endpoint, home: HomeRelay, peer: bytes, method: str
) -> tuple[quantum.Connection, float]:
    """A direct connection to ``peer`` by ``method``, and when it was first usable."""
    if method == "punch":
        outcome = await home.punch(peer)
        if outcome.address is None:
            raise LocalProtocolError("the punch found no direct route")
        connection = await endpoint.connect(outcome.address, peer_id=peer)
        return connection, time.monotonic()
    connection = await home.connect_relayed(peer)
    connected = time.monotonic()
    if not await home.upgrade(connection):
        raise LocalProtocolError("the upgrade to a direct path failed")
    return connection, connected


async def main(relay: tuple[str, int], relay_id: bytes, dial: bytes | None, method: str) -> None:
    async with (
        quantum.open_endpoint(("0.0.0.0", 0)) as endpoint,
        open_home_relay(endpoint, relay, relay_id=relay_id) as home,
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(TIMEOUT):
            client = await home.wait_registered()
        t_registered = time.monotonic()
        receiver = Receiver()
        tg.start_soon(receiver.serve, endpoint)
        say(node_id=endpoint.node_id.hex(), observed=client.observed, t_main=T_MAIN,
            t_registered=t_registered)
        conn: quantum.Connection | None = None
        if dial is not None:
            try:
                with anyio.fail_after(TIMEOUT):
                    conn, t_connected = await reach(endpoint, home, dial, method)
                say(t_connected=t_connected, t_direct=time.monotonic(),
                    relayed=isinstance(conn.path, RelayPath))  # fmt: skip
            except Exception as exc:  # reported to the benchmark, which stops with it
                say(error=f"{type(exc).__name__}: {exc}")
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            name = command["cmd"]
            try:
                with anyio.fail_after(TIMEOUT):
                    if name == "connect":
                        peer = bytes.fromhex(command["peer"])
                        conn = await endpoint.connect(tuple(command["address"]), peer_id=peer)
                        say(ok=True)
                    elif name == "listen_relayed":
                        endpoint.add_path(home.relayed_path(bytes.fromhex(command["peer"])))
                        say(ok=True)
                    elif name == "to_relay":
                        assert conn is not None
                        await conn.migrate_to_path(home.relayed_path(conn.peer_id))
                        say(ok=True, relayed=isinstance(conn.path, RelayPath))
                    elif name == "stream":
                        assert conn is not None
                        interval = 1.0 / command["rate"]
                        start = time.monotonic()
                        for i in range(command["n"]):
                            await anyio.sleep(max(start + i * interval - time.monotonic(), 0))
                            await conn.send(STAMP.pack(time.monotonic(), i))
                        say(ok=True, relayed=isinstance(conn.path, RelayPath))
                    elif name == "report":
                        latencies, receiver.latencies = receiver.latencies, []
                        say(latencies_ms=[round(x, 3) for x in latencies])
                    elif name == "quit":
                        say(ok=True)
                        break
            except Exception as exc:  # reported to the benchmark, which stops with it
                say(error=f"{type(exc).__name__}: {exc}")
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(
        main,
        (sys.argv[1], int(sys.argv[2])),
        bytes.fromhex(sys.argv[3]),
        bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else None,
        sys.argv[5] if len(sys.argv) > 5 else "punch",
    )
