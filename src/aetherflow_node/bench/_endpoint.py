"""``aetherflow bench endpoint``: CPU per message on one endpoint as its connections grow.

One Quantum endpoint (the server, in a child process of its own, so that its CPU
is measured alone) holds 10, 100 and 1,000 connections from one client endpoint
(this process) on loopback. Every connection sends a 100-byte message 10 times a
second; the server echoes each one back. After a warm-up, the server's own CPU
time (``time.process_time`` in the child) over the measured window is divided by
the messages it received in it. The goal: the figure at 1,000 connections within
1.5x of the figure at 10, i.e. a flat cost per connection. The echo's round trip
(p50/p99, measured by the client) is shown too; on a busy machine the client may
fall short of the offered rate, and the table says what it reached.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
from contextlib import suppress
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import trio

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import ConnectionClosed, quantum

LEVELS = (10, 100, 1000)
RATE = 10.0  # messages per second per connection
PAYLOAD = 100  # bytes per message
TICK = 0.01  # the sender's clock: each tick, the connections whose turn it is send
DIALS_AT_ONCE = 100
GOAL_RATIO = 1.5
_STAMP = 8  # a message starts with the client's send time (ns, big-endian)


# ----------------------------------------------------------------- the server (child process)


def _serve(pipe: Pipe) -> None:
    trio.run(_serve_async, pipe)


async def _serve_async(pipe: Pipe) -> None:
    received = [0]
    async with quantum.open_endpoint(("127.0.0.1", 0)) as endpoint, trio.open_nursery() as nursery:

        async def echo(conn: quantum.Connection) -> None:
            with suppress(ConnectionClosed):
                while True:
                    data = await conn.receive()
                    received[0] += 1
                    await conn.send(data)

        async def accept() -> None:
            while True:
                nursery.start_soon(echo, await endpoint.accept())

        nursery.start_soon(accept)
        pipe.send((endpoint.local_address[1], endpoint.node_id))
        while await trio.to_thread.run_sync(pipe.recv) == "mark":
            pipe.send((time.process_time(), received[0], len(endpoint.connections())))
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------- the client (this process)


async def _ask(pipe: Pipe, command: str) -> Any:
    pipe.send(command)
    return await trio.to_thread.run_sync(pipe.recv)


async def _level(connections: int, warmup: float, duration: float, seed: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=_serve, args=(theirs,), daemon=True)
    server.start()
    try:
        port, node_id = await trio.to_thread.run_sync(ours.recv)
        rng = random.Random(seed)
        rtts: list[float] = []
        measuring = [False]
        async with quantum.open_endpoint(("127.0.0.1", 0)) as client, trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(DIALS_AT_ONCE)
            conns: list[quantum.Connection] = []

            async def dial() -> None:
                async with limiter:
                    conns.append(await client.connect(("127.0.0.1", port), peer_id=node_id))

            async with trio.open_nursery() as dials:
                for _ in range(connections):
                    dials.start_soon(dial)

            async def read(conn: quantum.Connection) -> None:
                with suppress(ConnectionClosed):
                    while True:
                        data = await conn.receive()
                        if measuring[0]:
                            rtts.append((time.perf_counter_ns() - int.from_bytes(data[:_STAMP], "big")) / 1e6)

            for conn in conns:
                nursery.start_soon(read, conn)
            # Each connection gets a slot (a random phase) in the 1/RATE period.
            slots_per_period = round(1 / (RATE * TICK))
            slots: list[list[quantum.Connection]] = [[] for _ in range(slots_per_period)]
            for conn in conns:
                slots[rng.randrange(slots_per_period)].append(conn)
            padding = bytes(PAYLOAD - _STAMP)
            sent = [0]

            async def send() -> None:
                start = trio.current_time()
                tick = 0
                while True:
                    tick += 1
                    await trio.sleep_until(start + tick * TICK)
                    for conn in slots[tick % slots_per_period]:
                        await conn.send(time.perf_counter_ns().to_bytes(_STAMP, "big") + padding)
                        sent[0] += 1

            nursery.start_soon(send)
            await trio.sleep(warmup)
            cpu0, received0, held = await _ask(ours, "mark")
            sent0, wall0 = sent[0], time.perf_counter()
            measuring[0] = True
            await trio.sleep(duration)
            cpu1, received1, _ = await _ask(ours, "mark")
            wall = time.perf_counter() - wall0
            measuring[0] = False
            sent_in_window = sent[0] - sent0
            nursery.cancel_scope.cancel()
        ours.send("stop")
    finally:
        await trio.to_thread.run_sync(server.join, 15)
        if server.is_alive():
            server.kill()
    messages = received1 - received0
    cpu = cpu1 - cpu0
    rtts.sort()
    return {
        "connections": connections,
        "held_by_server": held,
        "seconds": wall,
        "offered_per_s": connections * RATE,
        "sent_per_s": sent_in_window / wall,
        "received_per_s": messages / wall,
        "server_cpu_s": cpu,
        "server_cpu_share": cpu / wall,
        "cpu_us_per_message": cpu / messages * 1e6 if messages else None,
        "echo_p50_ms": rtts[len(rtts) // 2] if rtts else None,
        "echo_p99_ms": rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))] if rtts else None,
    }


def run_benchmark(*, levels: tuple[int, ...], warmup: float, duration: float, seed: int) -> dict[str, Any]:
    results = [trio.run(_level, n, warmup, duration, seed) for n in levels]
    first, last = results[0]["cpu_us_per_message"], results[-1]["cpu_us_per_message"]
    return {
        "workload": "endpoint",
        "python": sys.version.split()[0],
        "seed": seed,
        "rate_per_connection": RATE,
        "payload_bytes": PAYLOAD,
        "warmup_s": warmup,
        "duration_s": duration,
        "levels": results,
        "ratio_last_to_first": last / first if first and last else None,
        "goal_ratio": GOAL_RATIO,
    }


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"endpoint benchmark: one server endpoint, {report['rate_per_connection']:g} msg/s per connection "
        f"({report['payload_bytes']} B, echoed), {report['duration_s']:g} s measured after "
        f"{report['warmup_s']:g} s (python {report['python']})",
        f"{'connections':>11} {'offered/s':>10} {'received/s':>11} {'server CPU':>11} "
        f"{'CPU/msg':>9} {'echo p50':>9} {'echo p99':>9}",
    ]
    for row in report["levels"]:
        lines.append(
            f"{row['connections']:>11,} {row['offered_per_s']:>10,.0f} {row['received_per_s']:>11,.0f} "
            f"{row['server_cpu_share'] * 100:>10.1f}% {_cell(row['cpu_us_per_message'], '>7.1f')}us "
            f"{_cell(row['echo_p50_ms'], '>7.2f')}ms {_cell(row['echo_p99_ms'], '>7.2f')}ms"
        )
    ratio = report["ratio_last_to_first"]
    levels = report["levels"]
    if ratio is not None:
        verdict = "ok" if ratio <= report["goal_ratio"] else "MISSED"
        lines.append(
            f"CPU per message at {levels[-1]['connections']:,} / at {levels[0]['connections']:,} "
            f"connections: {ratio:.2f}x (goal <= {report['goal_ratio']:g}x) {verdict}"
        )
    return "\n".join(lines)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels takes counts like 10,100,1000, got {text!r}") from None
    if not levels or any(n < 1 or n > 5000 for n in levels):
        raise argparse.ArgumentTypeError(f"each level is 1..5000 connections, got {text!r}")
    return levels


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--levels", type=_levels, default=LEVELS, help="connection counts, comma-separated (10,100,1000)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level (10)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the send phases (1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    if args.warmup < 0 or args.duration <= 0:
        print("aetherflow bench endpoint: --warmup must be >= 0 and --duration > 0", file=sys.stderr)
        return 2
    report = run_benchmark(levels=args.levels, warmup=args.warmup, duration=args.duration, seed=args.seed)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


command = Subcommand(
    help="one endpoint at 10, 100 and 1,000 connections: server CPU per message (flat cost goal)",
    add_arguments=_add_arguments,
    run=_run,
)

