"""``aetherflow bench relay --scenario direct|paths``: the relay across real NATs and a slow link.

Both run real processes in network namespaces (root): an ``aetherflow relay`` and nodes
(:mod:`aetherflow_relay._bench_nat_node`: a Quantum endpoint with a home-relay registration).

``direct``: the time from a node's start to a direct path through cone NATs. The relay is in
the public namespace, node B (already registered) behind one cone NAT; node A starts behind the
other, registers, and reaches B by ``--method``: ``punch`` (the relay coordinates a hole punch,
A connects to the address it proved) or ``upgrade`` (A connects through the relay, then
``HomeRelay.upgrade`` punches and migrates that connection), or both in turn. Measured from A's
process start (as the benchmark spawns it) to the first usable connection and to its being on
the direct path (goal <= 2 s), split into interpreter start and imports, registration, connect
and the move to direct; then A sends messages to B over that connection while the relay's
forwarded-packet counter stays still (the path is direct). ``--runs`` node starts per method,
each with a fresh identity and socket.

``paths``: relayed against direct message latency over one emulated link (``--delay`` ms one
way, ``--loss`` % each direction). Node A is on one side of the link; node B and the relay on
the other, so both paths cross the link once each way and the difference is what the relay adds
(its hop and its forwarding), not a detour's distance. A connects to B directly and sends
``--messages`` stamped messages (50 a second); then the same connection moves onto the relay
(``migrate_to_path``) and sends as many again. B records each message's one-way latency.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aetherflow_relay._bench import load_average, percentile
from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk.testing import Namespace, NatTopology

GOAL_DIRECT_S = 2.0
RELAY_PORT = 3340
METRICS = "127.0.0.1:9465"  # inside the relay's namespace
STREAM_RATE = 50.0  # messages per second in the paths scenario
READ_TIMEOUT = 60.0


class _Process:
    """A process in a namespace that speaks JSON lines on stdin/stdout (read by a thread, so that
    a wait for a line is bounded)."""

    def __init__(self, namespace: Namespace, argv: list[str]) -> None:
        self.process: subprocess.Popen[str] = namespace.popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self._lines.put(text)
        self._lines.put("")

    def line(self) -> str:
        try:
            text = self._lines.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            text = ""
        if not text:
            self.process.kill()
            self.process.wait()
            error = self.process.stderr.read() if self.process.stderr else ""
            tail = error.strip().splitlines()[-1:] or [f"no answer in {READ_TIMEOUT:g} s"]
            raise LocalProtocolError(f"a process of the benchmark failed: {tail[0]}")
        return text

    def read(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.line())
        if "error" in answer:
            raise LocalProtocolError(f"a node of the benchmark failed: {answer['error']}")
        return answer

    def ask(self, **command: object) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read()


class _Daemon:
    """An ``aetherflow node`` process; every line it prints (stdout and stderr) is stamped with
    the benchmark's ``time.monotonic()`` as it arrives."""

    def __init__(self, namespace: Namespace, argv: list[str]) -> None:
        self.spawned = time.monotonic()
        self.process: subprocess.Popen[str] = namespace.popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self._lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self._lines.put((time.monotonic(), text))
        self._lines.put((time.monotonic(), ""))

    def wait_for(self, text: str) -> float:
        """When the first line containing ``text`` arrived (LocalProtocolError after READ_TIMEOUT)."""
        for when, line in self.seen:
            if text in line:
                return when
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            try:
                when, line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line, when = "", 0.0
            if not line:
                last = self.seen[-1][1].strip() if self.seen else "no output"
                raise LocalProtocolError(f"a node of the benchmark never said {text!r} (last: {last})")
            self.seen.append((when, line))
            if text in line:
                return when

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _daemon(namespace: Namespace, data: Path, *args: str) -> _Daemon:
    exe = str(Path(sys.executable).with_name("aetherflow"))
    return _Daemon(namespace, [exe, "node", "--data", str(data), "--listen", "0.0.0.0:0", "--no-discovery",
                               "--log-format", "kv", *args])  # fmt: skip


def _node_runs(topo: NatTopology, relay_route: str, runs: int, tmp: Path) -> list[dict[str, Any]]:
    """``aetherflow node`` B joins A's document by a ticket (which names A's home relay) and
    reaches A the way the node's mesh does: the ticket's direct addresses (A's private ones,
    each given Limits.direct_timeout), then the relay, then an upgrade to a direct path."""
    exe = str(Path(sys.executable).with_name("aetherflow"))
    a = _daemon(topo.a.host, tmp / "a", "--name", "a", "--relay", relay_route, "--serve", "notes")
    results = []
    try:
        a.wait_for("registered with relay")
        shared = subprocess.run(
            [exe, "share", "notes", "--data", str(tmp / "a"), "--user", "b", "--perm", "rw"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if shared.returncode != 0:
            raise LocalProtocolError(f"aetherflow share failed: {shared.stderr.strip()}")
        ticket = shared.stdout.strip()
        from aetherflow_sdk.session import Ticket

        direct_addresses = len(Ticket.parse(ticket).direct)
        for n in range(runs):
            load = load_average()
            b = _daemon(topo.b.host, tmp / f"b{n}", "--name", "b", "--join", ticket)
            try:
                upgraded = b.wait_for("peer link upgraded to a direct path")
                registered = b.wait_for("registered with relay")
                joined = b.wait_for("joined 'notes'")
            finally:
                b.stop()
            results.append({
                "method": "node", "load_average": load,
                "start_to_direct_s": upgraded - b.spawned,
                "start_to_registered_s": registered - b.spawned,
                "start_to_joined_s": joined - b.spawned,
                "ticket_direct_addresses": direct_addresses,
            })  # fmt: skip
    finally:
        a.stop()
    return results


def _start_relay(namespace: Namespace, host: str) -> tuple[_Process, str]:
    exe = str(Path(sys.executable).with_name("aetherflow"))
    relay = _Process(namespace, [exe, "relay", "--listen", f"{host}:{RELAY_PORT}", "--metrics", METRICS])
    first = relay.line().split()
    relay.line()  # the metrics line
    from aetherflow_sdk._identity import parse_node_id

    return relay, parse_node_id(first[1]).hex()


def _node(
    namespace: Namespace, relay_host: str, relay_id: str, dial: str | None = None, method: str = "punch"
) -> _Process:
    argv = [sys.executable, "-m", "aetherflow_relay._bench_nat_node", relay_host, str(RELAY_PORT), relay_id]
    return _Process(namespace, argv + ([dial, method] if dial else []))


def _relayed_packets(namespace: Namespace) -> float:
    code = (
        "import urllib.request;"
        f"print(urllib.request.urlopen('http://{METRICS}/metrics', timeout=10).read().decode())"
    )
    text = namespace.run([sys.executable, "-c", code]).stdout
    for line in text.splitlines():
        if line.startswith("aetherflow_relay_relayed_packets_total "):
            return float(line.split()[1])
    raise LocalProtocolError("the relay's /metrics has no aetherflow_relay_relayed_packets_total")


def _stop(processes: list[_Process]) -> None:
    for p in processes:
        if p.process.poll() is None:
            p.process.terminate()
    for p in processes:
        try:
            p.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait()


def _check_root() -> None:
    from aetherflow_sdk.testing import nat_available

    reason = nat_available()
    if reason is not None:
        raise LocalProtocolError(f"this scenario runs in network namespaces: {reason}")


METHODS = {
    "punch": "HomeRelay.punch, then endpoint.connect to the punched address",
    "upgrade": "HomeRelay.connect_relayed (usable at once), then HomeRelay.upgrade (punch, migrate)",
    "node": "aetherflow node --join TICKET: the mesh dials the ticket's direct addresses, then the "
            "relay, then upgrades (until it logs 'peer link upgraded to a direct path')",
}


def _direct(args: argparse.Namespace) -> dict[str, Any]:
    from aetherflow_sdk.testing import nat_topology
    from aetherflow_sdk.testing._nat import PUBLIC_ADDRESS

    if args.runs < 1:
        raise LocalProtocolError("--runs must be at least 1")
    methods = list(METHODS) if args.method == "all" else [args.method]
    sdk_methods = [m for m in methods if m != "node"]
    runs = []
    processes: list[_Process] = []
    with nat_topology("cone", "cone") as topo:
        try:
            relay, relay_id = _start_relay(topo.public, PUBLIC_ADDRESS)
            processes.append(relay)
            b = _node(topo.b.host, PUBLIC_ADDRESS, relay_id)
            processes.append(b)
            b_id = b.read()["node_id"]
            for _ in range(args.runs):
                for method in sdk_methods:
                    load = load_average()
                    spawned = time.monotonic()
                    a = _node(topo.a.host, PUBLIC_ADDRESS, relay_id, dial=b_id, method=method)
                    processes.append(a)
                    hello, reached = a.read(), a.read()
                    before = _relayed_packets(topo.public)
                    a.ask(cmd="stream", n=20, rate=100.0)
                    time.sleep(0.3)  # the last messages in flight
                    received = len(b.ask(cmd="report")["latencies_ms"])
                    relayed = _relayed_packets(topo.public) - before
                    a.ask(cmd="quit")
                    runs.append({
                        "method": method, "load_average": load,
                        "start_to_direct_s": reached["t_direct"] - spawned,
                        "start_to_connected_s": reached["t_connected"] - spawned,
                        "startup_s": hello["t_main"] - spawned,
                        "registration_s": hello["t_registered"] - hello["t_main"],
                        "connect_s": reached["t_connected"] - hello["t_registered"],
                        "to_direct_s": reached["t_direct"] - reached["t_connected"],
                        "direct": not reached["relayed"],
                        "messages_received": received,
                        "relayed_packets_meanwhile": int(relayed),
                    })  # fmt: skip
            if "node" in methods:
                import tempfile

                from aetherflow_sdk._identity import format_node_id

                route = f"{format_node_id(bytes.fromhex(relay_id))}@{PUBLIC_ADDRESS}:{RELAY_PORT}"
                with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
                    node_runs = _node_runs(topo, route, args.runs, Path(tmp))
        finally:
            _stop(processes)
    print("start to a direct path through two cone NATs (iptables MASQUERADE in network namespaces): "
          "node A starts, registers with the relay, reaches B (registered) by METHOD")  # fmt: skip
    print(f"{'method':<8} {'start->direct':>13} {'->connected':>11} {'startup':>8} {'register':>8} "
          f"{'connect':>8} {'->direct':>8} {'msgs':>5} {'relayed':>7} {'load':>5}")  # fmt: skip
    for r in runs:  # the SDK methods
        print(f"{r['method']:<8} {r['start_to_direct_s']:>12.2f}s {r['start_to_connected_s']:>10.2f}s "
              f"{r['startup_s']:>7.2f}s {r['registration_s']:>7.2f}s {r['connect_s']:>7.2f}s "
              f"{r['to_direct_s']:>7.2f}s {r['messages_received']:>5} {r['relayed_packets_meanwhile']:>7} "
              f"{r['load_average']:>5.2f}")  # fmt: skip
    if "node" in methods:
        for r in node_runs:
            print(f"{'node':<8} {r['start_to_direct_s']:>12.2f}s   (from start: joined "
                  f"{r['start_to_joined_s']:.2f} s, registered {r['start_to_registered_s']:.2f} s; the "
                  f"ticket's {r['ticket_direct_addresses']} direct addresses)  "
                  f"load {r['load_average']:.2f}")  # fmt: skip
        runs += node_runs
    for method in methods:
        print(f"  {method}: {METHODS[method]}")
    print(f"goal: start -> direct <= {GOAL_DIRECT_S:g} s; 'relayed' is the relay's forwarded packets "
          "while 20 messages then went over the direct path")  # fmt: skip
    return {"scenario": "direct", "goal_s": GOAL_DIRECT_S, "cpus": os.cpu_count(), "runs": runs,
            "methods": {m: METHODS[m] for m in methods}}  # fmt: skip


def _summary(latencies: list[float], expected: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"p50_ms": percentile(ordered, 0.5), "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else float("nan"), "received": len(ordered),
            "expected": expected}  # fmt: skip


def _paths(args: argparse.Namespace) -> dict[str, Any]:
    from aetherflow_sdk.testing import LinkConfig, emulated_link

    if args.messages < 10 or args.delay < 0 or not 0 <= args.loss < 100:
        raise LocalProtocolError("--messages must be at least 10, --delay >= 0 ms, --loss 0 to < 100 %")
    config = LinkConfig(delay=args.delay / 1000, loss=args.loss / 100)
    load = load_average()
    processes: list[_Process] = []
    with emulated_link(config, seed=args.seed) as link:
        try:
            relay, relay_id = _start_relay(link.ns_b, link.address_b)
            processes.append(relay)
            b = _node(link.ns_b, link.address_b, relay_id)
            a = _node(link.ns_a, link.address_b, relay_id)
            processes += [b, a]
            b_hello, a_hello = b.read(), a.read()
            b.ask(cmd="listen_relayed", peer=a_hello["node_id"])
            # B's socket as the relay, on B's side of the link, sees it: where A dials B directly.
            a.ask(cmd="connect", address=b_hello["observed"], peer=b_hello["node_id"])
            stream = {"cmd": "stream", "n": args.messages, "rate": STREAM_RATE}

            def timed(path: str) -> dict[str, Any]:
                link_before, relay_before = link.statistics(), _relayed_packets(link.ns_b)
                answer = a.ask(**stream)
                if answer["relayed"] != (path == "relayed"):
                    raise LocalProtocolError(f"the connection was not on the {path} path")
                time.sleep(1.0)  # retransmissions of the last messages
                summary = _summary(b.ask(cmd="report")["latencies_ms"], args.messages)
                link_after = link.statistics()
                summary["link_dropped"] = sum(
                    getattr(link_after, d).dropped_loss - getattr(link_before, d).dropped_loss
                    for d in ("a_to_b", "b_to_a")
                )
                summary["relayed_packets"] = int(_relayed_packets(link.ns_b) - relay_before)
                return summary

            direct = timed("direct")
            a.ask(cmd="to_relay")
            relayed = timed("relayed")
            a.ask(cmd="quit")
        finally:
            _stop(processes)
    ratio = {"p50": relayed["p50_ms"] / direct["p50_ms"], "p99": relayed["p99_ms"] / direct["p99_ms"]}
    print(f"relayed vs direct: one emulated link, {args.delay:g} ms one way, {args.loss:g} % loss each "
          f"way; B and the relay on one side; {args.messages} messages at {STREAM_RATE:g}/s per path, "
          f"load {load:.2f}")  # fmt: skip
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'received':>9} {'link drops':>10} "
          f"{'via relay':>9}")  # fmt: skip
    for name, s in (("direct", direct), ("relayed", relayed)):
        print(f"{name:<8} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f} "
              f"{s['received']:>4}/{s['expected']:<4} {s['link_dropped']:>10} "
              f"{s['relayed_packets']:>9}")  # fmt: skip
    print(f"{'ratio':<8} {ratio['p50']:>7.2f}x {ratio['p99']:>7.2f}x   (relayed / direct; 'via relay' is "
          "the relay's forwarded-packet counter)")  # fmt: skip
    return {"scenario": "paths", "delay_ms": args.delay, "loss_percent": args.loss,
            "messages": args.messages, "rate": STREAM_RATE, "load_average": load, "cpus": os.cpu_count(),
            "direct": direct, "relayed": relayed, "ratio": ratio}  # fmt: skip


def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    _check_root()
    return _direct(args) if args.scenario == "direct" else _paths(args)
