"""``aetherflow bench mesh``: N node processes editing one document together.

Goal: at N = 10 nodes on loopback, each typing 20 edits/s, an edit is visible on
every other node within p99 <= 50 ms; and at idle a node costs next to no CPU.

Each node is its own process (``aetherflow_node.bench._mesh_peer``), a real
``open_node`` on real UDP sockets. Node 0 creates the document and hands every
other node a ticket; the holders then find each other (holder gossip) and form
the mesh. For every edit the figures are:

* **edit to visible on all**: the latest time any other node first saw the edit
  in a remote change, minus the time it was typed (one ``time.monotonic()`` for
  all processes of the machine);
* **bytes per edit per link**: UDP payload bytes all nodes sent during the edit
  phase (acknowledgements included), divided by (edits x (N - 1)): what it costs
  to bring one edit to one more node;
* **CPU at idle**: each process's CPU time over an idle window, as a share of one core.

``--loss P`` runs the same through the userspace link emulator (root): the nodes
alternate between its two namespaces, so every link between an even and an odd
node crosses the lossy link (a node pair in one namespace talks over that
namespace's own interface, without loss).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand
from aetherflow_node.bench._report import percentile
from aetherflow_sdk._errors import AetherFlowError, LocalProtocolError

GOAL_P99_MS = 50.0
PEER_MODULE = "aetherflow_node.bench._mesh_peer"


class _Peer:
    """One node process; its JSON lines are read on a thread into a queue."""

    def __init__(self, argv: list[str], popen: Any = subprocess.Popen) -> None:
        self.process: subprocess.Popen[str] = popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AetherFlowError(f"a mesh node sent no {event!r} within {timeout:.0f} s") from None
            if record is None:
                err = self.process.stderr.read()[-400:] if self.process.stderr else ""
                raise AetherFlowError(f"a mesh node ended before {event!r}: {err.strip()}")
            if record.get("event") == "error":
                raise AetherFlowError(f"a mesh node failed: {record['error']}")
            if record.get("event") == event:
                return record

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"cmd": "quit"})
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def _placement(nodes: int, loss: float, seed: int) -> Iterator[tuple[list[tuple[str, Any]], Any]]:
    """Where each node runs: (listen host, popen) per node, and the emulated link (or None)."""
    if not loss:
        yield [("127.0.0.1", subprocess.Popen)] * nodes, None
        return
    from aetherflow_sdk.testing import LinkConfig, emulated_link, netns_available

    reason = netns_available()
    if reason is not None:
        raise LocalProtocolError(f"--loss needs the link emulator: {reason}")
    with emulated_link(LinkConfig(delay=0.0, loss=loss), seed=seed) as link:
        sides = [(link.address_a, link.ns_a.popen), (link.address_b, link.ns_b.popen)]
        yield [sides[i % 2] for i in range(nodes)], link


def run_mesh(
    *, nodes: int, rate: float, duration: float, idle: float, loss: float, seed: int
) -> dict[str, Any]:
    """One run: start ``nodes`` processes, mesh them, edit, measure, stop. Returns the record."""
    edits = max(1, round(rate * duration))
    load_before = os.getloadavg()[0]
    peers: list[_Peer] = []
    with (
        tempfile.TemporaryDirectory(prefix="af-bench-mesh-") as tmp,
        _placement(nodes, loss, seed) as (places, link),
    ):
        try:
            spec = {"n": nodes, "rate": rate, "edits": edits, "seed": seed, "mesh_timeout": 20.0}
            spec["settle_timeout"] = 10.0 + duration
            tickets: list[str] = []
            for index, (host, popen) in enumerate(places):
                node_spec = {**spec, "index": index, "host": host, "data_dir": str(Path(tmp) / f"n{index}")}
                node_spec["ticket"] = tickets[index - 1] if index else None
                peers.append(_Peer([sys.executable, "-m", PEER_MODULE, json.dumps(node_spec)], popen))
                ready = peers[-1].expect("ready", 30)
                if index == 0:
                    tickets = ready["tickets"]
            meshed = [p.expect("meshed", 40) for p in peers]
            start_at = time.monotonic() + 0.5
            for p in peers:
                p.send({"cmd": "start", "at": start_at})
            edited = [p.expect("edited", duration + 40) for p in peers]
            for p in peers:
                p.send({"cmd": "idle", "seconds": idle})
            idled = [p.expect("idle", idle + 20) for p in peers]
        finally:
            for p in peers:
                p.stop()
        link_stats = link.statistics() if link is not None else None
    result = _summarise(nodes, rate, duration, loss, edits, meshed, edited, idled, link_stats)
    result["machine"] = {"cpus": os.cpu_count(), "load_average_1min_before": load_before}
    return result


def _summarise(
    nodes: int,
    rate: float,
    duration: float,
    loss: float,
    edits: int,
    meshed: list[dict[str, Any]],
    edited: list[dict[str, Any]],
    idled: list[dict[str, Any]],
    link_stats: Any,
) -> dict[str, Any]:
    latencies: list[float] = []
    missing = 0
    for origin, record in enumerate(edited):
        for seq, sent_at in record["sent"].items():
            key = f"{origin}.{seq}"
            seen = [other["seen"].get(key) for i, other in enumerate(edited) if i != origin]
            if any(s is None for s in seen):
                missing += 1
                continue
            latencies.append((max(seen) - sent_at) * 1000.0)
    latencies.sort()
    total_edits = edits * nodes
    wire = sum(r["traffic"]["bytes_sent"] for r in edited)
    cpu = [r["cpu"] * 100.0 for r in idled]
    result: dict[str, Any] = {
        "nodes": nodes,
        "loss": loss,
        "rate_per_node": rate,
        "duration_s": duration,
        "edits": total_edits,
        "visible_on_all": len(latencies),
        "missing": missing,
        "p50_ms": percentile(latencies, 0.50) if latencies else None,
        "p99_ms": percentile(latencies, 0.99) if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "connections_per_node": [m["peers"] for m in meshed],
        "full_mesh": all(m["full"] for m in meshed),
        "wire_bytes": wire,
        "bytes_per_edit_per_link": wire / (total_edits * (nodes - 1)) if nodes > 1 else None,
        "retransmits": sum(r["traffic"]["retransmits"] for r in edited),
        "fec_recoveries": sum(r["traffic"]["fec_recoveries"] for r in edited),
        "editing_cpu_percent_mean": sum(r["cpu"] for r in edited) * 100.0 / len(edited),
        "idle_cpu_percent_mean": sum(cpu) / len(cpu),
        "idle_cpu_percent_max": max(cpu),
        "idle_datagrams_per_node_s": sum(r["datagrams_sent"] for r in idled) / len(idled),
        "converged": len({r["text_sha256"] for r in idled}) == 1,
    }
    if link_stats is not None:
        result["emulator_dropped"] = link_stats.a_to_b.dropped_loss + link_stats.b_to_a.dropped_loss
    return result


def format_table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'nodes':>5} {'loss':>5} {'edits':>6} {'visible':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'B/edit/link':>11} {'edit CPU %':>10} {'idle CPU %':>10} {'converged':>9}"
    )
    lines = [header, "-" * len(header)]
    loads = {f"{r['machine']['load_average_1min_before']:.1f}" for r in results if "machine" in r}
    for r in results:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        per_link = "-" if r["bytes_per_edit_per_link"] is None else f"{r['bytes_per_edit_per_link']:.0f}"
        lines.append(
            f"{r['nodes']:>5} {r['loss'] * 100:>4g}% {r['edits']:>6} {r['visible_on_all']:>8} "
            f"{ms(r['p50_ms']):>7} {ms(r['p99_ms']):>7} {ms(r['max_ms']):>7} {per_link:>11} "
            f"{r['editing_cpu_percent_mean']:>10.1f} "
            f"{r['idle_cpu_percent_mean']:>10.2f} {'yes' if r['converged'] else 'NO':>9}"
        )
    if loads:
        lines.append(
            "(CPU % is of one core, mean per node; machine load average before the runs: "
            f"{', '.join(sorted(loads))})"
        )
    ten = [r for r in results if r["nodes"] == 10 and not r["loss"] and r["p99_ms"] is not None]
    if ten:
        verdict = "met" if ten[0]["p99_ms"] <= GOAL_P99_MS else "NOT met"
        lines.append(
            f"goal p99 <= {GOAL_P99_MS:g} ms at 10 nodes on loopback: {verdict} ({ten[0]['p99_ms']:.1f} ms)"
        )
    return "\n".join(lines)


def _node_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LocalProtocolError(f"--nodes {text!r}: expected counts such as 2,5,10") from None
    if not counts or any(not 2 <= n <= 32 for n in counts):
        raise LocalProtocolError(f"--nodes {text!r}: each count must be 2..32")
    return counts


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", default="2,5,10", help="node counts to run, comma-separated (2,5,10)")
    parser.add_argument("--rate", type=float, default=20.0, help="edits per second per node (20)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of editing per run (5)")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement (3)")
    parser.add_argument(
        "--loss", type=float, default=None, help="also run through the link emulator at this loss (root)"
    )
    parser.add_argument("--loss-only", action="store_true", help="skip the loopback runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of edit positions and emulated loss")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    counts = _node_counts(args.nodes)
    if not 0 < args.rate <= 200 or not 0 < args.duration <= 60 or not 0 < args.idle <= 60:
        raise LocalProtocolError("--rate must be in (0, 200], --duration and --idle in (0, 60] seconds")
    if args.loss is not None and not 0 < args.loss < 1:
        raise LocalProtocolError(f"--loss {args.loss}: a probability in (0, 1), e.g. 0.02")
    losses = ([] if args.loss_only else [0.0]) + ([args.loss] if args.loss is not None else [])
    results = []
    for loss in losses:
        for n in counts:
            print(
                f"mesh: {n} nodes, {args.rate:g} edits/s each, {args.duration:g} s, loss {loss:g} ...",
                flush=True,
            )
            try:
                results.append(
                    run_mesh(
                        nodes=n,
                        rate=args.rate,
                        duration=args.duration,
                        idle=args.idle,
                        loss=loss,
                        seed=args.seed,
                    )
                )
            except AetherFlowError as exc:
                print(f"mesh: {n} nodes at loss {loss:g} failed: {exc}", file=sys.stderr)
                return 1
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"benchmark": "mesh", "runs": results}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


command = Subcommand(
    help="N node processes edit one document: edit-to-visible p50/p99, bytes per edit, idle CPU",
    add_arguments=_add_arguments,
    run=_run,
)
