"""``aetherflow share DOC --user NAME --perm rw|ro [--expires 7d]``: print a ticket for a document.

The ticket carries a token signed by this node's identity (``identity.key`` in
the data directory, created on first use), so this node is the issuer: peers
that trust it, or that treat it as the document's creator, will let the user in.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import LocalProtocolError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# A ticket is a credential: longer than ten years is a typo, and a bound keeps ``exp`` far below
# 2**53, the largest whole number every JSON verifier reads exactly.
MAX_EXPIRES = 10 * 365 * 86_400


def default_data_dir() -> Path:
    """``$AETHERFLOW_HOME``, else ``~/.local/share/aetherflow``."""
    home = os.environ.get("AETHERFLOW_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "aetherflow"


def parse_duration(text: str) -> float:
    """``"7d"`` -> seconds. Units: s, m, h, d, w; at most ten years."""
    match = _DURATION.match(text)
    if match is None:
        raise LocalProtocolError(f"--expires {text!r}: use a number and a unit, like 30m, 12h, 7d or 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise LocalProtocolError(f"--expires {text!r} must be longer than zero")
    if not seconds <= MAX_EXPIRES:  # also refuses inf and nan (400 digits overflow a float)
        raise LocalProtocolError(f"--expires {text!r} is too long: at most ten years (520w)")
    return seconds


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LocalProtocolError(f"address {text!r} is not host:port (for IPv6 write [::1]:4433)")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("document", metavar="DOC", help="the document ID to share")
    parser.add_argument(
        "--user", required=True, metavar="NAME", help="who the ticket is for (the token's sub)"
    )
    parser.add_argument("--perm", required=True, choices=["rw", "ro"], help="read-write or read-only")
    parser.add_argument("--expires", default="7d", metavar="DURATION", help="lifetime: 30m, 12h, 7d, 2w (7d)")
    parser.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a direct address of this node to put in the ticket (repeatable)",
    )
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a relay to put in the ticket (repeatable)",
    )
    parser.add_argument(
        "--holder", metavar="NODE_ID", help="bind the token to this node ID: only that node may use it"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where identity.key lives ($AETHERFLOW_HOME or ~/.local/share/aetherflow)",
    )


def _run(args: argparse.Namespace) -> int:
    from aetherflow_sdk._identity import Identity, parse_node_id
    from aetherflow_sdk.session import describe_ticket, share_ticket

    expires_in = parse_duration(args.expires)
    direct = tuple(parse_address(a) for a in args.address)
    relays = tuple(f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in map(parse_address, args.relay))
    holder = parse_node_id(args.holder) if args.holder else None
    data_dir: Path = args.data_dir or default_data_dir()
    try:
        identity = Identity.load_or_create(data_dir / "identity.key")
    except OSError as exc:
        raise LocalProtocolError(f"cannot use data directory {data_dir}: {exc.strerror or exc}") from None
    ticket = share_ticket(
        identity,
        document=args.document,
        user=args.user,
        permission=args.perm,
        expires_in=expires_in,
        now=time.time(),
        direct=direct,
        relays=relays,
        holder=holder,
    )
    print(ticket.encode())
    print(
        f"{args.perm} ticket for {args.user!r}, valid {args.expires}: {describe_ticket(ticket)}",
        file=sys.stderr,
    )
    return 0


command = Subcommand(
    help="print a ticket that lets a user join a document (read-write or read-only)",
    add_arguments=_add_arguments,
    run=_run,
)
