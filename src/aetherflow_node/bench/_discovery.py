"""``aetherflow bench discovery``: how long two nodes on one LAN take to find each other.

Goal: two nodes find each other (and can start syncing) within 3 s. Each round
creates two network namespaces joined by a veth pair (root), starts one discovery
process in each (zeroconf bound to its veth end; one on trio, one on asyncio), and
measures, on the shared ``time.monotonic()``, from launching both processes to the
moment each has resolved the other with the document tag it advertises (Python
start-up and mDNS probing included; the goal is judged on this), and from the
moment the later one finished registering (usually 0: each hears the other's
announcements while it probes).

``python -m aetherflow_node.bench._discovery BACKEND SEED PORT ADDRESS PEER_SEED`` runs one side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from aetherflow_node._cli import Subcommand
from aetherflow_node._discovery import document_tag, open_discovery
from aetherflow_node.bench._report import percentile
from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id

GOAL_S = 3.0
SECRET = b"bench discovery document secret!"


def _identity(seed: int) -> Identity:
    return Identity.from_private_bytes(seed.to_bytes(32, "big"))


async def _side(backend_seed: int, port: int, address: str, peer_seed: int, timeout: float) -> dict[str, Any]:
    me = _identity(backend_seed)
    peer_id = format_node_id(_identity(peer_seed).node_id)
    tag = document_tag(SECRET, me.node_id)
    async with open_discovery(
        node_id=format_node_id(me.node_id), port=port, interfaces=[address], tags=frozenset({tag})
    ) as disc:
        registered = time.monotonic()
        found_at = None
        with anyio.move_on_after(timeout), disc.found() as found:
            async for peer in found:
                if peer.node_id == peer_id and peer.tags and not peer.removed:
                    found_at = time.monotonic()
                    break
        print(json.dumps({"found": found_at}), flush=True)
        # Stay on the LAN until the coordinator has both answers: leaving sends a goodbye,
        # and the other side would see us removed before it had found us.
        with anyio.move_on_after(timeout):
            await anyio.wrap_file(sys.stdin).readline()
        stats = disc.statistics()
        return {
            "registered": registered,
            "found": found_at,
            "available": disc.available,
            "bad_announcements": stats.bad_announcements,
            "announcements": stats.announcements,
        }


def _peer_main(argv: list[str]) -> int:
    backend, seed, port, address, peer_seed, timeout = argv
    started = time.monotonic()
    result = anyio.run(_side, int(seed), int(port), address, int(peer_seed), float(timeout), backend=backend)
    print(json.dumps({**result, "started": started}), flush=True)
    return 0


def run_round(index: int, timeout: float) -> dict[str, Any]:
    from aetherflow_sdk.testing import network_namespace, veth_pair

    with (
        network_namespace("bda") as ns_a,
        network_namespace("bdb") as ns_b,
        veth_pair(ns_a, ns_b, address_a="10.79.7.1", address_b="10.79.7.2") as pair,
    ):
        launched = time.monotonic()
        module = [sys.executable, "-m", "aetherflow_node.bench._discovery"]
        seeds = (1000 + 2 * index, 1001 + 2 * index)
        sides = [
            ns_a.popen(
                [*module, "trio", str(seeds[0]), "4701", pair.address_a, str(seeds[1]), str(timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ),
            ns_b.popen(
                [*module, "asyncio", str(seeds[1]), "4702", pair.address_b, str(seeds[0]), str(timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ),
        ]
        for process in sides:  # each says when it found the other (or gave up)
            assert process.stdout is not None
            process.stdout.readline()
        records = []
        for process in sides:
            out, _ = process.communicate("quit\n", timeout=timeout + 30)
            records.append(json.loads(out.strip().splitlines()[-1]))
    both_registered = max(r["registered"] for r in records)
    found = [r["found"] for r in records]
    return {
        "found_both": all(f is not None for f in found),
        "after_registration_s": max(f - both_registered for f in found) if all(found) else None,
        "after_launch_s": max(f - launched for f in found) if all(found) else None,
        "startup_s": max(r["registered"] - launched for r in records),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="fresh namespace pairs to time (5)")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on a round after (10 s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    from aetherflow_sdk.testing import netns_available

    reason = netns_available()
    if reason is not None:
        raise LocalProtocolError(f"bench discovery needs two network namespaces: {reason}")
    if not 1 <= args.rounds <= 50:
        raise LocalProtocolError("--rounds must be 1..50")
    rounds = [run_round(i, args.timeout) for i in range(args.rounds)]
    times = sorted(r["after_registration_s"] for r in rounds if r["after_registration_s"] is not None)
    launch = sorted(r["after_launch_s"] for r in rounds if r["after_launch_s"] is not None)
    summary = {
        "rounds": len(rounds),
        "found": len(times),
        "p50_s": percentile(times, 0.5) if times else None,
        "max_s": times[-1] if times else None,
        "p50_from_launch_s": percentile(launch, 0.5) if launch else None,
        "max_from_launch_s": launch[-1] if launch else None,
    }
    print(
        f"{'rounds':>6} {'found':>5} {'p50 s':>6} {'max s':>6} {'p50 from start':>14} {'max from start':>14}"
    )
    s = summary
    print(
        f"{s['rounds']:>6} {s['found']:>5} {_cell(s['p50_s']):>6} {_cell(s['max_s']):>6} "
        f"{_cell(s['p50_from_launch_s']):>14} {_cell(s['max_from_launch_s']):>14}"
    )
    worst = summary["max_from_launch_s"]
    met = worst is not None and worst <= GOAL_S and summary["found"] == summary["rounds"]
    print(
        f"goal: found each other within {GOAL_S:g} s of starting both processes "
        f"(Python start-up and mDNS probing included): {'met' if met else 'NOT met'}"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps({"benchmark": "discovery", "summary": summary, "rounds": rounds}, indent=2)
        )
        print(f"wrote {args.json}")
    return 0


command = Subcommand(
    help="two nodes in two namespaces: time until mDNS has each found the other",
    add_arguments=_add_arguments,
    run=_run,
)

if __name__ == "__main__":
    sys.exit(_peer_main(sys.argv[1:]))
