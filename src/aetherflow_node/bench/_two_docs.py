"""``aetherflow bench transport --workload two-docs``: two documents on one Quantum connection.

One document streams sync step 2s (``--step2-mb`` each, back to back, the whole time)
while another sends edits (``--count`` messages of ``--size`` bytes at ``--msg-rate``
per second). The edits' one-way latency is measured in three variants, each on a fresh
emulated link:

* ``edits alone``: the edit channel by itself (the baseline);
* ``two channels``: edits and step 2s on two channels of one connection (fair turns);
* ``one channel``: both on one ordered channel, as when a connection carried one
  message stream for everything: each edit waits behind the step 2 queued before it.

``python -m aetherflow_node.bench._two_docs SPEC_JSON`` runs one peer (like
:mod:`aetherflow_node.bench._workloads`): the receiver prints ``{"ready": true, "port": P}``
and then both print their result as JSON.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import time
from typing import Any

import anyio

from aetherflow_sdk import ConnectionClosed
from aetherflow_sdk.quantum import Channel, QuantumConfig, open_endpoint

VARIANTS = ("edits alone", "two channels", "one channel")
_STAMP = struct.Struct("!BId")  # kind (edit / step 2), index, sender's monotonic time
_EDIT, _STEP2 = 1, 2
_DONE = b"done"


def _config(spec: dict[str, Any]) -> QuantumConfig:
    return QuantumConfig(fec=spec.get("fec", "auto"))


async def _server(spec: dict[str, Any]) -> dict[str, Any]:
    variant = spec["variant"]
    async with open_endpoint((spec["host"], 0), config=_config(spec)) as endpoint:
        _emit({"ready": True, "port": endpoint.local_address[1]})
        connection = await endpoint.accept()
        edits = await connection.accept_channel()
        steps: Channel | None = await connection.accept_channel() if variant == "two channels" else None
        latencies: list[float] = []
        seen: set[int] = set()
        step2: dict[str, float] = {"bytes": 0, "first": 0.0, "last": 0.0}

        def step2_arrived(message: bytes) -> None:
            if not step2["bytes"]:
                step2["first"] = _STAMP.unpack_from(message)[2]
            step2["bytes"] += len(message)
            step2["last"] = time.monotonic()

        async def drain_steps(channel: Channel) -> None:
            while True:
                step2_arrived(await channel.receive())

        with anyio.move_on_after(spec["deadline"]):
            async with anyio.create_task_group() as tg:
                if steps is not None:
                    tg.start_soon(drain_steps, steps)
                while len(seen) < spec["count"]:
                    message = await edits.receive()
                    kind, index, sent_at = _STAMP.unpack_from(message)
                    if kind == _STEP2:
                        step2_arrived(message)
                    elif index not in seen:
                        seen.add(index)
                        latencies.append(time.monotonic() - sent_at)
                tg.cancel_scope.cancel()
        stats = connection.statistics()
        await connection.send(_DONE)
        with anyio.move_on_after(10), contextlib.suppress(ConnectionClosed):
            while True:  # until the sender has read DONE and gone
                await connection.receive()
    duration = step2["last"] - step2["first"]
    return {
        "received": len(seen),
        "latencies": latencies,
        "step2_bytes": step2["bytes"],
        "step2_duration": duration if step2["bytes"] else None,
        "fec_recoveries": stats.fec_recovered_packets,
    }


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    variant = spec["variant"]
    local = "127.0.0.1" if spec["host"].startswith("127.") else "0.0.0.0"
    async with open_endpoint((local, 0), config=_config(spec), accept=False) as endpoint:
        connection = await endpoint.connect((spec["host"], spec["port"]))
        edits = await connection.open_channel(b"document-edits")
        steps = {"edits alone": None, "two channels": None, "one channel": edits}[variant]
        if variant == "two channels":
            steps = await connection.open_channel(b"document-step2")
        step2_sent = 0

        async def stream_steps(channel: Channel) -> None:
            nonlocal step2_sent
            body = bytes(spec["step2_bytes"] - _STAMP.size)
            while True:  # ends when the edits are done (cancelled), bounded by the edit schedule
                await channel.send(_STAMP.pack(_STEP2, step2_sent, time.monotonic()) + body)
                step2_sent += 1

        padding = bytes(spec["size"] - _STAMP.size)
        async with anyio.create_task_group() as tg:
            if steps is not None:
                tg.start_soon(stream_steps, steps)
            start = time.monotonic()
            for index in range(spec["count"]):
                wait = start + index / spec["rate"] - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                await edits.send(_STAMP.pack(_EDIT, index, time.monotonic()) + padding)
            tg.cancel_scope.cancel()
        acknowledged = False
        with anyio.move_on_after(spec["deadline"] + 5):
            acknowledged = await connection.receive() == _DONE
        stats = connection.statistics()
        connection.abort("benchmark done")  # the step 2 still queued is of no interest
    return {
        "sent": spec["count"],
        "app_bytes": spec["count"] * spec["size"] + step2_sent * spec["step2_bytes"],
        "step2_sent": step2_sent,
        "acknowledged": acknowledged,
        "retransmits": stats.packets_retransmitted,
        "fec_recoveries": stats.fec_recovered_packets,
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run one peer (see the module docstring); errors become ``{"error": ...}``."""
    spec: dict[str, Any] = json.loads((argv or sys.argv)[1])
    role = _server if spec["role"] == "server" else _client
    try:
        result = anyio.run(role, spec, backend="trio")
    except Exception as exc:
        _emit({"error": f"two-docs {spec['role']}: {_describe(exc)}"})
        return 1
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
