"""``aetherflow bench sessions``: lookups, creation and expiry of the session manager at scale.

Goals (issue 4): with 100,000 live sessions, lookup by each index at p99 <= 10 us;
create -- JWT verification plus a durable SQLite write -- at p99 <= 1 ms; an
expiry sweep of 100k sessions in <= 100 ms. Everything runs in this process on
a fixed ``now`` (the manager is sans-I/O), so only the work itself is timed.
Each operation is timed alone with ``perf_counter_ns``; the timer's own cost
(~0.1 us) is included in the lookup figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from aetherflow_node._cli import Subcommand
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import (
    MemorySessionStore,
    Permission,
    SessionConfig,
    SessionManager,
    SqliteSessionStore,
    TokenVerifier,
    issue_token,
)

NOW = 1_800_000_000.0
GOALS_US = {"lookup_p99": 10.0, "create_p99": 1000.0, "sweep": 100_000.0}


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000.0

    return {
        "n": n,
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "max_us": ordered[-1] / 1000.0,
        "mean_us": statistics.fmean(ordered) / 1000.0,
    }


def _populate(manager: SessionManager, n: int, users: int, rng: random.Random) -> list[uuid.UUID]:
    ids = []
    for i in range(n):
        session, _ = manager.create(
            user=f"user{rng.randrange(users)}",
            document=f"doc{i % 1000}",
            permission=Permission.READ_WRITE,
            holder=b"\x01" * 32,
            issuer=b"\x02" * 32,
            token_id=f"jti{i}",
            not_after=NOW + 86_400,
            connection_id=i,
            now=NOW,
        )
        manager.establish(session.session_id, NOW)
        ids.append(session.session_id)
    return ids


def _time_each(operation: Callable[[Any], object], keys: list[Any]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for key in keys:
        started = clock()
        operation(key)
        samples.append(clock() - started)
    return samples


def bench_lookups(n: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    manager = SessionManager(SessionConfig())
    users = max(1, n // 2)  # about two sessions per user
    started = time.perf_counter()
    ids = _populate(manager, n, users, rng)
    populate_s = time.perf_counter() - started
    while manager.next_event() is not None:
        pass
    session_keys = [ids[rng.randrange(n)] for _ in range(samples)]
    connection_keys = [rng.randrange(n) for _ in range(samples)]
    user_keys = [f"user{rng.randrange(users)}" for _ in range(samples)]
    return {
        "live_sessions": len(manager),
        "populate_s": populate_s,
        "by_session_id": _percentiles(_time_each(manager.get, session_keys)),
        "by_connection": _percentiles(_time_each(manager.by_connection, connection_keys)),
        "by_user": _percentiles(_time_each(manager.by_user, user_keys)),
    }


def bench_create(
    creates: int, prefill: int, synchronous: Literal["FULL", "NORMAL"], seed: int, directory: Path
) -> dict[str, Any]:
    """Each sample: verify a fresh EdDSA token, then create the session (one durable SQLite write)."""
    rng = random.Random(seed)
    owner = Identity.from_private_bytes(rng.randbytes(32))
    verifier = TokenVerifier([owner.node_id])
    store = SqliteSessionStore(directory / f"sessions-{synchronous.lower()}.db", synchronous=synchronous)
    manager = SessionManager(SessionConfig(), store=store)
    if prefill:
        # A realistic table size; bulk-loaded in one transaction to keep the run short.
        filler = SessionManager(SessionConfig())
        _populate(filler, prefill, max(1, prefill // 2), rng)
        store.put_many(s for s in (filler.get(e.session_id) for e in iter(filler.next_event, None)) if s)
    tokens = [
        issue_token(owner, user=f"user{i}", document="doc", permission="rw", expires_in=3600, now=NOW)
        for i in range(creates)
    ]
    peer = b"\x03" * 32
    verify_ns: list[int] = []
    total_ns: list[int] = []
    clock = time.perf_counter_ns
    for i, token in enumerate(tokens):
        started = clock()
        claims = verifier.verify(token, document="doc", now=NOW, holder=peer)
        verified = clock()
        manager.create(
            user=claims.user,
            document="doc",
            permission=claims.permission,
            holder=peer,
            issuer=claims.issuer,
            token_id=claims.token_id,
            not_after=float(claims.expires_at),
            connection_id=("bench", i),
            now=NOW,
        )
        finished = clock()
        verify_ns.append(verified - started)
        total_ns.append(finished - started)
    store.close()
    write_ns = [t - v for t, v in zip(total_ns, verify_ns, strict=True)]
    return {
        "synchronous": synchronous,
        "rows_before": prefill,
        "create_total": _percentiles(total_ns),
        "jwt_verify": _percentiles(verify_ns),
        "create_and_write": _percentiles(write_ns),
    }


def bench_sweep(n: int, runs: int, seed: int, directory: Path | None) -> dict[str, Any]:
    """Time one handle_timer() call that expires all n sessions (memory or SQLite store).

    The sessions are put in the store in bulk and brought back with ``load()``,
    as after a restart, so that filling a durable store does not take minutes.
    """
    durations_ms = []
    rng = random.Random(seed)
    for run in range(runs):
        filler = SessionManager(SessionConfig())
        _populate(filler, n, max(1, n // 2), rng)
        store: MemorySessionStore | SqliteSessionStore
        if directory is None:
            store = MemorySessionStore()
        else:
            store = SqliteSessionStore(directory / f"sweep-{run}.db", synchronous="FULL")
        store.put_many(s for s in (filler.get(e.session_id) for e in iter(filler.next_event, None)) if s)
        manager = SessionManager(SessionConfig(ttl=60, heartbeat_interval=15), store=store)
        if manager.load(NOW).restored != n:
            raise RuntimeError("the store did not give back every session")
        started = time.perf_counter_ns()
        manager.handle_timer(NOW + 86_401)
        durations_ms.append((time.perf_counter_ns() - started) / 1e6)
        if len(manager) != 0:
            raise RuntimeError("the sweep left sessions behind")
        store.close()
    return {
        "sessions": n,
        "store": "memory" if directory is None else "sqlite FULL",
        "runs_ms": durations_ms,
        "median_ms": statistics.median(durations_ms),
    }


def _verdict(value: float, goal: float) -> str:
    return "ok" if value <= goal else "MISSED"


def format_report(report: dict[str, Any]) -> str:
    lookups = report["lookups"]
    lines = [
        f"session manager benchmark (live sessions: {lookups['live_sessions']:,}, python {report['python']})",
        f"{'measure':<44} {'p50':>10} {'p99':>10} {'max':>10}  goal",
    ]
    for index in ("by_session_id", "by_connection", "by_user"):
        row = lookups[index]
        goal = GOALS_US["lookup_p99"]
        lines.append(
            f"{'lookup ' + index:<44} {row['p50_us']:>8.2f}us {row['p99_us']:>8.2f}us {row['max_us']:>8.1f}us"
            f"  p99<={goal:.0f}us {_verdict(row['p99_us'], goal)}"
        )
    for create in report["create"]:
        for key, label in (
            ("create_total", "create (verify+write)"),
            ("jwt_verify", "  of which JWT verify"),
            ("create_and_write", "  of which create + SQLite write"),
        ):
            row = create[key]
            goal_text = ""
            if key == "create_total":
                goal_text = f"  p99<=1ms {_verdict(row['p99_us'], GOALS_US['create_p99'])}"
            lines.append(
                f"{label + ' [' + create['synchronous'] + ']':<44} {row['p50_us']:>8.1f}us"
                f" {row['p99_us']:>8.1f}us {row['max_us']:>8.0f}us{goal_text}"
            )
    for sweep in report["sweep"]:
        lines.append(
            f"{'expiry sweep of ' + format(sweep['sessions'], ',') + ' (' + sweep['store'] + ')':<44}"
            f" median {sweep['median_ms']:.1f} ms over {len(sweep['runs_ms'])} runs"
            f"  <=100ms {_verdict(sweep['median_ms'], GOALS_US['sweep'] / 1000)}"
        )
    return "\n".join(lines)


def run_benchmark(*, sessions: int, creates: int, samples: int, sweep_runs: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aetherflow-bench-sessions-") as tmp:
        directory = Path(tmp)
        return {
            "workload": "sessions",
            "python": sys.version.split()[0],
            "seed": seed,
            "lookups": bench_lookups(sessions, samples, seed),
            "create": [
                bench_create(creates, sessions, "FULL", seed, directory),
                bench_create(creates, sessions, "NORMAL", seed, directory),
            ],
            "sweep": [
                bench_sweep(sessions, sweep_runs, seed, None),
                bench_sweep(sessions, max(1, sweep_runs // 2), seed, directory),
            ],
        }


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=100_000, help="live sessions (100000)")
    parser.add_argument("--creates", type=int, default=2_000, help="timed creations per SQLite mode (2000)")
    parser.add_argument("--samples", type=int, default=100_000, help="timed lookups per index (100000)")
    parser.add_argument("--sweep-runs", type=int, default=3, help="expiry sweeps timed (3)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    report = run_benchmark(
        sessions=args.sessions,
        creates=args.creates,
        samples=args.samples,
        sweep_runs=args.sweep_runs,
        seed=args.seed,
    )
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


command = Subcommand(
    help="session manager: lookups at 100k sessions, create (JWT + SQLite), expiry sweep",
    add_arguments=_add_arguments,
    run=_run,
)
