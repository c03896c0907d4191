"""A real `aetherflow relay` process killed with SIGKILL mid-session and started again.

Two nodes relayed through it keep their Quantum connection (and its messages) across the
outage: each registers again with the restarted relay (same key, same port), the relayed path
follows the new registration, and every message sent during the outage arrives, in order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aetherflow_node._relay_client import open_home_relay
from aetherflow_sdk import quantum
from aetherflow_sdk._identity import parse_node_id

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))
FAST = quantum.QuantumConfig(keepalive_interval=0.3)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_relay(port: int, key: Path) -> tuple[subprocess.Popen[str], bytes]:
    process = subprocess.Popen(
        [AETHERFLOW, "relay", "--listen", f"127.0.0.1:{port}", "--identity", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("relay "), line
    return process, parse_node_id(line.split()[1])


async def test_nodes_come_back_after_the_relay_is_killed(tmp_path: Path) -> None:
    port = _free_port()
    relay, relay_id = _start_relay(port, tmp_path / "relay.key")
    try:
        with anyio.fail_after(60):
            async with (
                quantum.open_endpoint(config=FAST) as ea,
                quantum.open_endpoint(config=FAST) as eb,
                open_home_relay(ea, ("127.0.0.1", port), relay_id=relay_id, liveness_timeout=1.5) as ha,
                open_home_relay(eb, ("127.0.0.1", port), relay_id=relay_id, liveness_timeout=1.5) as hb,
            ):
                await ha.wait_registered()
                await hb.wait_registered()
                outcome = await ha.punch(eb.node_id)
                assert outcome.address == eb.local_address
                accepted: list[quantum.Connection] = []
                async with anyio.create_task_group() as tg:

                    async def accept() -> None:
                        accepted.append(await eb.accept())

                    tg.start_soon(accept)
                    conn_a = await ea.connect(outcome.address, peer_id=eb.node_id)
                conn_b = accepted[0]
                eb.add_path(hb.relayed_path(ea.node_id))
                await conn_a.migrate_to_path(ha.relayed_path(eb.node_id))
                await conn_a.send(b"before")
                assert await conn_b.receive() == b"before"

                os.kill(relay.pid, signal.SIGKILL)
                relay.wait()
                # Sent while the relay is down: Quantum keeps them until the path works again.
                for i in range(5):
                    await conn_a.send(b"during %d" % i)
                relay, _ = _start_relay(port, tmp_path / "relay.key")
                while ha.registrations < 2 or hb.registrations < 2 or ha.client is None or hb.client is None:
                    await anyio.sleep(0.05)  # bounded by fail_after
                for i in range(5):
                    assert await conn_b.receive() == b"during %d" % i
                await conn_b.send(b"after")
                assert await conn_a.receive() == b"after"
                assert conn_a.path is not None and "RelayPath" in repr(conn_a.path)
    finally:
        relay.kill()
        relay.wait()


@pytest.mark.parametrize("backend", ["asyncio"])
def test_the_home_relay_runs_on_asyncio(backend: str, tmp_path: Path) -> None:
    port = _free_port()
    relay, relay_id = _start_relay(port, tmp_path / "relay.key")

    async def main() -> None:
        with anyio.fail_after(30):
            async with (
                quantum.open_endpoint() as ea,
                open_home_relay(ea, ("127.0.0.1", port), relay_id=relay_id) as ha,
            ):
                client = await ha.wait_registered()
                assert client.observed == ea.local_address

    try:
        anyio.run(main, backend=backend)
    finally:
        relay.kill()
        relay.wait()
