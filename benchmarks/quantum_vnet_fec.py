"""FEC on the virtual network (virtual clock): repair ratio at 2 % loss, and bulk cost.

* Share of the client's lost DATA packets that FEC repaired (no retransmission), for a
  bulk transfer (200 x 20 kB through 20 Mbit/s) and a 50/s stream of 200 B messages,
  20 ms one-way delay, 2 % seeded random loss both ways, ``fec="on"`` for the bulk
  transfer and ``fec="auto"`` for the stream (as in ``tests/quantum/test_fec_connection.py``).
* The bulk transfer's goodput and wire bytes / application bytes with FEC auto, on, off.

    .venv/bin/python benchmarks/quantum_vnet_fec.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.quantum._vnet import LinkProfile, VirtualNetwork
from tests.quantum._vnet import send_and_collect as _send_and_collect
from tests.quantum.test_fec_connection import CountingLoss, _pair, _repair_ratio

from aetherflow_sdk.quantum import QuantumConfig


def main() -> None:
    print("| workload | seed | repaired / DATA lost | ratio |")
    print("|---|---|---|---|")
    # Bulk under "auto" sends no parity once window-limited (docs/bbr-fec.md): "on" for bulk.
    for workload, fec in (("bulk", "on"), ("stream", "auto")):
        for seed in (2026, 1, 2):
            ratio, recovered, dropped = _repair_ratio(workload, seed, fec=fec)
            print(f"| {workload} ({fec}) | {seed} | {recovered}/{dropped} | {ratio:.0%} |", flush=True)
    print()
    print("| FEC | goodput Mbit/s | wire/app | parity/app | retransmitted | repaired / DATA lost |")
    print("|---|---|---|---|---|---|")
    for fec in ("auto", "on", "off"):
        counter = CountingLoss(random.Random(2026), 0.02)
        net = VirtualNetwork(2026, LinkProfile(delay=0.020, drop_if=counter, rate_bytes_per_s=2.5e6))
        pair = _pair(net, QuantumConfig(fec=fec))
        payloads = [bytes([i % 256]) * 20_000 for i in range(200)]
        took = _send_and_collect(net, pair, payloads, max_time=120)
        s = pair[2].statistics()
        goodput = len(payloads) * 20_000 * 8 / took / 1e6
        print(
            f"| {fec} | {goodput:.1f} | {s.bytes_sent / s.app_bytes_sent:.3f} "
            f"| {s.parity_bytes_sent / s.app_bytes_sent:.3f} | {s.packets_retransmitted} "
            f"| {pair[3].statistics().fec_recovered_packets}/{counter.data_dropped} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
