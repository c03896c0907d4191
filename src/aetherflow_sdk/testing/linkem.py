"""Manual use of the link emulator: ``python -m aetherflow_sdk.testing.linkem``.

Creates two namespaces joined by an emulated link, prints how to reach them,
and keeps the link up until Ctrl-C (or ``--seconds``), then prints the
counters and removes everything. For example::

    sudo .venv/bin/python -m aetherflow_sdk.testing.linkem --delay-ms 20 --loss 0.02
    # in another terminal:
    sudo ip netns exec af-1a2b3c4d-b python -m http.server --bind 10.77.0.2
    sudo ip netns exec af-1a2b3c4d-a curl http://10.77.0.2:8000/
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence

from aetherflow_sdk._errors import AetherFlowError
from aetherflow_sdk.testing._linkcore import LinkConfig
from aetherflow_sdk.testing._linkem import emulated_link


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The link options shared by this tool and ``aetherflow bench transport``."""
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay per direction (ms)")
    parser.add_argument("--loss", type=float, default=0.0, help="random loss probability per direction")
    parser.add_argument(
        "--rate-mbit", type=float, default=0.0, help="bottleneck rate per direction, Mbit/s (0: unlimited)"
    )
    parser.add_argument("--queue", type=int, default=1000, help="drop-tail queue depth in packets")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra delay 0..J ms (reorders)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random loss and jitter")


def link_config_from(args: argparse.Namespace) -> LinkConfig:
    """The :class:`LinkConfig` that :func:`add_link_arguments` options describe."""
    return LinkConfig(
        delay=args.delay_ms / 1000,
        loss=args.loss,
        rate_bps=args.rate_mbit * 1e6 if args.rate_mbit > 0 else None,
        queue_packets=args.queue,
        jitter=args.jitter_ms / 1000,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aetherflow_sdk.testing.linkem",
        description="Two network namespaces joined by an emulated link (needs root).",
    )
    add_link_arguments(parser)
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    args = parser.parse_args(argv)
    link = None
    try:
        config = link_config_from(args)
        with emulated_link(config, seed=args.seed) as link:
            print(f"namespace A: {link.ns_a.name}  address {link.address_a}")
            print(f"namespace B: {link.ns_b.name}  address {link.address_b}")
            print(f"run a command in A: ip netns exec {link.ns_a.name} COMMAND")
            print("Ctrl-C to stop" if args.seconds <= 0 else f"stopping in {args.seconds:g} s", flush=True)
            threading.Event().wait(args.seconds if args.seconds > 0 else None)
    except AetherFlowError as exc:
        print(f"linkem: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    if link is not None and link.final_statistics is not None:
        print(json.dumps(link.final_statistics.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
