"""``aetherflow demo``: the product tour. Three nodes on loopback edit one document together.

Your node opens ``tour.md`` in the editor; two scripted peers, ada and grace, each on a
node of their own, join it with ``rw`` tickets and type into it by replaying a real
editing trace, with their cursors showing. Type along; quit with Ctrl+Q. Then the demo
prints what happened: the edits exchanged and the latency from a keystroke on a peer's
node until it is applied on yours (p50/p99).

``--headless`` runs the same without the editor (CI, pipes): the peers type, the three
replicas converge, the figures are printed. Without a terminal the demo is headless.
Every wait is bounded and ends in one clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import LocalProtocolError

if TYPE_CHECKING:
    from aetherflow_node import Document

DOCUMENT: Final = "tour.md"
TYPISTS: Final = (("ada", "#6eeb83"), ("grace", "#ffbc42"))
MAX_EDITS: Final = 3000  # the shipped trace slice
_STEP_TIMEOUT: Final = 15.0  # seconds one step may take on loopback
_PAUSE_UI: Final = (0.03, 0.12)  # seconds between two keystrokes of a scripted peer (a person's pace)
_PAUSE_HEADLESS: Final = (0.002, 0.01)
_INTRO: Final = (
    "# The AetherFlow tour\n"
    "\n"
    "Three nodes on this machine share this document. ada and grace are scripted peers: each\n"
    "replays a real editing trace (the start of a LaTeX paper, typed keystroke by keystroke) into\n"
    "its own section below. Type anywhere. F2 shares, F3 peers, F1 help, Ctrl+Q quits.\n"
    "\n"
)


class DemoFailed(Exception):
    """A step of the tour did not complete; the message says which."""


def _edit_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_EDITS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_EDITS}, got {value}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless", action="store_true", help="no editor: type, converge, print the figures"
    )
    parser.add_argument(
        "--edits",
        type=_edit_count,
        default=None,
        metavar="N",
        help=f"keystrokes each scripted peer types (default: 300 headless, {MAX_EDITS} in the editor)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the three nodes keep their data (default: a temporary directory, removed at the end)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the typing rhythm (default: random)")


def _out(line: str = "") -> None:
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    headless = args.headless or not (sys.stdin.isatty() and sys.stdout.isatty())
    edits = args.edits if args.edits is not None else (300 if headless else MAX_EDITS)
    try:
        if args.data_dir is not None:
            data_dir: Path = args.data_dir
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LocalProtocolError(
                    f"cannot use --data-dir {data_dir}: {exc.strerror or exc}; give a directory you can write"
                ) from None
            asyncio.run(_tour(data_dir, edits, seed, headless))
        else:
            with tempfile.TemporaryDirectory(prefix="aetherflow-demo-") as temporary:
                asyncio.run(_tour(Path(temporary), edits, seed, headless))
    except BaseException as exc:  # task groups wrap a failed step in exception groups
        if isinstance(exc, BaseExceptionGroup):
            failed, rest = exc.split(DemoFailed)
            if failed is None or rest is not None:
                raise
        elif not isinstance(exc, DemoFailed):
            raise
        first: BaseException = exc
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(f"aetherflow demo: {first} (seed {seed})", file=sys.stderr)
        return 1
    return 0


async def _within(what: str, wait: Callable[[], Any], timeout: float = _STEP_TIMEOUT) -> Any:
    import anyio

    with anyio.move_on_after(timeout):
        return await wait()
    raise DemoFailed(f"{what} did not finish within {timeout:.0f} s on loopback")


async def _until(condition: Callable[[], bool]) -> None:
    import anyio

    while not condition():
        await anyio.sleep(0.01)  # callers bound it with _within


def _short(node_id: str) -> str:
    return node_id[:10] + ".."


async def _tour(data_dir: Path, edits: int, seed: int, headless: bool) -> None:
    from contextlib import AsyncExitStack

    import anyio

    from aetherflow_node import open_node
    from tui_editor._tour import LatencyProbe, load_trace, section_header, type_trace

    rng = random.Random(seed)
    started = time.monotonic()
    _out(f"aetherflow demo: three nodes on loopback edit one document together (--seed {seed})")
    _out()
    patches = load_trace()
    async with AsyncExitStack() as stack:
        nodes = {}
        for name in ("you", *(typist for typist, _ in TYPISTS)):
            nodes[name] = await stack.enter_async_context(
                open_node(data_dir=data_dir / name, name=name, listen=("127.0.0.1", 0), discovery=False)
            )
            host, port = nodes[name].address
            _out(f"node {name:<6} {host}:{port:<5}  node ID {_short(nodes[name].node_id)}")
        mine = await nodes["you"].open_document(DOCUMENT)
        if not len(mine):
            mine.replica.seed(_INTRO + "".join(section_header(t) + "\n" for t, _ in TYPISTS))
        docs: dict[str, Document] = {"you": mine}
        for typist, _ in TYPISTS:
            ticket = nodes["you"].share(mine, user=typist, perm="rw")
            docs[typist] = await nodes[typist].open_document(ticket)
        await _within(
            "the peers receiving the document",
            lambda: _until(lambda: all(section_header(t) in docs[t].text for t, _ in TYPISTS)),
        )
        _out(f"ada and grace joined {DOCUMENT!r} with rw tickets from your node ({len(ticket)} characters)")
        probe = LatencyProbe()
        probe.watch(mine.replica)
        pause = _PAUSE_HEADLESS if headless else _PAUSE_UI
        typed: dict[str, int] = {}

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for name, color in TYPISTS:
                own_rng = random.Random(rng.randrange(1 << 32))
                tg.start_soon(
                    type_trace, docs[name], name, color, patches, edits, pause, own_rng, probe, typed
                )
            if headless:
                _out(f"ada and grace type {edits} keystrokes each, replaying a real editing trace ...")
            else:
                await _run_editor(nodes["you"], mine)
                tg.cancel_scope.cancel()
        typing = time.monotonic() - t0

        def converged() -> bool:
            texts = {d.text for d in docs.values()}
            vectors = [d.replica.state_vector_dict() for d in docs.values()]
            return len(texts) == 1 and all(v == vectors[0] for v in vectors)

        await _within("convergence of the three replicas", lambda: _until(converged))
        _report(docs, typed, probe, typing, headless)
    _out(
        f"done in {time.monotonic() - started:.2f} s. Next: aetherflow edit FILE, docs/editor.md, README.md."
    )


async def _run_editor(node: Any, document: Document) -> None:
    from tui_editor._app import EditorApp
    from tui_editor._nodeport import NodeDocument

    port = NodeDocument(node, document)
    app = EditorApp(document=port, node=port, user="you", color="#30bced", soft_wrap=True)
    await app.run_async()


def _report(
    docs: dict[str, Document], typed: dict[str, int], probe: Any, typing: float, headless: bool
) -> None:
    mine = docs["you"]
    _out()
    if headless:
        for line in mine.text.rstrip("\n").split("\n")[-12:]:
            for piece in textwrap.wrap(line, 96)[:2] or [""]:
                _out(f"    | {piece}")
        _out()
    stats = mine.replica.statistics()
    _out(
        f"converged: all three replicas hold the same {len(mine)} characters (equal text and equal Yjs "
        "state vectors)"
    )
    counts = ", ".join(f"{name} typed {typed.get(name, 0)}" for name, _ in TYPISTS)
    _out(
        f"edits exchanged: {counts} in {typing:.2f} s; you made {stats.local_transactions} edits; "
        f"your node applied {stats.remote_updates_applied} remote updates"
    )
    figures = probe.percentiles()
    if figures is None:
        _out("latency: too few edits crossed to measure")
    else:
        p50, p99 = figures
        _out(
            f"latency, a keystroke on ada's or grace's node until applied on yours: p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms ({len(probe.samples)} keystrokes)"
        )
    _out()


command = Subcommand(
    help="the tour: scripted peers type into a shared document in the editor; edits and latency at the end",
    add_arguments=_add_arguments,
    run=_run,
)
