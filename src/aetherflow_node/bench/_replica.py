"""``aetherflow bench replica``: the local replica on the automerge-paper trace.

Measures, in one run (so ratios compare like with like):

* local apply rate of :class:`Replica` (one call per patch), next to raw pycrdt
  with one call per patch -- the reference;
* remote apply rate: the replay's updates applied one by one on a second replica;
* snapshot size (raw and zlib) and load time from SQLite (the paper, and a 1 MB document);
* end to end over Quantum on loopback: replica A replays the trace at full speed
  while replica B, **in another process**, follows over a real Quantum
  connection; edit-to-visible latency p50/p99 and the end-to-end rate.

Latency: both processes read CLOCK_MONOTONIC, which is shared on one machine. A
records when each insert was made and the Yjs clock it reached; B records when
its state vector first covered each clock. Deletions do not move Yjs clocks, so
latency is sampled on inserts (70 % of the patches).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand

# In a checkout the traces live in tests/data/traces; AETHERFLOW_TRACES points elsewhere.
DEFAULT_TRACES = Path(
    os.environ.get("AETHERFLOW_TRACES", Path(__file__).resolve().parents[3] / "tests" / "data" / "traces")
)
GOALS = {"e2e_ops_per_s": 20_000.0, "e2e_p99_ms": 50.0, "load_1mb_ms": 100.0}


def _patches(trace_dir: Path, limit: int | None) -> tuple[list[list[Any]], str]:
    with gzip.open(trace_dir / "automerge-paper.json.gz") as f:
        trace = json.load(f)
    patches = [p for txn in trace["txns"] for p in txn["patches"]]
    if limit is not None and limit < len(patches):
        patches = patches[:limit]
        text = ""
        for position, deleted, inserted in patches:
            text = text[:position] + inserted + text[position + deleted :]
        return patches, text
    return patches, str(trace["endContent"])


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def bench_local(patches: list[list[Any]], end: str) -> dict[str, Any]:
    from pycrdt import Doc, Text

    from aetherflow_sdk.replica import Replica

    doc: Doc[Text] = Doc()
    raw = doc.get("text", type=Text)
    start = time.perf_counter()
    for position, deleted, inserted in patches:
        if deleted:
            del raw[position : position + deleted]
        if inserted:
            raw.insert(position, inserted)
    raw_seconds = time.perf_counter() - start
    assert str(raw) == end, "raw pycrdt replay did not reach endContent"

    replica = Replica("paper")
    updates: list[bytes] = []
    replica.subscribe_updates(lambda update, origin, local: updates.append(update))
    start = time.perf_counter()
    for position, deleted, inserted in patches:
        replica.replace(position, deleted, inserted)
    replica_seconds = time.perf_counter() - start
    assert replica.text == end, "Replica replay did not reach endContent"

    follower = Replica("paper")
    start = time.perf_counter()
    for update in updates:
        follower.apply_update(update)
    remote_seconds = time.perf_counter() - start
    assert follower.text == end
    snapshot = replica.encode_update()
    return {
        "patches": len(patches),
        "raw_pycrdt_ops_per_s": len(patches) / raw_seconds,
        "replica_ops_per_s": len(patches) / replica_seconds,
        "replica_vs_raw": raw_seconds / replica_seconds,
        "remote_updates": len(updates),
        "remote_updates_per_s": len(updates) / remote_seconds,
        "snapshot_bytes": len(snapshot),
        "snapshot_zlib_bytes": len(zlib.compress(snapshot, 6)),
        "text_bytes": len(end.encode("utf-8")),
        "_snapshot": snapshot,
    }


def _load_time(path: Path, doc_id: str, runs: int) -> float:
    from aetherflow_sdk.replica import Replica

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        replica = Replica.open(path, doc_id)
        _ = replica.text
        times.append(time.perf_counter() - start)
        replica.close()
    return statistics.median(times) * 1000


def bench_load(snapshot: bytes, end: str, runs: int) -> dict[str, Any]:
    import anyio

    from aetherflow_sdk.replica import Replica

    async def write(path: Path, doc_id: str, build: Any) -> int:
        replica = Replica.open(path, doc_id)
        build(replica)
        await replica.flush()
        size = len(replica.encode_update())
        replica.close()
        return size

    def one_mb(replica: Replica) -> None:
        # 1 MB of text with real history: ten copies of the paper, typed in 1 kB chunks.
        for _copy in range(10):
            for offset in range(0, len(end), 1000):
                replica.insert(len(replica), end[offset : offset + 1000])

    with tempfile.TemporaryDirectory(prefix="aetherflow-bench-replica-") as tmp:
        paper = Path(tmp) / "paper.db"
        anyio.run(write, paper, "paper", lambda r: r.apply_update(snapshot))
        big = Path(tmp) / "big.db"
        big_snapshot = anyio.run(write, big, "big", one_mb)
        return {
            "paper_load_ms": _load_time(paper, "paper", runs),
            "paper_db_bytes": paper.stat().st_size,
            "one_mb_text_bytes": len(end.encode()) * 10,
            "one_mb_snapshot_bytes": big_snapshot,
            "one_mb_load_ms": _load_time(big, "big", runs),
        }


# -- end to end over Quantum: B runs in a child process ------------------------------------


def _follower_main(trace_dir: str, limit: int) -> None:
    """Child process: accept one Quantum connection, follow the replay, report timings as JSON."""
    import anyio

    from aetherflow_sdk import quantum
    from aetherflow_sdk.replica import Replica, ReplicaSync
    from aetherflow_sdk.replica._wire import parse_state_vector_untrusted

    _, end = _patches(Path(trace_dir), limit or None)

    async def main() -> None:
        follower = Replica("paper")
        samples: list[tuple[float, int]] = []
        done = anyio.Event()
        target = len(end)

        def on_update(update: bytes, origin: object, local: bool) -> None:
            now = time.monotonic()
            clocks = parse_state_vector_untrusted(follower.state_vector())
            samples.append((now, max(clocks.values(), default=0)))
            if len(follower) == target and follower.text == end:
                done.set()

        follower.subscribe_updates(on_update)
        async with quantum.open_endpoint(("127.0.0.1", 0)) as endpoint:
            hello = {"port": endpoint.local_address[1], "node_id": endpoint.node_id.hex()}
            print(json.dumps(hello), flush=True)
            connection = await endpoint.accept()
            async with ReplicaSync(follower) as sync, anyio.create_task_group() as tg:
                tg.start_soon(sync.serve, connection)
                with anyio.fail_after(600):
                    await done.wait()
                tg.cancel_scope.cancel()
        print(json.dumps({"samples": samples}), flush=True)

    anyio.run(main)


def bench_end_to_end(
    trace_dir: Path, patches: list[list[Any]], limit: int, yield_every: int = 100
) -> dict[str, Any]:
    import anyio

    from aetherflow_sdk import quantum
    from aetherflow_sdk.replica import Replica, ReplicaSync

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from aetherflow_node.bench._replica import _follower_main as m; m({str(trace_dir)!r}, {limit})",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        hello = json.loads(child.stdout.readline())
        sent: list[tuple[float, int]] = []

        async def main() -> tuple[float, float]:
            leader = Replica("paper", client_id=1)
            async with quantum.open_endpoint(("127.0.0.1", 0)) as endpoint:
                connection = await endpoint.connect(
                    ("127.0.0.1", hello["port"]), peer_id=bytes.fromhex(hello["node_id"])
                )
                async with ReplicaSync(leader) as sync, anyio.create_task_group() as tg:
                    tg.start_soon(sync.serve, connection)
                    clock = 0
                    start = time.monotonic()
                    for i, (position, deleted, inserted) in enumerate(patches):
                        leader.replace(position, deleted, inserted)
                        if inserted:
                            clock += len(inserted.encode("utf-16-le")) // 2
                            sent.append((time.monotonic(), clock))
                        if i % yield_every == yield_every - 1:
                            # Full speed, but the sender must get the CPU now and then.
                            await anyio.lowlevel.checkpoint()
                    replay_end = time.monotonic()
                    # Stay until B reports (the child exits after it caught up).
                    line = await anyio.to_thread.run_sync(child.stdout.readline)  # type: ignore[union-attr]
                    tg.cancel_scope.cancel()
            report.update(json.loads(line))
            return start, replay_end

        report: dict[str, Any] = {}
        start, replay_end = anyio.run(main)
    finally:
        child.wait(timeout=60)
    samples: list[tuple[float, int]] = report["samples"]
    latencies = []
    j = 0
    for made_at, clock in sent:
        while j < len(samples) and samples[j][1] < clock:
            j += 1
        if j == len(samples):
            break
        latencies.append((samples[j][0] - made_at) * 1000)
    caught_up = samples[-1][0]
    return {
        "patches": len(patches),
        "yield_every": yield_every,
        "replay_ops_per_s": len(patches) / (replay_end - start),
        "e2e_ops_per_s": len(patches) / (caught_up - start),
        "latency_samples": len(latencies),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "b_update_batches": len(samples),
    }


def _verdict(value: float, goal: float, higher_is_better: bool) -> str:
    ok = value >= goal if higher_is_better else value <= goal
    return "ok" if ok else "MISSED"


def format_report(report: dict[str, Any]) -> str:
    local, load, e2e = report["local"], report["load"], report.get("end_to_end")
    lines = [
        f"aetherflow bench replica -- automerge-paper, {local['patches']:,} patches, "
        f"Python {report['python']}",
        f"{'measure':<48} {'value':>14}  goal",
        f"{'raw pycrdt, one call per patch (reference)':<48} {local['raw_pycrdt_ops_per_s']:>10,.0f} op/s",
        f"{'Replica local apply':<48} {local['replica_ops_per_s']:>10,.0f} op/s"
        f"  ({local['replica_vs_raw']:.2f}x raw)",
        f"{'Replica remote apply (one update per patch)':<48} {local['remote_updates_per_s']:>10,.0f} upd/s",
        f"{'snapshot (full Yjs update)':<48} {local['snapshot_bytes']:>11,} B"
        f"  (zlib {local['snapshot_zlib_bytes']:,} B; text {local['text_bytes']:,} B)",
        f"{'load from SQLite: the paper':<48} {load['paper_load_ms']:>11.1f} ms",
        f"{'load from SQLite: ' + format(load['one_mb_text_bytes'] / 1e6, '.2f') + ' MB document':<48}"
        f" {load['one_mb_load_ms']:>11.1f} ms"
        f"  <=100ms {_verdict(load['one_mb_load_ms'], GOALS['load_1mb_ms'], False)}",
    ]
    if e2e is not None:
        lines += [
            f"Quantum loopback: A replays, yielding every {e2e['yield_every']} patches; B in another process",
            f"{'  end-to-end rate (until B caught up)':<48} {e2e['e2e_ops_per_s']:>10,.0f} op/s"
            f"  >=20k {_verdict(e2e['e2e_ops_per_s'], GOALS['e2e_ops_per_s'], True)}",
            f"{'  edit-to-visible latency p50':<48} {e2e['p50_ms']:>11.1f} ms",
            f"{'  edit-to-visible latency p99':<48} {e2e['p99_ms']:>11.1f} ms"
            f"  <=50ms {_verdict(e2e['p99_ms'], GOALS['e2e_p99_ms'], False)}",
            f"{'  latency max':<48} {e2e['max_ms']:>11.1f} ms",
        ]
    return "\n".join(lines)


def run_benchmark(
    *, trace_dir: Path, limit: int | None, load_runs: int, quantum: bool, yield_every: int = 100
) -> dict[str, Any]:
    patches, end = _patches(trace_dir, limit)
    local = bench_local(patches, end)
    snapshot = local.pop("_snapshot")
    report: dict[str, Any] = {
        "workload": "replica",
        "python": sys.version.split()[0],
        "trace": "automerge-paper",
        "local": local,
        "load": bench_load(snapshot, end, load_runs),
        "goals": GOALS,
    }
    if quantum:
        report["end_to_end"] = bench_end_to_end(trace_dir, patches, limit or 0, yield_every)
    return report


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="trace directory")
    parser.add_argument("--patches", type=int, default=None, help="replay only the first N patches")
    parser.add_argument("--load-runs", type=int, default=5, help="timed loads from SQLite (median, 5)")
    parser.add_argument("--no-quantum", action="store_true", help="skip the end-to-end Quantum run")
    parser.add_argument(
        "--yield-every",
        type=int,
        default=100,
        help="end to end: A yields to the event loop after this many patches (100)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    report = run_benchmark(
        trace_dir=args.traces,
        limit=args.patches,
        load_runs=args.load_runs,
        quantum=not args.no_quantum,
        yield_every=max(1, args.yield_every),
    )
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


command = Subcommand(
    help="local replica: apply rates vs raw pycrdt, snapshot, SQLite load, end-to-end over Quantum",
    add_arguments=_add_arguments,
    run=_run,
)
