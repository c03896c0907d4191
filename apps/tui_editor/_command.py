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
import hashlib
import os
from pathlib import Path

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import LocalProtocolError

DEFAULT_LISTEN = ("0.0.0.0", 0)


def _default_data_dir() -> Path:
    from aetherflow_node._share import default_data_dir

    return default_data_dir() / "editor"


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
        help="an address of the ticket's owner to try before the ticket's own (repeatable)",
    )
    parser.add_argument("--relay", metavar="HOST:PORT", help="reach peers through a relay (not yet)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", default=None, help="where peers reach you (0.0.0.0:0)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data directory (default $AETHERFLOW_HOME/editor)"
    )
    parser.add_argument("--wrap", action="store_true", help="start with soft wrap on")


def _looks_like_path(target: str) -> bool:
    return os.sep in target or Path(target).exists() or bool(Path(target).suffix)


def document_id_for(path: Path) -> str:
    """The document a file maps to: the same absolute path, the same document."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:20]
    return f"file-{digest}"


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
    from aetherflow_sdk.session import InvalidTicket, Ticket

    if args.relay is not None:
        raise LocalProtocolError(
            "--relay: relays are not available in this version yet; use a ticket (--join) "
            "with a direct address, or --peer HOST:PORT"
        )
    ticket = None
    if args.join is not None:
        try:
            ticket = Ticket.parse(args.join)
        except InvalidTicket as exc:
            raise LocalProtocolError(f"--join: {exc}") from None
    elif args.peer:
        raise LocalProtocolError("--peer needs --join TICKET: the ticket is what lets you in")
    if args.target is None and ticket is None:
        raise LocalProtocolError("give a file to edit, a document name, or --join TICKET")
    peers = [parse_address(text) for text in args.peer]
    listen = DEFAULT_LISTEN
    if args.listen:  # port 0 (any free port) is fine here
        host, _, port = args.listen.rpartition(":")
        listen = parse_address(args.listen) if port != "0" else (host.strip("[]") or "0.0.0.0", 0)
    data_dir: Path = args.data if args.data is not None else _default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise LocalProtocolError(f"--data {data_dir} is a file; give a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalProtocolError(f"cannot use --data {data_dir}: {exc.strerror or exc}") from None

    path: Path | None = None
    seed: str | None = None
    if args.target is not None and (ticket is not None or _looks_like_path(args.target)):
        path = Path(args.target)
        if ticket is None:
            seed = read_text_file(path)
    if ticket is not None:
        doc_id, label = ticket.document, path.name if path else ticket.document
    elif path is not None:
        doc_id, label = document_id_for(path), path.name
    else:
        doc_id = label = args.target
    user = args.name or getpass.getuser() or "me"
    asyncio.run(_edit(doc_id, label, user, data_dir, listen, ticket, peers, seed, path, args.wrap))
    return 0


async def _edit(
    doc_id: str,
    label: str,
    user: str,
    data_dir: Path,
    listen: tuple[str, int],
    ticket: object,
    peers: list[tuple[str, int]],
    seed: str | None,
    path: Path | None,
    wrap: bool,
) -> None:
    from tui_editor._app import EditorApp
    from tui_editor._direct import open_direct_peer

    async with open_direct_peer(
        doc_id=doc_id,
        label=label,
        user=user,
        data_dir=data_dir,
        listen=listen,
        join=ticket,  # type: ignore[arg-type]
        peers=peers,
        seed=seed,
    ) as peer:
        app = EditorApp(document=peer, node=peer, user=user, path=path, soft_wrap=wrap)
        await app.run_async()


command = Subcommand(
    help="edit a file or a shared document with others, in the terminal",
    add_arguments=_add_arguments,
    run=_run,
)
