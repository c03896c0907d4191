"""``aetherflow edit PATH_OR_DOC [--join TICKET] [--name NAME] [--peer HOST:PORT] [--data DIR]``.

Opening a file imports its text into a document kept in the data directory; the
document's ID comes from the file's absolute path, so opening the same file again
reopens the same document (with its history), and Ctrl+S writes it back. With
``--join`` the document comes from a ticket's owner instead: nothing is imported, so
joining never doubles the text; PATH (optional) is where Ctrl+S saves.

User mistakes (a missing file, a file that is not UTF-8, a bad ticket) end in one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

import attrs

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import LocalProtocolError

DEFAULT_LISTEN = ("0.0.0.0", 0)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="PATH_OR_DOC",
        nargs="?",
        help="a file to edit (created on save if missing), or a document name without a file",
    )
    parser.add_argument("--join", metavar="TICKET", help="open a shared document from an af1… ticket")
    parser.add_argument("--name", metavar="NAME", help="your name, shown beside your cursor (default: $USER)")
    parser.add_argument(
        "--peer",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a node to connect to (repeatable); tickets carry their owner's addresses already",
    )
    parser.add_argument("--relay", metavar="HOST:PORT", help="reach peers through a relay (not yet)")
    parser.add_argument("--no-lan", action="store_true", help="do not look for peers on the LAN (mDNS)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", default=None, help="where peers reach you (0.0.0.0:0)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="the node's data directory (~/.local/share/aetherflow)"
    )
    parser.add_argument("--wrap", action="store_true", help="start with soft wrap on")


def _looks_like_path(target: str) -> bool:
    return os.sep in target or Path(target).exists() or bool(Path(target).suffix)


def read_text_file(path: Path) -> str:
    """A file's text with its line breaks untouched (``\\r\\n`` stays), or a one-line error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        raise LocalProtocolError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise LocalProtocolError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalProtocolError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from aetherflow_node._share import parse_address

    if args.target is None and args.join is None:
        raise LocalProtocolError("give a file to edit, a document name, or --join TICKET")
    if args.join is not None and not args.join.strip().startswith("af1"):
        raise LocalProtocolError("--join takes a ticket (it starts with 'af1'); ask its owner to press F2")
    peers = [parse_address(text) for text in args.peer]
    listen = DEFAULT_LISTEN
    if args.listen:  # port 0 (any free port) is fine here
        host, _, port = args.listen.rpartition(":")
        listen = parse_address(args.listen) if port != "0" else (host.strip("[]") or "0.0.0.0", 0)
    path: Path | None = None
    seed = ""
    if args.target is not None and (args.join is not None or _looks_like_path(args.target)):
        path = Path(args.target)
        if args.join is None:
            seed = read_text_file(path)
    user = args.name or getpass.getuser() or "me"
    opened = _Opening(ticket=args.join, path=path, name=None if path else args.target, seed=seed, user=user)
    asyncio.run(_edit(opened, args.data, listen, peers, args.relay, not args.no_lan, args.wrap))
    return 0


@attrs.frozen(kw_only=True)
class _Opening:
    """What to open: a ticket, a file (with its text), or a document by name."""

    ticket: str | None
    path: Path | None
    name: str | None
    seed: str
    user: str


async def _edit(
    opening: _Opening,
    data_dir: Path | None,
    listen: tuple[str, int],
    peers: list[tuple[str, int]],
    relay: str | None,
    discovery: bool,
    wrap: bool,
) -> None:
    from aetherflow_node import open_node
    from tui_editor._app import EditorApp
    from tui_editor._nodeport import NodeDocument, open_file_document

    async with open_node(
        data_dir=data_dir, name=opening.user, listen=listen, discovery=discovery, peers=peers, relay=relay
    ) as node:
        if opening.ticket is not None:
            document = await node.open_document(opening.ticket)  # joined: nothing imported, nothing doubled
        elif opening.path is not None:
            document = await open_file_document(node, opening.path, opening.seed)
        else:
            assert opening.name is not None
            document = await node.open_document(opening.name)
        label = opening.path.name if opening.path is not None else document.name
        port = NodeDocument(node, document, label=label)
        app = EditorApp(document=port, node=port, user=opening.user, path=opening.path, soft_wrap=wrap)
        await app.run_async()


command = Subcommand(
    help="edit a file or a shared document with others, in the terminal",
    add_arguments=_add_arguments,
    run=_run,
)
