"""``aetherflow node``: run a node headless, as an always-on peer.

::

    aetherflow node --data /srv/af --listen 0.0.0.0:4433 --serve notes
    aetherflow share notes --data /srv/af --user bob --perm rw     # prints an af1… ticket
    aetherflow node --data ~/af --listen 0.0.0.0:0 --join af1…      # on another machine

It prints one line per event worth knowing (listening, serving, joined) to stdout and
logs to stderr. SIGINT or SIGTERM shuts it down cleanly: peers are told, every edit is
flushed to disk, exit status 0. A user mistake (busy port, locked or unwritable data
directory, unreachable peer, bad ticket or flag) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import AetherFlowError, LocalProtocolError

DEFAULT_LISTEN = "0.0.0.0:4433"
PEER_PROBE_TIMEOUT = 5.0
"""How long ``--peer`` addresses get to answer at start-up before the node gives up (exit 2)."""
ADDRESSES_FILE = "addresses"
"""Written in the data directory at start: where this node listens (read by ``aetherflow share``)."""
RELAY_FILE = "relay"
"""Written in the data directory once registered: the home relay, pinned (read by ``aetherflow share``)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise LocalProtocolError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:4433")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, metavar="DIR", help="data directory (XDG default)")
    parser.add_argument("--name", default=None, help="this node's name, shown to peers")
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"UDP ({DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="a peer (repeatable)"
    )
    parser.add_argument("--relay", default=None, metavar="[NODE_ID@]HOST:PORT", help="the home relay")
    parser.add_argument(
        "--upgrade-interval",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="while a peer link is relayed, try for a direct path this often (60)",
    )
    parser.add_argument(
        "--keepalive",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="Quantum keepalive; the relay is taken as gone after 1.5x this of silence (10)",
    )
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT", help="serve /metrics and /healthz")
    parser.add_argument(
        "--serve", action="extend", nargs="+", default=[], metavar="DOC", help="documents to hold"
    )
    parser.add_argument(
        "--join", action="extend", nargs="+", default=[], metavar="TICKET", help="tickets to join"
    )
    parser.add_argument(
        "--host-on-relay",
        action="store_true",
        help="have the --relay's persistence peer keep the --serve documents (a serve ticket for it)",
    )
    parser.add_argument("--no-discovery", action="store_true", help="no mDNS on the LAN")
    parser.add_argument(
        "--interface",
        action="append",
        default=None,
        metavar="ADDR",
        help="mDNS only on this address (repeatable)",
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json", "kv"], help="log lines (text)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _say(text: str) -> None:
    print(text, flush=True)


def _configure_logging(args: argparse.Namespace) -> None:
    from aetherflow_node._logging import configure_logging

    configure_logging(args.log_format, args.log_level)


def _run(args: argparse.Namespace) -> int:
    from aetherflow_node._node import _address
    from aetherflow_sdk.session import Ticket

    listen = parse_listen(args.listen)
    if args.host_on_relay and (args.relay is None or not args.serve):
        raise LocalProtocolError("--host-on-relay needs --relay and the documents to host (--serve DOC)")
    peers = [_address(p) for p in args.peer]
    tickets = [Ticket.parse(t) for t in args.join]  # a bad ticket is refused before anything starts
    metrics = None
    if args.metrics is not None:
        from aetherflow_node._metrics import parse_metrics_address

        metrics = parse_metrics_address(args.metrics)
    _configure_logging(args)
    import trio

    result: int = trio.run(_serve, args, listen, peers, [t.encode() for t in tickets], metrics)
    return result


async def _serve(
    args: argparse.Namespace,
    listen: tuple[str, int],
    peers: list[tuple[str, int]],
    tickets: list[str],
    metrics: tuple[str, int] | None,
) -> int:
    from aetherflow_node._limits import Limits
    from aetherflow_node._node import open_node
    from aetherflow_sdk.quantum import QuantumConfig

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            data_dir=args.data,
            name=args.name,
            listen=listen,
            discovery=not args.no_discovery,
            interfaces=args.interface,
            relay=args.relay,
            limits=Limits(upgrade_interval=args.upgrade_interval),
            config=QuantumConfig(keepalive_interval=args.keepalive),
        ) as node:
            host, port = node.address
            _write_addresses(node.data_dir, node.reachable_addresses())
            if node.home_relay is None:
                (node.data_dir / RELAY_FILE).unlink(missing_ok=True)  # no stale relay in new tickets
            _say(f"node {node.node_id} ({node.name}) listening on {host}:{port}, data in {node.data_dir}")
            for address in peers:
                node.mesh.want(address, None, persistent=True, connection=await _probe(node, address))
            for name in args.serve:
                document = await node.open_document(name)
                _say(
                    f"serving {document.name!r} ({document.doc_id}); share it: aetherflow share "
                    f"{document.name} --data {node.data_dir} --user NAME --perm rw"
                )
                if args.host_on_relay:
                    await node.host_on_relay(document)
                    _say(f"hosted {document.name!r} on the relay's persistence peer")
            for ticket in tickets:
                document = await node.open_document(ticket)
                mode = "read-only" if document.read_only else "read-write"
                _say(f"joined {document.name!r} ({document.doc_id}), {mode}")
            async with anyio.create_task_group() as tg:
                if node.home_relay is not None:
                    tg.start_soon(_report_relay, node)
                if metrics is not None:
                    tg.start_soon(_serve_metrics, node, metrics)
                async for signum in signals:
                    _say(f"shutting down ({signal.Signals(signum).name}): telling peers, flushing storage")
                    break
                tg.cancel_scope.cancel()
        _say("stopped; every edit is on disk")
    return 0


async def _report_relay(node: Any) -> None:
    """Say when the node registers with its home relay (and its public address), and record it."""
    from aetherflow_node._routes import home_route

    home = node.home_relay
    while True:
        client = await home.wait_registered()
        route = home_route(home)
        observed = client.observed
        where = f"{observed[0]}:{observed[1]}" if observed else "unknown"
        _write_file(node.data_dir / RELAY_FILE, f"{route}\n")
        _say(f"registered with relay {route}, public address {where}")
        await client.closed.wait()


async def _serve_metrics(node: Any, address: tuple[str, int]) -> None:
    from aetherflow_node._metrics import serve_metrics

    async with serve_metrics(node.statistics, address[0], address[1]) as server:
        bound = server.address
        _say(f"metrics on http://{bound[0]}:{bound[1]}/metrics, health on /healthz")
        await anyio.sleep_forever()


async def _probe(node: Any, address: tuple[str, int]) -> Any:
    """Refuse to start with a peer address nothing answers on (exit 2), rather than retry forever."""
    try:
        with anyio.fail_after(PEER_PROBE_TIMEOUT):
            connection = await node.mesh.dial_once(address)
    except TimeoutError:
        raise LocalProtocolError(
            f"--peer {address[0]}:{address[1]}: no AetherFlow node answers there"
            f" (nothing within {PEER_PROBE_TIMEOUT:.0f} s); check the address and that the peer runs"
        ) from None
    except AetherFlowError as exc:
        raise LocalProtocolError(f"--peer {address[0]}:{address[1]}: {exc}") from None
    return connection


def _write_addresses(data_dir: Path, addresses: tuple[tuple[str, int], ...]) -> None:
    text = "".join(f"[{h}]:{p}\n" if ":" in h else f"{h}:{p}\n" for h, p in addresses)
    _write_file(data_dir / ADDRESSES_FILE, text)


def _write_file(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        print(f"aetherflow: warning: cannot record {path.name} in {path}: {exc.strerror}", file=sys.stderr)


command = Subcommand(
    help="run a node headless: hold documents, sync them with peers, until SIGINT/SIGTERM",
    add_arguments=_add_arguments,
    run=_run,
)
