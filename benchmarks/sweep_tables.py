"""Markdown tables from `aetherflow bench transport --json` records (used for docs/benchmarks.md).

    .venv/bin/python benchmarks/sweep_tables.py docs/img/bench-sweep.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def tables(records: list[dict[str, Any]]) -> str:
    lines = [
        "| loss | contender | p50 | p90 | p99 | max | retx | FEC | wire/app | arrived |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        c = r["condition"]
        if c["workload"] != "messages":
            continue
        lat = r["latency_ms"] or {}
        lines.append(
            f"| {c['loss'] * 100:g} % | {r['contender']} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} | "
            f"{_fmt(lat.get('p99'))} | {_fmt(lat.get('max'))} | {r['retransmits']} | "
            f"{'–' if r['fec_recoveries'] is None else r['fec_recoveries']} | {_fmt(r['wire_ratio'], 2)} | "
            f"{r['received']}/{r['sent']} |"
        )
    lines += ["", "| condition | contender | goodput Mbit/s | wire/app | retx | FEC |", "|---|---|---|---|---|---|"]
    for r in records:
        c = r["condition"]
        if c["workload"] != "bulk":
            continue
        where = "loopback" if c["loopback"] else (
            f"{c['rate_mbit']:g} Mbit/s, {2 * c['delay_ms']:g} ms RTT, {c['loss'] * 100:g} % loss, queue {c['queue']}"
        )
        lines.append(
            f"| {where} | {r['contender']} | {_fmt(r['goodput_mbit'])} | {_fmt(r['wire_ratio'], 2)} | "
            f"{r['retransmits']} | {'–' if r['fec_recoveries'] is None else r['fec_recoveries']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(json.load(open(sys.argv[1]))))
