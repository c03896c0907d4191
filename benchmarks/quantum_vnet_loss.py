"""Loss-recovery figures of the 10 %-loss virtual-network test (virtual clock, deterministic).

Runs the scenario of ``tests/quantum/test_connection_virtual.py::
test_ten_thousand_messages_over_loss_reordering_and_duplication`` (10,000 mixed messages,
10 % loss, 5 % duplication, 4 ms jitter, 10 ms one-way delay, 20 MB/s) with a chosen
congestion controller, tail-loss probes on or off and FEC mode, and prints one row per run.

    .venv/bin/python benchmarks/quantum_vnet_loss.py            # the standard matrix
    .venv/bin/python benchmarks/quantum_vnet_loss.py --cc bbr --probes 2 --fec off --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.quantum._vnet import LinkProfile, VirtualNetwork
from tests.quantum.test_connection_virtual import _mixed_messages, _pair, _transfer

from aetherflow_sdk.quantum import QuantumConfig


def run(cc: str, probes: int | None, fec: str | None, seed: int) -> dict[str, float]:
    kwargs: dict[str, object] = {"congestion_control": cc}
    if probes is not None:
        kwargs["tail_loss_probes"] = probes
    if fec is not None:
        kwargs["fec"] = fec
    config = QuantumConfig(**kwargs)  # type: ignore[arg-type]
    net = VirtualNetwork(
        seed, LinkProfile(delay=0.010, loss=0.10, duplicate=0.05, jitter=0.004, rate_bytes_per_s=20e6)
    )
    client_ep, server_ep, client, server = _pair(net, config)
    rng = random.Random(seed)
    messages = [(m, o) for m, o in _mixed_messages(rng, 10_000) if len(m) >= 4]
    start_virtual, start_wall = net.now, time.perf_counter()
    _transfer(net, client_ep, server_ep, client, server, messages)
    s = client.statistics()
    lost_on_link = net.counters.lost
    return {
        "virtual_s": net.now - start_virtual,
        "wall_s": time.perf_counter() - start_wall,
        "data_packets": s.packets_sent,
        "link_lost_both_ways": lost_on_link,
        "declared_lost": s.packets_lost,
        "retransmitted": s.packets_retransmitted,
        "probes": getattr(s, "tail_loss_probes", 0),
        "spurious": s.spurious_retransmissions,
        "rto": s.rto_count,
        "fec_recovered_by_peer": server.statistics().__dict__.get("fec_recovered_packets", 0)
        if hasattr(server.statistics(), "__dict__")
        else getattr(server.statistics(), "fec_recovered_packets", 0),
        "retx_bytes": client._sender.bytes_retransmitted,
        "app_bytes": s.app_bytes_sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cc", choices=["newreno", "bbr"])
    parser.add_argument("--probes", type=int, help="QuantumConfig.tail_loss_probes (0 = RTO only)")
    parser.add_argument("--fec", choices=["auto", "on", "off"])
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    if args.cc:
        matrix = [(args.cc, args.probes, args.fec)]
    else:
        matrix = [(cc, p, "off") for cc in ("newreno", "bbr") for p in (0, 2)]
    header = (
        f"{'cc':8} {'tlp':>3} {'fec':>4} {'virt s':>7} {'data pk':>8} {'lost':>6} {'retx':>6} "
        f"{'retx/lost':>9} {'probes':>6} {'spur':>5} {'RTOs':>5} {'RTO/1k':>6} {'fec rep':>7} "
        f"{'retxB/app':>9}"
    )
    print(header)
    for cc, probes, fec in matrix:
        r = run(cc, probes, fec, args.seed)
        lost = max(1, r["declared_lost"])
        print(
            f"{cc:8} {probes if probes is not None else '-':>3} {fec or '-':>4} {r['virtual_s']:7.2f} "
            f"{r['data_packets']:8d} {r['declared_lost']:6d} {r['retransmitted']:6d} "
            f"{(r['retransmitted'] + r['probes']) / lost:9.3f} {r['probes']:6d} {r['spurious']:5d} "
            f"{r['rto']:5d} {1000 * r['rto'] / r['data_packets']:6.3f} {r['fec_recovered_by_peer']:7d} "
            f"{r['retx_bytes'] / r['app_bytes']:9.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
