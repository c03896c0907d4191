"""One node of ``aetherflow bench mesh``, in its own process (``python -m`` with a JSON spec).

It opens a node on ``spec["host"]``, creates the benchmark document (index 0) or joins it by
ticket, and then follows the coordinator's commands on stdin, one JSON line each:

``{"cmd": "start", "at": T}``  edit at ``rate`` edits/s for ``duration`` s from monotonic time T,
                               then wait (bounded) until every other node's edits are visible
``{"cmd": "idle", "seconds": S}``  measure this process's CPU time over S idle seconds
``{"cmd": "quit"}``

Each edit inserts a unique marker ``‹node.seq›``; the time it is sent and the time each remote
marker first appears in a remote change are both ``time.monotonic()``, which all processes (and
network namespaces) of one machine share, so the coordinator subtracts them directly.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from typing import Any

import anyio

from aetherflow_node import open_node
from aetherflow_sdk.replica import Insert

MARKER = re.compile(r"‹(\d+)\.(\d+)›")


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _wait(node: Any, condition: Any, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not condition():
            activity = node.activity
            with anyio.move_on_after(0.5):  # also re-check a condition the node does not signal
                await activity.wait()
        return True
    return False


def _totals(node: Any) -> dict[str, int]:
    s = node.statistics()
    return {
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "datagrams_sent": s.datagrams_sent,
        "retransmits": sum(p.packets_retransmitted for p in s.peers),
        "fec_recoveries": sum(p.fec_recovered_packets for p in s.peers),
    }


async def _run(spec: dict[str, Any]) -> None:
    index, n = spec["index"], spec["n"]
    stdin = anyio.wrap_file(sys.stdin)
    async with open_node(
        data_dir=spec["data_dir"], name=f"n{index}", listen=(spec["host"], 0), discovery=False
    ) as node:
        if index == 0:
            doc = await node.open_document("bench")
            tickets = [node.share(doc, user=f"n{i}", perm="rw") for i in range(1, n)]
        else:
            doc = await node.open_document(spec["ticket"])
            tickets = []
        _emit({"event": "ready", "tickets": tickets, "address": list(node.address)})
        meshed = await _wait(node, lambda: len(node.peers) >= n - 1, spec["mesh_timeout"])
        _emit({"event": "meshed", "peers": len(node.peers), "full": meshed})

        seen: dict[str, float] = {}
        sent: dict[int, float] = {}
        expected = (n - 1) * spec["edits"]

        async def watch() -> None:
            async with doc.changes() as changes:
                async for change in changes:
                    if change.local:
                        continue
                    now = time.monotonic()
                    for op in change.delta:
                        if isinstance(op, Insert):
                            for m in MARKER.finditer(op.text):
                                seen.setdefault(f"{m.group(1)}.{m.group(2)}", now)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async for line in stdin:
                command = json.loads(line)
                if command["cmd"] == "start":
                    rng = random.Random(spec["seed"] * 1000 + index)
                    before = _totals(node)
                    cpu_before, wall_before = time.process_time(), time.monotonic()
                    # Nodes are staggered within one edit interval so they do not edit in lockstep.
                    start = command["at"] + index / (spec["rate"] * n)
                    for k in range(spec["edits"]):
                        delay = start + k / spec["rate"] - time.monotonic()
                        if delay > 0:
                            await anyio.sleep(delay)
                        sent[k] = time.monotonic()
                        doc.insert(rng.randint(0, len(doc)), f"‹{index}.{k}›")
                    complete = await _wait(node, lambda: len(seen) >= expected, spec["settle_timeout"])
                    after = _totals(node)
                    busy = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
                    _emit(
                        {
                            "event": "edited",
                            "cpu": busy,
                            "sent": sent,
                            "seen": seen,
                            "complete": complete,
                            "traffic": {k: after[k] - before[k] for k in after},
                            "peers": len(node.peers),
                            "text_sha256": hashlib.sha256(doc.text.encode()).hexdigest(),
                        }
                    )
                elif command["cmd"] == "idle":
                    before = _totals(node)
                    cpu, wall = time.process_time(), time.monotonic()
                    await anyio.sleep(command["seconds"])
                    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                    after = _totals(node)
                    _emit(
                        {
                            "event": "idle",
                            "cpu": cpu / wall,
                            "datagrams_sent": after["datagrams_sent"] - before["datagrams_sent"],
                            "text_sha256": hashlib.sha256(doc.text.encode()).hexdigest(),
                        }
                    )
                elif command["cmd"] == "quit":
                    break
            tg.cancel_scope.cancel()


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        anyio.run(_run, spec, backend="trio")
    except Exception as exc:  # reported to the coordinator as one line
        _emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
