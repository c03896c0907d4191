"""``aetherflow bench relay``: one relay process, many simulated peers, forwarding latency and cost.

A real ``aetherflow relay`` process on loopback; ``--peers`` simulated nodes spread over
``--processes`` client processes, each node with its own Quantum endpoint, connection and
registration. During the timed window every node sends ``--rate`` SEND frames per second (a
``--size``-byte payload stamped with ``time.monotonic()``, which every process of one machine
shares) to a partner node through the relay; the receiver takes the DELIVER from its raw handler
and records the one-way latency. Reported: forwarding latency p50/p99/max (goal p99 <= 5 ms on
loopback), frames lost, the relay's CPU during the window (from /proc) and its resident memory per
registered client (RSS after registration minus RSS before, over the clients).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand

GOAL_P99_MS = 5.0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="simulated nodes (default 1000)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second per node (default 10)")
    parser.add_argument("--size", type=int, default=200, help="payload bytes (default 200)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--client", nargs=4, metavar=("HOST", "PORT", "RELAY_ID", "COUNT"), help=argparse.SUPPRESS
    )


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _run(args: argparse.Namespace) -> int:
    if args.client:
        from aetherflow_relay._bench_peers import run_peer_process

        host, port, relay_id, count = args.client
        run_peer_process((host, int(port)), bytes.fromhex(relay_id), int(count), rate=args.rate,
                         size=args.size, duration=args.duration, seed=args.seed)  # fmt: skip
        return 0
    if args.peers < 2 or args.processes < 1 or args.peers % (2 * args.processes):
        raise SystemExit("aetherflow bench relay: --peers must be a positive multiple of 2 x --processes")
    exe = str(Path(sys.executable).with_name("aetherflow"))
    relay = subprocess.Popen(
        [exe, "relay", "--listen", "127.0.0.1:0", "--max-clients", str(args.peers + 10),
         "--max-pending", str(args.peers + 10)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    clients: list[subprocess.Popen[str]] = []
    try:
        assert relay.stdout is not None
        first = relay.stdout.readline().split()
        from aetherflow_sdk._identity import parse_node_id

        relay_id = parse_node_id(first[1]).hex()
        host, port = first[-1].rsplit(":", 1)
        rss_before = _proc_rss(relay.pid)
        per = args.peers // args.processes
        started = time.monotonic()
        for n in range(args.processes):
            clients.append(subprocess.Popen(
                [exe, "bench", "relay", "--client", host, port, relay_id, str(per), "--rate", str(args.rate),
                 "--size", str(args.size), "--duration", str(args.duration), "--seed", str(args.seed + n)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"aetherflow bench relay: a client process failed ({line.strip()!r})")
        registered_in = time.monotonic() - started
        rss_after = _proc_rss(relay.pid)
        cpu_before, window_start = _proc_cpu(relay.pid), time.monotonic()
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        reports = []
        for client in clients:
            assert client.stdout is not None
            reports.append(json.loads(client.stdout.readline()))
        window = time.monotonic() - window_start
        cpu = _proc_cpu(relay.pid) - cpu_before
    finally:
        for client in clients:
            client.kill()
            client.wait()
        relay.terminate()
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.kill()
    latencies = sorted(ms for r in reports for ms in r["latencies_ms"])
    sent = sum(r["sent"] for r in reports)
    result: dict[str, Any] = {
        "peers": args.peers, "processes": args.processes, "rate_per_peer": args.rate, "size": args.size,
        "duration_s": args.duration, "sent": sent, "received": len(latencies),
        "lost": sent - len(latencies),
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                       "max": latencies[-1] if latencies else float("nan")},
        "goal_p99_ms": GOAL_P99_MS,
        "relay_cpu_percent": 100.0 * cpu / window,
        "relay_cpu_us_per_packet": 1e6 * cpu / max(len(latencies), 1),
        "clients_cpu_percent": 100.0 * sum(r["cpu_s"] for r in reports) / window,
        "clients_closed": sum(r["closed"] for r in reports),
        "relay_rss_bytes_per_client": (rss_after - rss_before) / args.peers,
        "relay_rss_mb": rss_after / 2**20,
        "registration_s": registered_in,
        "cpus": os.cpu_count(),
    }  # fmt: skip
    lat = result["latency_ms"]
    print(f"relay forwarding: {args.peers} peers x {args.rate:g} msg/s ({args.processes} client processes), "
          f"{args.duration:g} s, {args.size}-byte payloads")  # fmt: skip
    print(f"{'latency p50':<28}{lat['p50']:>10.2f} ms")
    print(f"{'latency p99 (goal <= 5 ms)':<28}{lat['p99']:>10.2f} ms")
    print(f"{'latency max':<28}{lat['max']:>10.2f} ms")
    print(f"{'frames sent / lost':<28}{sent:>10} / {result['lost']}")
    print(f"{'relay CPU':<28}{result['relay_cpu_percent']:>10.1f} % of one core "
          f"({result['relay_cpu_us_per_packet']:.1f} us per packet)")  # fmt: skip
    print(f"{'client processes CPU':<28}{result['clients_cpu_percent']:>10.1f} % of one core")
    print(f"{'relay memory per client':<28}{result['relay_rss_bytes_per_client'] / 1024:>10.1f} KiB "
          f"(RSS {result['relay_rss_mb']:.1f} MiB)")  # fmt: skip
    print(f"{'registration of all peers':<28}{registered_in:>10.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


command = Subcommand(
    help="relay forwarding latency, CPU and memory with many simulated peers",
    add_arguments=_add_arguments,
    run=_run,
)
