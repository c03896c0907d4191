"""``aetherflow bench``: benchmarks that compare side by side in one run.

Each workload (transport, sessions, replica ...) is an entry point in the group
``aetherflow.bench`` naming a :class:`aetherflow_node._cli.Subcommand`, so the
dispatcher imports only the workload that runs.
"""

from __future__ import annotations

import argparse

from aetherflow_node._cli import Subcommand, dispatch


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload_args", nargs=argparse.REMAINDER, help="WORKLOAD [options]")


def _run(args: argparse.Namespace) -> int:
    return dispatch(
        "aetherflow.bench",
        "aetherflow bench",
        "Benchmarks: each prints a table and can write JSON (--json FILE).",
        args.workload_args,
    )


command = Subcommand(
    help="run a benchmark (transport, sessions, replica ...)",
    add_arguments=_add_arguments,
    run=_run,
)
