"""``aetherflow bench editor``: the editor's speed, measured on real nodes and real apps on loopback.

* keystroke to remote screen: a key pressed in one editor (Pilot) until the other editor
  renders the line that shows it (its ``render_line`` returns the new text), p50/p99;
* a 1 MB document: start to first paint (the app is ready after its first frame), the
  memory that opening it costs (resident set growth), and the time the editor spends
  applying one remote edit to it (pump + widget update; goal: under one 60 Hz frame).

Speed goals live here, not in the tests. Prints a table; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aetherflow_node._cli import Subcommand
from aetherflow_sdk import LocalProtocolError

FRAME = 1 / 60  # seconds: one frame at 60 Hz
_WAIT = 10.0  # seconds one expected render may take before the run fails


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def _until(condition: Callable[[], bool], what: str) -> None:
    import anyio

    with anyio.move_on_after(_WAIT):
        while not condition():
            await anyio.sleep(0.0005)
        return
    raise RuntimeError(f"{what}: not within {_WAIT} s")


async def _pair(tmp: Path, text: str) -> Any:
    """Two nodes on loopback and one document shared rw (an async context manager)."""
    import contextlib

    from aetherflow_node import open_node
    from tui_editor._nodeport import NodeDocument

    @contextlib.asynccontextmanager
    async def pair() -> Any:
        async with (
            open_node(data_dir=tmp / "a", name="alice", listen=("127.0.0.1", 0), discovery=False) as a,
            open_node(data_dir=tmp / "b", name="bob", listen=("127.0.0.1", 0), discovery=False) as b,
        ):
            doc_a = await a.open_document("bench.txt")
            if text:
                doc_a.replica.seed(text)
            doc_b = await b.open_document(a.share(doc_a, user="bob", perm="rw"))
            await _until(lambda: len(doc_b) == len(doc_a), "the joiner receiving the document")
            yield NodeDocument(a, doc_a), NodeDocument(b, doc_b)

    return pair()


def _strip_text(strip: Any) -> str:
    return "".join(segment.text for segment in strip)


async def bench_keystrokes(tmp: Path, keys: int) -> dict[str, Any]:
    import anyio
    from textual.widgets.text_area import Selection

    from tui_editor._app import EditorApp

    samples: list[float] = []
    arrivals: list[float] = []
    async with await _pair(tmp, "typing here: \n") as (alice_doc, bob_doc):
        arrived: list[float] = []

        def on_update(update: bytes, origin: object, local: bool) -> None:
            if not local:
                arrived.append(time.perf_counter())

        bob_doc.replica.subscribe_updates(on_update)
        alice = EditorApp(document=alice_doc, node=alice_doc, user="alice", show_peers=False)
        bob = EditorApp(document=bob_doc, node=bob_doc, user="bob", show_peers=False)
        width = keys + 40  # the whole typed line stays in view
        async with alice.run_test(size=(width, 20)) as pa, bob.run_test(size=(width, 20)):
            alice.editor.selection = Selection.cursor((0, 13))
            seen: dict[str, float] = {}
            original = bob.editor.render_line

            def render_line(y: int) -> Any:
                strip = original(y)
                text = _strip_text(strip)
                if "typing here:" in text and text not in seen:
                    seen[text] = time.perf_counter()
                return strip

            bob.editor.render_line = render_line  # type: ignore[method-assign]
            for number in range(keys):
                typed = "typing here: " + "".join("abcdefghij"[i % 10] for i in range(number + 1))
                start = time.perf_counter()
                await pa.press("abcdefghij"[number % 10])

                def shown(typed: str = typed) -> bool:
                    return any(typed + " " in text or text.rstrip().endswith(typed) for text in seen)

                await _until(shown, f"keystroke {number} on the other screen")
                at = min(t for text, t in seen.items() if typed in text)
                samples.append(at - start)
                if arrived:
                    arrivals.append(arrived[0] - start)
                arrived.clear()
                seen.clear()
                await anyio.sleep(0.02)  # a fast typist: 50 keys/s
    return {
        "keystrokes": len(samples),
        "key_to_remote_screen_p50_ms": _percentile(samples, 0.5) * 1000,
        "key_to_remote_screen_p99_ms": _percentile(samples, 0.99) * 1000,
        "key_to_remote_screen_max_ms": max(samples) * 1000,
        "key_to_remote_replica_p50_ms": _percentile(arrivals, 0.5) * 1000,
        "key_to_remote_replica_p99_ms": _percentile(arrivals, 0.99) * 1000,
    }


def _megabyte_text(size: int) -> str:
    from tui_editor._tour import load_trace

    text = ""
    for position, deleted, inserted in load_trace():
        text = text[:position] + inserted + text[position + deleted :]
    return (text * (size // len(text) + 1))[:size]


async def bench_large(tmp: Path, size: int, edits: int) -> dict[str, Any]:
    import anyio

    from tui_editor._app import EditorApp

    text = _megabyte_text(size)
    async with await _pair(tmp, text) as (alice_doc, bob_doc):
        before = _rss_mb()
        start = time.perf_counter()
        alice = EditorApp(document=alice_doc, node=alice_doc, user="alice")
        async with alice.run_test(size=(120, 40)) as pilot:
            first_paint = time.perf_counter() - start
            grown = _rss_mb() - before
            applies: list[float] = []
            original = alice.editor.apply_pending

            def apply_pending(*, caret: int | None = None) -> int:
                began = time.perf_counter()
                count = original(caret=caret)
                if count and caret is None:
                    applies.append(time.perf_counter() - began)
                return count

            alice.editor.apply_pending = apply_pending  # type: ignore[method-assign]
            rows = alice.editor.document.line_count
            for number in range(edits):
                at = (number * 7919) % len(bob_doc.replica)
                bob_doc.doc.insert(at, "x")
                await _until(lambda n=number: len(applies) > n, "a remote edit shown")  # type: ignore[misc]
                await pilot.pause()
                await anyio.sleep(0.005)
            assert alice_doc.replica.text == alice.model.lines.text
    return {
        "document_bytes": len(text.encode()),
        "document_rows": rows,
        "start_to_first_paint_ms": first_paint * 1000,
        "memory_growth_mb": grown,
        "remote_edits": len(applies),
        "apply_remote_edit_p50_ms": statistics.median(applies) * 1000,
        "apply_remote_edit_max_ms": max(applies) * 1000,
    }


def format_report(report: dict[str, Any]) -> str:
    keys, large = report["keystrokes"], report["large"]
    frame = FRAME * 1000
    rows = [
        ("keystroke to remote screen, p50", f"{keys['key_to_remote_screen_p50_ms']:.1f} ms", ""),
        ("keystroke to remote screen, p99", f"{keys['key_to_remote_screen_p99_ms']:.1f} ms", "goal <= 50 ms"),
        ("  of which: until the other node's replica has it, p50",
         f"{keys['key_to_remote_replica_p50_ms']:.1f} ms", ""),
        ("  of which: until the other node's replica has it, p99",
         f"{keys['key_to_remote_replica_p99_ms']:.1f} ms", ""),
        (f"  ({keys['keystrokes']} keystrokes, loopback)", "", ""),
        (f"{large['document_bytes'] / 1e6:.1f} MB document ({large['document_rows']} rows): first paint",
         f"{large['start_to_first_paint_ms']:.0f} ms", ""),
        ("  memory to open it in the editor", f"{large['memory_growth_mb']:.0f} MB", ""),
        ("  apply one remote edit, p50", f"{large['apply_remote_edit_p50_ms']:.2f} ms",
         f"goal < {frame:.0f} ms"),
        ("  apply one remote edit, max", f"{large['apply_remote_edit_max_ms']:.2f} ms", ""),
    ]  # fmt: skip
    width = max(len(label) for label, _, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value:>10}  {goal}".rstrip() for label, value, goal in rows)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, default=200, help="keystrokes to time (200, at most 1000)")
    parser.add_argument("--size", type=int, default=1_000_000, help="size of the large document (1 MB)")
    parser.add_argument("--edits", type=int, default=50, help="remote edits applied to it (50)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")


def _run(args: argparse.Namespace) -> int:
    import anyio

    if not 2 <= args.keys <= 1000:
        raise LocalProtocolError("--keys must be between 2 and 1000")

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="aetherflow-bench-editor-") as temporary:
            tmp = Path(temporary)
            keystrokes = await bench_keystrokes(tmp / "keys", args.keys)
            large = await bench_large(tmp / "large", args.size, args.edits)
        return {"keystrokes": keystrokes, "large": large}

    report: dict[str, Any] = anyio.run(main, backend="asyncio")
    print("aetherflow bench editor: two editors, each on its own node, on loopback")
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.flush()
    return 0


command = Subcommand(
    help="the editor: keystroke to remote screen, a 1 MB document (first paint, memory, remote edits)",
    add_arguments=_add_arguments,
    run=_run,
)
