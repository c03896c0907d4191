"""Loss-recovery figures of the 10 %-loss virtual-network test (virtual clock).

Runs the scenario of ``tests/quantum/test_connection_virtual.py::
test_ten_thousand_messages_over_loss_reordering_and_duplication`` (10,000 mixed messages,
1 B-200 kB, 10 % loss, 5 % duplication, 4 ms jitter, 10 ms one-way delay, 20 MB/s) with a
chosen congestion controller, tail-loss probes on or off, and FEC mode; prints one row per run.
Runs are deterministic for a seed (the link and BBR's phase are seeded).

    .venv/bin/python benchmarks/quantum_vnet_loss.py              # the standard matrix
    .venv/bin/python benchmarks/quantum_vnet_loss.py --cc bbr --probes 2 --fec auto --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.quantum._vnet import LinkProfile, VirtualNetwork
from tests.quantum.test_connection_virtual import A, _mixed_messages, _pair, _transfer

from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._wire import PacketType, parse_header_untrusted


class CountingNetwork(VirtualNetwork):
    """The same link (same random stream); also counts the client's DATA packets it drops."""

    data_lost = 0

    def _transmit(self, data: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
        before = self.counters.lost
        super()._transmit(data, source, destination)
        lost = self.counters.lost > before and source == A
        if lost and parse_header_untrusted(data).packet_type is PacketType.DATA:
            self.data_lost += 1


def run(cc: str, probes: int, fec: str, seed: int, adaptive: bool = True) -> dict[str, float]:
    config = QuantumConfig(
        congestion_control=cc, tail_loss_probes=probes, fec=fec, adaptive_reordering=adaptive
    )
    net = CountingNetwork(
        seed, LinkProfile(delay=0.010, loss=0.10, duplicate=0.05, jitter=0.004, rate_bytes_per_s=20e6)
    )
    client_ep, server_ep, client, server = _pair(net, config)
    rng = random.Random(seed)
    messages = [(m, o) for m, o in _mixed_messages(rng, 10_000) if len(m) >= 4]
    start_virtual, start_wall = net.now, time.perf_counter()
    _transfer(net, client_ep, server_ep, client, server, messages)
    s = client.statistics()
    return {
        "virtual_s": net.now - start_virtual,
        "wall_s": time.perf_counter() - start_wall,
        "data_packets": s.packets_sent,
        "data_lost_on_link": net.data_lost,
        "declared_lost": s.packets_lost,
        "retransmitted": s.packets_retransmitted,
        "probes": s.tail_loss_probes,
        "spurious": s.spurious_retransmissions,
        "rto": s.rto_count,
        "fec_repaired": server.statistics().fec_recovered_packets,
        "parity": s.parity_packets_sent,
        "wire_per_app": s.bytes_sent / s.app_bytes_sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cc", choices=["newreno", "bbr"])
    parser.add_argument("--probes", type=int, default=2, help="tail_loss_probes (0 = RTO only)")
    parser.add_argument("--fec", choices=["auto", "on", "off"], default="off")
    parser.add_argument("--fixed-thresholds", action="store_true", help="adaptive_reordering=False")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    if args.cc:
        matrix = [(args.cc, args.probes, args.fec, not args.fixed_thresholds)]
    else:
        matrix = [(cc, p, "off", a) for a in (False, True) for cc in ("newreno", "bbr") for p in (0, 2)]
        matrix += [(cc, 2, "auto", True) for cc in ("newreno", "bbr")]
    print(
        "| cc | TLP | adaptive | FEC | virtual s | DATA pkts | DATA lost on link | retransmitted | probes "
        "| (retx+probes)/lost | spurious | RTOs | RTO per 1k pkts | FEC repaired | wire/app |"
    )
    print("|---" * 15 + "|")
    for cc, probes, fec, adaptive in matrix:
        r = run(cc, probes, fec, args.seed, adaptive)
        lost = max(1, r["data_lost_on_link"])
        print(
            f"| {cc} | {probes} | {'yes' if adaptive else 'no'} | {fec} | {r['virtual_s']:.1f} | "
            f"{r['data_packets']} | "
            f"{r['data_lost_on_link']} | {r['retransmitted']} | {r['probes']} | "
            f"{(r['retransmitted'] + r['probes']) / lost:.2f} | {r['spurious']} | {r['rto']} | "
            f"{1000 * r['rto'] / r['data_packets']:.2f} | {r['fec_repaired']} | {r['wire_per_app']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
