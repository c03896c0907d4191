"""``aetherflow bench transport``: Quantum, kernel TCP (cubic, bbr) and aioquic on the same link.

Every run uses a fresh emulated link (:func:`aetherflow_sdk.testing.emulated_link`):
the receiver runs in namespace B, the sender in namespace A, each as its own
process (:mod:`aetherflow_node.bench._workloads`) reporting JSON. A fresh link
per run means every contender starts with an empty queue and the same seeded
loss stream, and the link's byte counters belong to that run alone.
``--loopback`` runs both peers on 127.0.0.1 without an emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand
from aetherflow_node.bench._contenders import contender_names, get_contender
from aetherflow_node.bench._report import Condition, RunResult, format_table, plot
from aetherflow_sdk._errors import AetherFlowError, LocalProtocolError
from aetherflow_sdk.testing import LinkConfig, Namespace, emulated_link, netns_available

_READY_TIMEOUT = 30.0
_PEER_MODULE = "aetherflow_node.bench._workloads"

SWEEP_LOSSES = (0.0, 0.01, 0.02, 0.05, 0.10)
"""The standard matrix (issue 3): messages at 20 ms one-way delay under these losses ..."""
SWEEP_BULK_DELAY_MS, SWEEP_BULK_LOSS, SWEEP_BULK_RATE_MBIT = 20.0, 0.01, 20.0
"""... bulk through 20 Mbit/s, 40 ms RTT, 1 % loss ... (and bulk on loopback)."""


def available_contenders() -> list[str]:
    """Contenders that can run here (Quantum only once its endpoint exists)."""
    names = []
    for name in contender_names():
        try:
            get_contender(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _read_json_line(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        return {"error": f"no answer within {timeout:.0f} s"}
    record: dict[str, Any] = json.loads(line)
    return record


def _last_json(output: str, role: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            return record
    return {"error": f"{role} printed no result"}


def _start(
    namespace: Namespace | None, spec: dict[str, Any], module: str = _PEER_MODULE
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", module, json.dumps(spec)]
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    if namespace is None:
        return subprocess.Popen(argv, **options)
    return namespace.popen(argv, **options)


def _run_peers(
    spec: dict[str, Any],
    server_ns: Namespace | None,
    client_ns: Namespace | None,
    host: str,
    module: str = _PEER_MODULE,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run receiver then sender (``python -m module``); returns their reports (or ``{"error": ...}``)."""
    deadline = spec["deadline"]
    server = _start(server_ns, {**spec, "role": "server", "host": host}, module)
    client: subprocess.Popen[str] | None = None
    try:
        ready = _read_json_line(server, _READY_TIMEOUT)
        if "port" not in ready:
            server.kill()
            _, stderr = server.communicate(timeout=10)
            return {"error": ready.get("error") or stderr.strip()[-300:]}, {}
        client = _start(client_ns, {**spec, "role": "client", "host": host, "port": ready["port"]}, module)
        try:
            client_out, client_err = client.communicate(timeout=deadline + 30)
        except subprocess.TimeoutExpired:
            client.kill()
            client_out, client_err = client.communicate()
        try:
            server_out, server_err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server_out, server_err = server.communicate()
        server_report = _last_json(server_out, "receiver")
        client_report = _last_json(client_out, "sender")
        if "error" in server_report and server_err.strip():
            server_report["error"] += f" ({server_err.strip().splitlines()[-1]})"
        if "error" in client_report and client_err.strip():
            client_report["error"] += f" ({client_err.strip().splitlines()[-1]})"
        return server_report, client_report
    finally:
        for process in (server, client):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _sum_known(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def run_one(
    contender_name: str, condition: Condition, workload: dict[str, Any], module: str = _PEER_MODULE
) -> RunResult:
    """Run one contender under one condition on a fresh link (or loopback)."""
    two_docs = condition.workload == "two-docs"
    contender = get_contender("quantum" if two_docs else contender_name)
    spec = {"contender": contender_name, "workload": condition.workload, **workload}
    link_stats = None
    if condition.loopback:
        server_report, client_report = _run_peers(spec, None, None, "127.0.0.1", module)
    else:
        config = LinkConfig(
            delay=condition.delay_ms / 1000,
            loss=condition.loss,
            rate_bps=condition.rate_mbit * 1e6 if condition.rate_mbit else None,
            queue_packets=condition.queue,
            jitter=condition.jitter_ms / 1000,
        )
        with emulated_link(config, seed=condition.seed) as link:
            server_report, client_report = _run_peers(spec, link.ns_b, link.ns_a, link.address_b, module)
        link_stats = link.final_statistics
    error = server_report.get("error") or client_report.get("error")
    if error is None and server_report.get("received", 0) < client_report.get("sent", 0):
        error = "not everything arrived before the deadline (--timeout)"
    if error is None and not client_report.get("acknowledged"):
        error = "the receiver's final acknowledgement never arrived"
    duration = server_report.get("duration") or server_report.get("step2_duration")
    received_bytes = server_report.get("received_bytes") or server_report.get("step2_bytes", 0)
    description = contender.description
    if two_docs:
        description = f"Quantum (FEC auto), edits on one channel: {workload['variant']}"
    return RunResult(
        contender=contender_name,
        description=description,
        condition=condition,
        sent=client_report.get("sent", 0),
        received=server_report.get("received", 0),
        latencies_ms=tuple(x * 1000 for x in server_report.get("latencies", ())),
        goodput_mbit=received_bytes * 8 / duration / 1e6 if duration else None,
        app_bytes=client_report.get("app_bytes", 0),
        wire_bytes=(
            link_stats.a_to_b.offered_bytes + link_stats.b_to_a.offered_bytes if link_stats else None
        ),
        retransmits=client_report.get("retransmits"),
        fec_recoveries=_sum_known(server_report.get("fec_recoveries"), client_report.get("fec_recoveries")),
        dropped_loss=link_stats.a_to_b.dropped_loss + link_stats.b_to_a.dropped_loss if link_stats else None,
        dropped_queue=(
            link_stats.a_to_b.dropped_queue + link_stats.b_to_a.dropped_queue if link_stats else None
        ),
        error=error,
    )


def conditions_from(args: argparse.Namespace) -> list[Condition]:
    """The conditions one invocation runs: the sweep matrix, or the one the options describe."""
    base = {"queue": args.queue, "seed": args.seed, "jitter_ms": 0.0 if args.loopback else args.jitter_ms}
    if args.sweep:
        conditions = [
            Condition(
                workload="messages",
                delay_ms=20.0,
                loss=loss,
                rate_mbit=args.rate_mbit,
                loopback=False,
                **base,
            )
            for loss in SWEEP_LOSSES
        ]
        conditions.append(
            Condition(
                workload="bulk",
                delay_ms=SWEEP_BULK_DELAY_MS,
                loss=SWEEP_BULK_LOSS,
                rate_mbit=SWEEP_BULK_RATE_MBIT,
                loopback=False,
                **base,
            )
        )
        loopback = {**base, "jitter_ms": 0.0}
        conditions.append(
            Condition(workload="bulk", delay_ms=0, loss=0, rate_mbit=0, loopback=True, **loopback)
        )
        return conditions
    workloads = ["messages", "bulk"] if args.workload == "both" else [args.workload]
    if args.workload == "two-docs" and args.loopback:
        raise LocalProtocolError("--workload two-docs measures through the emulated link: drop --loopback")
    return [
        Condition(
            workload=workload,
            delay_ms=0 if args.loopback else args.delay_ms,
            loss=0 if args.loopback else args.loss,
            rate_mbit=0 if args.loopback else args.rate_mbit,
            loopback=args.loopback,
            **base,
        )
        for workload in workloads
    ]


def _workload_for(condition: Condition, args: argparse.Namespace) -> dict[str, Any]:
    if condition.workload in ("messages", "two-docs"):
        return {
            "count": args.count,
            "size": args.size,
            "rate": args.msg_rate,
            "deadline": args.count / args.msg_rate + args.timeout,
        }
    bulk_mb = args.loopback_bulk_mb if condition.loopback else args.bulk_mb
    return {"bulk_bytes": int(bulk_mb * 1e6), "size": args.chunk, "deadline": args.timeout}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from aetherflow_sdk.testing.linkem import add_link_arguments

    add_link_arguments(parser)
    parser.set_defaults(queue=100)
    parser.add_argument(
        "--workload",
        choices=["messages", "bulk", "both", "two-docs"],
        default="both",
        help="two-docs: edits on one channel while another streams step 2s (Quantum only)",
    )
    parser.add_argument(
        "--step2-mb", type=float, default=2.0, help="two-docs: megabytes per sync step 2 (default 2)"
    )
    parser.add_argument("--count", type=int, default=1000, help="messages: how many (default 1000)")
    parser.add_argument("--size", type=int, default=200, help="messages: bytes each (default 200)")
    parser.add_argument("--msg-rate", type=float, default=50.0, help="messages per second (default 50)")
    parser.add_argument("--bulk-mb", type=float, default=5.0, help="bulk: megabytes through the link")
    parser.add_argument("--loopback-bulk-mb", type=float, default=50.0, help="bulk on loopback: megabytes")
    parser.add_argument("--chunk", type=int, default=16384, help="bulk: bytes per message (default 16384)")
    parser.add_argument(
        "--contenders",
        default=None,
        help=f"comma-separated, from {','.join(contender_names())} (default: all)",
    )
    parser.add_argument("--loopback", action="store_true", help="no emulator: both peers on 127.0.0.1")
    parser.add_argument(
        "--sweep", action="store_true", help="run the standard matrix (see docs/benchmarks.md)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a run may take beyond its schedule"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write one record per run")
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="FILE.png", help="latency CDFs, goodput bars"
    )


def _check(args: argparse.Namespace) -> list[str]:
    available = available_contenders()
    names = available if args.contenders is None else [n.strip() for n in args.contenders.split(",")]
    for name in names:
        if name not in contender_names():
            raise LocalProtocolError(
                f"unknown contender {name!r}; choose from {', '.join(contender_names())}"
            )
        if name not in available:
            raise LocalProtocolError(f"contender {name!r} cannot run here (its transport is not installed)")
    if args.size < 12 or args.chunk < 12:
        raise LocalProtocolError("--size and --chunk must be at least 12 bytes (index + timestamp)")
    if args.count < 1 or args.msg_rate <= 0 or args.bulk_mb <= 0:
        raise LocalProtocolError("--count, --msg-rate and --bulk-mb must be positive")
    needs_link = args.sweep or not args.loopback
    reason = netns_available()
    if needs_link and reason is not None:
        raise LocalProtocolError(f"the emulated link needs network namespaces: {reason} (or use --loopback)")
    return names


@contextlib.contextmanager
def _progress(label: str) -> Iterator[None]:
    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        print(" done", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run every condition for every contender; print the table; write JSON and plot."""
    names = _check(args)
    results: list[RunResult] = []
    for condition in conditions_from(args):
        if condition.workload == "two-docs":
            results.extend(_run_two_docs(condition, args))
            continue
        for name in names:
            with _progress(f"{condition.label()}: {name}"):
                results.append(run_one(name, condition, _workload_for(condition, args)))
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 1 if any(r.error for r in results) else 0


def _run_two_docs(condition: Condition, args: argparse.Namespace) -> list[RunResult]:
    """The three variants of the two-documents workload, each on a fresh link (_two_docs.py)."""
    from aetherflow_node.bench._two_docs import VARIANTS

    results = []
    for variant in VARIANTS:
        name = variant.replace(" ", "-")
        workload = {
            **_workload_for(condition, args),
            "variant": variant,
            "step2_bytes": int(args.step2_mb * 1e6),
        }
        with _progress(f"{condition.label()}: {name}"):
            results.append(run_one(name, condition, workload, "aetherflow_node.bench._two_docs"))
    return results


def _run_command(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except AetherFlowError:
        raise
    except OSError as exc:
        raise AetherFlowError(f"bench transport: {exc}") from exc


command = Subcommand(
    help="Quantum vs kernel TCP (cubic, bbr) vs aioquic on an emulated link: latency and goodput",
    add_arguments=_add_arguments,
    run=_run_command,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run without the dispatcher (``python -m aetherflow_node.bench._transport``)."""
    parser = argparse.ArgumentParser(prog="aetherflow bench transport")
    _add_arguments(parser)
    return run(parser.parse_args(argv))
