"""One discovery peer in its own process, driven by JSON lines (used by test_discovery_netns.py).

argv: BACKEND NODE_ID_SEED PORT NAME [INTERFACE ...]   (no interface: all of the namespace's)
stdin:  {"advertise": ["<hex tag>", ...]}  |  {"quit": true}
stdout: {"event": "ready", "available": bool, "node_id": str}
        {"event": "found", "node_id", "name", "addresses", "tags": [hex], "removed"}
        {"event": "advertised", "tags": [hex]}      (after an advertise command was taken)
        {"event": "bye", "statistics": {...}}
The discovery's log goes to stderr, one line per record.
"""

from __future__ import annotations

import json
import logging
import sys

import anyio
import attrs

from aetherflow_node._discovery import open_discovery
from aetherflow_sdk._identity import Identity, format_node_id


def _say(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def _main(node_seed: int, port: int, name: str, interfaces: list[str] | None) -> None:
    node_id = format_node_id(Identity.from_private_bytes(node_seed.to_bytes(32, "big")).node_id)
    async with open_discovery(node_id=node_id, port=port, interfaces=interfaces, name=name) as disc:
        _say({"event": "ready", "available": disc.available, "node_id": node_id})

        async def report() -> None:
            async for found in disc.found():
                _say(
                    {
                        "event": "found",
                        "node_id": found.node_id,
                        "name": found.name,
                        "addresses": [list(a) for a in found.addresses],
                        "tags": sorted(t.hex() for t in found.tags),
                        "removed": found.removed,
                    }
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(report)
            stdin = anyio.wrap_file(sys.stdin)
            async for line in stdin:
                command = json.loads(line)
                if "advertise" in command:
                    disc.advertise(frozenset(bytes.fromhex(t) for t in command["advertise"]))
                    _say({"event": "advertised", "tags": command["advertise"]})
                elif command.get("quit"):
                    break
            tg.cancel_scope.cancel()
        statistics = attrs.asdict(disc.statistics())
    _say({"event": "bye", "statistics": statistics})


def main() -> None:
    backend, seed, port, name, *interfaces = sys.argv[1:]
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("zeroconf").setLevel(logging.ERROR)
    anyio.run(_main, int(seed), int(port), name, interfaces or None, backend=backend)


if __name__ == "__main__":
    main()
