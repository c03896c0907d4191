"""``aetherflow share DOC`` and ``aetherflow revoke DOC``, run against a node's data directory.

``share`` prints a ticket for a document the node holds: its identity, name and secret, a
token signed by this node's identity (``identity.key``), and the addresses where the node
listens (recorded by ``aetherflow node`` in ``DATA/addresses``, or given with
``--address``). It never prints a ticket nothing can use: without an address it says what
is missing. ``DOC`` that is not one of the node's documents still makes a plain SDK ticket
(document ID as given) when ``--address`` names where to connect.

``revoke`` revokes every ticket issued for ``--user`` on ``DOC``. If the node runs, it
picks the signed revocation up from its data directory within seconds and passes it to
every holder; otherwise this command starts the node briefly to tell the holders it can
reach, and the others learn it from whichever holder they meet next.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from aetherflow_node._cli import Subcommand
from aetherflow_node._datadir import CATALOG_FILE, DataDirError
from aetherflow_node._datadir import default_data_dir as default_data_dir  # (the editor imports it here)
from aetherflow_sdk import LocalProtocolError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# A ticket is a credential: longer than ten years is a typo, and a bound keeps ``exp`` far below
# 2**53, the largest whole number every JSON verifier reads exactly.
MAX_EXPIRES = 10 * 365 * 86_400
REVOKE_WAIT = 5.0
"""Seconds ``aetherflow revoke`` (node not running) spends reaching known holders."""


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


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the node's data directory ($AETHERFLOW_HOME, else $XDG_DATA_HOME/aetherflow)",
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("document", metavar="DOC", help="the document's name or ID")
    parser.add_argument(
        "--user", required=True, metavar="NAME", help="who the ticket is for (the token's sub)"
    )
    parser.add_argument(
        "--perm",
        required=True,
        choices=["rw", "ro", "serve"],
        help="read-write, read-only, or serve (a persistence peer's: needs --holder RELAY_NODE_ID)",
    )
    parser.add_argument("--expires", default="7d", metavar="DURATION", help="lifetime: 30m, 12h, 7d, 2w (7d)")
    parser.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a direct address of this node to put in the ticket (repeatable; default: where it listens)",
    )
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="[NODE_ID@]HOST:PORT",
        help="a relay to put in the ticket (repeatable; default: the node's home relay, if it has one)",
    )
    parser.add_argument(
        "--holder", metavar="NODE_ID", help="bind the token to this node ID: only that node may use it"
    )
    _add_data_dir(parser)


def _recorded_addresses(data_dir: Path) -> tuple[tuple[str, int], ...]:
    from aetherflow_node._daemon import ADDRESSES_FILE

    try:
        lines = (data_dir / ADDRESSES_FILE).read_text().split()
    except OSError:
        return ()
    found = []
    for line in lines:
        try:
            found.append(parse_address(line))
        except LocalProtocolError:
            continue
    return tuple(found)


def _ticket_relay(text: str) -> str:
    """``[NODE_ID@]HOST:PORT`` for a ticket's ``relays`` (a host name is kept as written)."""
    from aetherflow_sdk._identity import parse_node_id

    pinned, _, where = text.rpartition("@")
    if pinned:
        try:
            parse_node_id(pinned)
        except (ValueError, LocalProtocolError):
            raise LocalProtocolError(f"--relay {text!r}: expected HOST:PORT or NODE_ID@HOST:PORT") from None
    host, port = parse_address(where)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{pinned}@{where}" if pinned else where


def _recorded_relay(data_dir: Path) -> tuple[str, ...]:
    """The home relay the node recorded when it registered (pinned), if it has one."""
    from aetherflow_node._daemon import RELAY_FILE
    from aetherflow_node._routes import parse_relay

    try:
        text = (data_dir / RELAY_FILE).read_text().strip()
    except OSError:
        return ()
    try:
        parse_relay(text)
    except LocalProtocolError:
        return ()
    return (text,)


def _open_catalog(data_dir: Path):  # type: ignore[no-untyped-def]
    from aetherflow_node._catalog import Catalog

    if not (data_dir / CATALOG_FILE).exists():
        return None
    return Catalog(data_dir / CATALOG_FILE)


def _find(catalog, document: str):  # type: ignore[no-untyped-def]
    if catalog is None:
        return None
    record = catalog.document(document)
    if record is not None:
        return record
    named = catalog.by_name(document)
    if len(named) > 1:
        ids = ", ".join(r.doc_id for r in named)
        raise LocalProtocolError(f"{len(named)} documents are called {document!r} here ({ids}); give its ID")
    return named[0] if named else None


def _run(args: argparse.Namespace) -> int:
    from aetherflow_node._datadir import load_identity
    from aetherflow_sdk import uuid7
    from aetherflow_sdk._identity import parse_node_id
    from aetherflow_sdk.session import Permission, describe_ticket, share_ticket
    from aetherflow_sdk.session._ticket import MAX_ADDRESSES

    expires_in = parse_duration(args.expires)
    direct = tuple(parse_address(a) for a in args.address)
    relays = tuple(_ticket_relay(text) for text in args.relay)
    holder = parse_node_id(args.holder) if args.holder else None
    if args.perm == "serve" and holder is None:
        raise LocalProtocolError("--perm serve is for one persistence peer: give --holder RELAY_NODE_ID")
    data_dir: Path = args.data_dir or default_data_dir()
    identity = load_identity(data_dir)
    catalog = _open_catalog(data_dir)
    try:
        record = _find(catalog, args.document)
        if record is not None and record.issuer != identity.node_id:
            raise LocalProtocolError(
                f"the node in {data_dir} joined {record.name!r} by ticket; only the node that created it"
                " can share it (ask its creator for a ticket)"
            )
        if not direct and record is not None:
            direct = _recorded_addresses(data_dir)
        if not relays and record is not None:
            relays = _recorded_relay(data_dir)
        if not direct and not relays:
            where = (
                f"start it once with `aetherflow node --data {data_dir}` (it records where it listens)"
                if record is not None
                else f"no node in {data_dir} holds a document {args.document!r}: create it with"
                f" `aetherflow node --data {data_dir} --serve {args.document}`, or name an address"
            )
            raise LocalProtocolError(
                f"a ticket needs an address to be of use: {where}, or pass --address HOST:PORT"
            )
        token_id = str(uuid7())
        now = time.time()
        ticket = share_ticket(
            identity,
            document=record.doc_id if record is not None else args.document,
            user=args.user,
            permission=args.perm,
            expires_in=expires_in,
            now=now,
            direct=direct[: max(MAX_ADDRESSES - len(relays), 0)],
            relays=relays[:MAX_ADDRESSES],
            holder=holder,
            name=record.name if record is not None else "",
            secret=record.secret if record is not None else None,
            token_id=token_id,
        )
        if record is not None and catalog is not None:
            catalog.add_issued(token_id, record.doc_id, args.user, Permission(args.perm), now + expires_in)
    finally:
        if catalog is not None:
            catalog.close()
    print(ticket.encode(), flush=True)
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


# -- revoke ---------------------------------------------------------------------------------------


def _add_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("document", metavar="DOC", help="the document's name or ID")
    parser.add_argument("--user", required=True, metavar="NAME", help="revoke every ticket issued for NAME")
    _add_data_dir(parser)


def _run_revoke(args: argparse.Namespace) -> int:
    from aetherflow_node._datadir import DataDirLock, load_identity
    from aetherflow_node._mesh import revocation_payload

    data_dir: Path = args.data_dir or default_data_dir()
    catalog = _open_catalog(data_dir)
    if catalog is None:
        raise LocalProtocolError(f"no node has run in {data_dir}: nothing to revoke")
    try:
        record = _find(catalog, args.document)
        if record is None:
            raise LocalProtocolError(f"no document {args.document!r} in {data_dir}")
        identity = load_identity(data_dir)
        if record.issuer != identity.node_id:
            raise LocalProtocolError(f"only the node that created {record.name!r} can revoke its tickets")
        issued = [t for t in catalog.issued(record.doc_id, args.user) if not t.revoked]
        if not issued:
            raise LocalProtocolError(f"no live ticket for {args.user!r} on {record.name!r} was issued here")
        lock = DataDirLock(data_dir)
        try:
            lock.acquire()
        except DataDirError:
            running = True
        else:
            running = False
            lock.release()
        if running:
            for token in issued:
                payload = revocation_payload(record.doc_id, token.token_id, token.expires)
                catalog.add_revocation(record.doc_id, token.token_id, token.expires, identity.sign(payload))
                catalog.mark_revoked(token.token_id)
            print(
                f"revoked {len(issued)} ticket(s) for {args.user!r} on {record.name!r}; the running node"
                " passes it to every holder within seconds"
            )
            return 0
    finally:
        catalog.close()
    import trio

    told: int = trio.run(_revoke_with_node, data_dir, record.doc_id, args.user)
    print(
        f"revoked {len(issued)} ticket(s) for {args.user!r} on {record.name!r}; told {told} holder(s) now,"
        " the others learn it from the next holder they meet"
    )
    return 0


async def _revoke_with_node(data_dir: Path, doc_id: str, user: str) -> int:
    import anyio

    from aetherflow_node._node import open_node

    async with open_node(data_dir=data_dir, listen=("0.0.0.0", 0), discovery=False) as node:
        document = await node.open_document(doc_id)
        holders = {node_id for node_id, _ in node.catalog.holders(doc_id)}
        with anyio.move_on_after(REVOKE_WAIT):
            while not holders <= {p for p, link in node.mesh.links.items() if doc_id in link.docs}:
                event = node.activity
                await event.wait()
        told = sum(1 for link in node.mesh.links.values() if doc_id in link.docs)
        await node.revoke(document, user=user)
        with anyio.move_on_after(1.0):  # the control messages go out
            await anyio.sleep(0.5)
    return told


revoke_command = Subcommand(
    help="revoke the tickets issued for a user on a document, on every holder",
    add_arguments=_add_revoke_arguments,
    run=_run_revoke,
)
