"""One-way message latency on the virtual network (virtual clock): FEC auto vs off.

200 B unordered messages at 50/s over a link of 20 ms one-way delay and random loss in
both directions (0/2/5/10 %), with the default configuration (BBR, tail-loss probes)
and ``fec`` "auto" or "off". Latency is the virtual time from ``send_message`` to the
receiver's ``receive_message``. Prints a markdown table; deterministic for a seed.

    .venv/bin/python benchmarks/quantum_vnet_latency.py [--messages 3000] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.quantum._vnet import LinkProfile, VirtualNetwork
from tests.quantum.test_connection_virtual import _pair

from aetherflow_sdk.quantum import QuantumConfig

INTERVAL = 0.020  # 50 messages per second
SIZE = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(loss: float, fec: str, count: int, seed: int) -> dict[str, float]:
    net = VirtualNetwork(seed, LinkProfile(delay=0.020, loss=loss))
    client_ep, server_ep, client, server = _pair(net, QuantumConfig(fec=fec))
    start = net.now + 0.5
    sent_at: list[float] = []
    latencies: list[float] = []

    def pump() -> bool:
        while len(sent_at) < count and net.now >= start + len(sent_at) * INTERVAL:
            client.send_message(len(sent_at).to_bytes(4, "big") + bytes(SIZE - 4), ordered=False)
            sent_at.append(net.now)
        client_ep.mark_dirty(client)
        while (message := server.receive_message()) is not None:
            latencies.append(net.now - sent_at[int.from_bytes(message[:4], "big")])
            server_ep.mark_dirty(server)
        return len(latencies) == count

    ticker = net.add_endpoint(("10.9.9.9", 1), accept=False)  # wakes the clock at each send time
    ticker.get_timer = lambda: start + len(sent_at) * INTERVAL if len(sent_at) < count else None  # type: ignore[method-assign]
    net.run_until(pump, max_time=count * INTERVAL + 60)
    s = client.statistics()
    return {
        "p50": percentile(latencies, 0.50) * 1000,
        "p90": percentile(latencies, 0.90) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
        "retransmitted": s.packets_retransmitted,
        "probes": s.tail_loss_probes,
        "repaired": server.statistics().fec_recovered_packets,
        "wire_per_app": s.bytes_sent / s.app_bytes_sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        "| loss | FEC | p50 ms | p90 ms | p99 ms | max ms | retransmitted | probes | FEC repaired "
        "| wire/app |"
    )
    print("|---" * 10 + "|")
    for loss in (0.0, 0.02, 0.05, 0.10):
        for fec in ("auto", "off"):
            r = run(loss, fec, args.messages, args.seed)
            print(
                f"| {loss:.0%} | {fec} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
                f"{r['max']:.1f} | {r['retransmitted']} | {r['probes']} | {r['repaired']} | "
                f"{r['wire_per_app']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
