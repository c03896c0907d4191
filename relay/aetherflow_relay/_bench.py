"""``aetherflow bench relay``: what the relay costs and what it buys.

``--scenario forwarding`` (the default): one real ``aetherflow relay`` process on loopback and,
for each count in ``--peers``, that many simulated nodes spread over ``--processes`` client
processes (see :mod:`aetherflow_relay._bench_peers`: each node has its own identity, socket and
registered Quantum connection; one loop per process drives them all). During the timed window
every node sends ``--rate`` SEND frames per second (a ``--size``-byte payload stamped with
``time.monotonic()``, which every process of one machine shares) to a partner node through the
relay; the partner records the one-way latency when the DELIVER arrives. Reported per count:
forwarding latency p50/p99/max (goal p99 <= 5 ms on loopback), frames lost and the relay's own
drop counters (from its ``/metrics``), the relay's CPU during the window (from /proc, user and
system apart) per forwarded packet, the client processes' CPU apart from it, the relay's
resident memory per registered client, and the load average when the run began.

``--scenario direct`` and ``--scenario paths`` run through real NATs and the link emulator
in network namespaces (root): see :mod:`aetherflow_relay._bench_nat`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand
from aetherflow_sdk._errors import LocalProtocolError

GOAL_P99_MS = 5.0
SCENARIOS = ("forwarding", "direct", "paths")


def _peer_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or any(n < 2 or n % 2 for n in counts):
        raise LocalProtocolError(f"--peers: expected even counts >= 2, e.g. 100,500,1000; got {text!r}")
    return counts


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=SCENARIOS, default="forwarding",
                        help="forwarding: many peers through one relay on loopback (default); direct: "
                             "a node's start to a direct path through cone NATs; paths: relayed vs "
                             "direct latency through the link emulator (these two need root)")  # fmt: skip
    parser.add_argument("--peers", default="100,500,1000",
                        help="forwarding: simulated nodes, a run each (default 100,500,1000)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=4, help="forwarding: client processes (default 4)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="messages per second per node (default 10)")  # fmt: skip
    parser.add_argument("--size", type=int, default=200, help="payload bytes (default 200)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="forwarding: seconds of traffic per run (default 8)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="direct: node starts per method (default 3)")
    parser.add_argument("--method", choices=("punch", "upgrade", "node", "all"), default="all",
                        help="direct: punch then connect; relayed then upgrade; an aetherflow node "
                             "joining by ticket (default: all)")  # fmt: skip
    parser.add_argument("--messages", type=int, default=1000,
                        help="paths: messages timed over each path (default 1000)")  # fmt: skip
    parser.add_argument("--delay", type=float, default=20.0,
                        help="paths: one-way delay of each emulated link in ms (default 20)")  # fmt: skip
    parser.add_argument("--loss", type=float, default=1.0,
                        help="paths: loss of each emulated link in percent (default 1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--client", nargs=4, metavar=("HOST", "PORT", "RELAY_ID", "COUNT"), help=argparse.SUPPRESS
    )


def proc_cpu(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, user ticks, system ticks) of process ``pid``.

    The seconds come from the scheduler (/proc/PID/schedstat, nanoseconds); the ticks (10 ms
    each) only tell how that time splits between user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9, int(fields[11]), int(fields[12])


def _proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load_average() -> float:
    """The 1-minute load average (the machine may be shared: each run states it)."""
    return round(os.getloadavg()[0], 2)


def _relay_counters(metrics_url: str) -> dict[str, float]:
    """The relay's forwarded-packet and drop counters, read from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aetherflow_relay_relayed_packets_total":
                counters["forwarded"] = sample.value
            elif sample.name == "aetherflow_relay_drops_total":
                counters["drop_" + sample.labels["reason"]] = sample.value
    return counters


def _split(peers: int, processes: int) -> list[int]:
    """``peers`` over at most ``processes`` processes, an even count each (partners share a process)."""
    pairs = peers // 2
    processes = max(1, min(processes, pairs))
    return [2 * (pairs // processes + (1 if n < pairs % processes else 0)) for n in range(processes)]


def _forwarding_run(peers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One relay process, ``peers`` simulated nodes, one timed window."""
    exe = str(Path(sys.executable).with_name("aetherflow"))
    load = load_average()
    relay = subprocess.Popen(
        [exe, "relay", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
         "--max-clients", str(peers + 10), "--max-pending", str(peers + 10)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    clients: list[subprocess.Popen[str]] = []
    try:
        assert relay.stdout is not None
        first = relay.stdout.readline().split()
        metrics_url = relay.stdout.readline().split()[-1]
        if len(first) < 2 or not metrics_url.startswith("http"):
            raise LocalProtocolError("the relay process did not start")
        from aetherflow_sdk._identity import parse_node_id

        relay_id = parse_node_id(first[1]).hex()
        host, port = first[-1].rsplit(":", 1)
        rss_before = _proc_rss(relay.pid)
        started = time.monotonic()
        for n, count in enumerate(_split(peers, args.processes)):
            clients.append(subprocess.Popen(
                [exe, "bench", "relay", "--client", host, port, relay_id, str(count),
                 "--rate", str(args.rate), "--size", str(args.size), "--duration", str(args.duration),
                 "--seed", str(args.seed + n)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            if line.strip() != "ready":
                raise LocalProtocolError(f"a client process of the relay benchmark failed ({line.strip()!r})")
        registered_in = time.monotonic() - started
        rss_after = _proc_rss(relay.pid)
        before = _relay_counters(metrics_url)
        (cpu0, user0, sys0), window_start = proc_cpu(relay.pid), time.monotonic()
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        reports = []
        for client in clients:
            assert client.stdout is not None
            reports.append(json.loads(client.stdout.readline()))
        window = time.monotonic() - window_start
        cpu1, user1, sys1 = proc_cpu(relay.pid)
        after = _relay_counters(metrics_url)
    finally:
        for client in clients:
            client.kill()
            client.wait()
        relay.terminate()
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
    latencies = sorted(ms for r in reports for ms in r["latencies_ms"])
    sent = sum(r["sent"] for r in reports)
    forwarded = after.get("forwarded", 0) - before.get("forwarded", 0)
    drops = {k[5:]: int(v - before.get(k, 0)) for k, v in after.items() if k.startswith("drop_")}
    packets = max(forwarded, 1)
    cpu = cpu1 - cpu0
    user_share = (user1 - user0) / max(user1 - user0 + sys1 - sys0, 1)
    return {
        "peers": peers, "processes": len(clients), "rate_per_peer": args.rate, "size": args.size,
        "duration_s": args.duration, "load_average": load,
        "sent": sent, "received": len(latencies), "lost": sent - len(latencies),
        "relay_forwarded": int(forwarded), "relay_drops": {k: v for k, v in drops.items() if v},
        "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                       "max": latencies[-1] if latencies else float("nan")},
        "relay_cpu_percent": 100.0 * cpu / window,
        "relay_cpu_us_per_packet": 1e6 * cpu / packets,
        "relay_cpu_us_per_packet_user": 1e6 * cpu * user_share / packets,
        "relay_cpu_us_per_packet_system": 1e6 * cpu * (1 - user_share) / packets,
        "clients_cpu_percent": 100.0 * sum(r["cpu_s"] for r in reports) / window,
        "clients_closed": sum(r["closed"] for r in reports),
        "relay_rss_bytes_per_client": (rss_after - rss_before) / peers,
        "relay_rss_mb": rss_after / 2**20,
        "registration_s": registered_in,
    }  # fmt: skip


def _forwarding(args: argparse.Namespace) -> dict[str, Any]:
    if args.processes < 1:
        raise LocalProtocolError("--processes must be at least 1")
    if args.rate <= 0 or args.duration <= 0 or not 12 <= args.size <= 1200:
        raise LocalProtocolError("--rate and --duration must be positive, --size 12 to 1200 bytes")
    runs = [_forwarding_run(peers, args) for peers in _peer_counts(args.peers)]
    print(f"relay forwarding on loopback: each peer {args.rate:g} msg/s to a partner through one "
          f"relay process, {args.size}-byte payloads, {args.duration:g} s a run, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'peers':>6} {'procs':>5} {'frames':>7} {'lost':>5} {'drops':>5} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'relay CPU':>9} {'us/pkt (usr+sys)':>17} {'clients CPU':>11} "
          f"{'KiB/client':>10} {'load':>5}")  # fmt: skip
    for r in runs:
        lat = r["latency_ms"]
        split = f"{r['relay_cpu_us_per_packet_user']:.0f}+{r['relay_cpu_us_per_packet_system']:.0f}"
        print(f"{r['peers']:>6} {r['processes']:>5} {r['sent']:>7} {r['lost']:>5} "
              f"{sum(r['relay_drops'].values()):>5} {lat['p50']:>7.2f} {lat['p99']:>7.2f} {lat['max']:>7.2f} "
              f"{r['relay_cpu_percent']:>8.1f}% {r['relay_cpu_us_per_packet']:>7.1f} ({split:>7}) "
              f"{r['clients_cpu_percent']:>10.1f}% {r['relay_rss_bytes_per_client'] / 1024:>10.1f} "
              f"{r['load_average']:>5.2f}")  # fmt: skip
    print(f"goal: p99 <= {GOAL_P99_MS:g} ms; CPU is % of one core; drops are the relay's own counters")
    return {"scenario": "forwarding", "goal_p99_ms": GOAL_P99_MS, "cpus": os.cpu_count(), "runs": runs}


def _run(args: argparse.Namespace) -> int:
    if args.client:
        from aetherflow_relay._bench_peers import run_peer_process

        host, port, relay_id, count = args.client
        run_peer_process((host, int(port)), bytes.fromhex(relay_id), int(count), rate=args.rate,
                         size=args.size, duration=args.duration, seed=args.seed)  # fmt: skip
        return 0
    if args.scenario == "forwarding":
        result = _forwarding(args)
    else:
        from aetherflow_relay import _bench_nat

        result = _bench_nat.run_scenario(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


command = Subcommand(
    help="the relay: forwarding latency and cost with many peers; start to direct path; relayed vs direct",
    add_arguments=_add_arguments,
    run=_run,
)
