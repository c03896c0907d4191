"""The benchmark workloads, and the process that runs one side of one run.

``python -m aetherflow_node.bench._workloads SPEC_JSON`` runs one role
(``server`` = receiver, ``client`` = sender) of one contender for one
workload, and reports JSON lines on stdout: the server first prints
``{"ready": true, "port": P}``, then both print their result.

Latency is one-way: the sender stamps ``time.monotonic()`` into each message
and the receiver subtracts it from its own ``time.monotonic()``. The two
processes live in different network namespaces of one machine, which share
CLOCK_MONOTONIC, so no clock synchronisation is involved.

When the receiver has everything (or gives up at its deadline) it sends one
short message back; the sender waits for it before reading its transport
counters, so retransmissions at the tail of a run are counted.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any

import anyio
import attrs

from aetherflow_node.bench._contenders import MessagePipe, get_contender

# Every message starts with (index, sender's monotonic time when sent / when the run started).
_STAMP = struct.Struct("!Id")
_DONE = b"done"


@attrs.frozen(kw_only=True)
class PeerSpec:
    """What one peer process runs."""

    contender: str
    """Contender name (see :func:`contender_names`)."""
    role: str
    """``server`` (receives, measures) or ``client`` (sends)."""
    workload: str
    """``messages`` or ``bulk``."""
    host: str
    """Server address (to bind, or to connect to)."""
    port: int = 0
    """Server port (clients only)."""
    count: int = 0
    """messages: how many."""
    size: int = 200
    """messages: bytes per message (bulk: bytes per chunk)."""
    rate: float = 50.0
    """messages: messages per second."""
    bulk_bytes: int = 0
    """bulk: application bytes to transfer."""
    deadline: float = 60.0
    """Seconds the receiver waits for the whole workload before giving up."""


async def send_messages(pipe: MessagePipe, spec: PeerSpec) -> dict[str, Any]:
    """Send ``count`` messages of ``size`` bytes at ``rate`` per second, on a fixed schedule."""
    padding = bytes(spec.size - _STAMP.size)
    start = time.monotonic()
    for index in range(spec.count):
        # A fixed schedule (not sleep(1/rate)): a late send does not shift the ones after it.
        wait = start + index / spec.rate - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
        await pipe.send(_STAMP.pack(index, time.monotonic()) + padding)
    return {"sent": spec.count, "app_bytes": spec.count * spec.size}


async def send_bulk(pipe: MessagePipe, spec: PeerSpec) -> dict[str, Any]:
    """Send ``bulk_bytes`` in ``size``-byte messages as fast as the transport accepts them."""
    chunks = -(-spec.bulk_bytes // spec.size)
    padding = bytes(spec.size - _STAMP.size)
    start = time.monotonic()
    for index in range(chunks):
        await pipe.send(_STAMP.pack(index, start) + padding)
    return {"sent": chunks, "app_bytes": chunks * spec.size}


async def receive_messages(pipe: MessagePipe, spec: PeerSpec) -> dict[str, Any]:
    """Receive until every message arrived (or the deadline); one-way latency per message."""
    latencies: list[float] = []
    seen: set[int] = set()
    with anyio.move_on_after(spec.deadline):
        while len(seen) < spec.count:
            message = await pipe.receive()
            if message is None:
                break
            index, sent_at = _STAMP.unpack_from(message)
            if index not in seen:
                seen.add(index)
                latencies.append(time.monotonic() - sent_at)
    return {"received": len(seen), "latencies": latencies}


async def receive_bulk(pipe: MessagePipe, spec: PeerSpec) -> dict[str, Any]:
    """Receive the bulk transfer; goodput from the sender's start to the last byte."""
    chunks = -(-spec.bulk_bytes // spec.size)
    received = received_bytes = 0
    started = finished = None
    with anyio.move_on_after(spec.deadline):
        while received < chunks:
            message = await pipe.receive()
            if message is None:
                break
            _index, started = _STAMP.unpack_from(message)
            received += 1
            received_bytes += len(message)
            finished = time.monotonic()
    duration = finished - started if finished is not None and started is not None else None
    return {"received": received, "received_bytes": received_bytes, "duration": duration}


async def run_server(spec: PeerSpec) -> dict[str, Any]:
    contender = get_contender(spec.contender)
    async with contender.listen(spec.host) as listener:
        _emit({"ready": True, "port": listener.port})
        pipe = await listener.accept()
        if spec.workload == "messages":
            result = await receive_messages(pipe, spec)
        else:
            result = await receive_bulk(pipe, spec)
        # FEC repairs happen where the data arrives: report the receiver's counters too.
        result["fec_recoveries"] = pipe.statistics().get("fec_recoveries")
        await pipe.send(_DONE)
        # Hold the connection until the sender has read the acknowledgement and closed.
        with anyio.move_on_after(10):
            while await pipe.receive() is not None:
                pass
        return result


async def run_client(spec: PeerSpec) -> dict[str, Any]:
    contender = get_contender(spec.contender)
    async with contender.connect(spec.host, spec.port) as pipe:
        if spec.workload == "messages":
            result = await send_messages(pipe, spec)
        else:
            result = await send_bulk(pipe, spec)
        with anyio.move_on_after(spec.deadline + 5):
            result["acknowledged"] = await pipe.receive() == _DONE
        result.update(pipe.statistics())
        return result


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _describe(exc: BaseException) -> str:
    # Task groups wrap the real failure; name the leaves, not the group.
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Run one peer (see the module docstring); errors become ``{"error": ...}``."""
    spec = PeerSpec(**json.loads((argv or sys.argv)[1]))
    role = run_server if spec.role == "server" else run_client
    try:
        backend = get_contender(spec.contender).backend
        result = anyio.run(role, spec, backend=backend)
    except Exception as exc:
        _emit({"error": f"{spec.contender} {spec.role}: {_describe(exc)}"})
        return 1
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
