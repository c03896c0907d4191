"""A node process killed with kill -9 comes back with every durable edit, rejoins and catches up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio

from aetherflow_node import open_node

from ._helpers import loopback, wait_until

HELPER = Path(__file__).with_name("_node_proc.py")


class Proc:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def ask(self, command: dict[str, str] | None = None) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        with anyio.fail_after(30):
            line = await anyio.to_thread.run_sync(self.proc.stdout.readline)
        assert line, f"the node process ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        record: dict[str, object] = json.loads(line)
        return record

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup at all
        self.proc.communicate(timeout=10)


async def test_kill_9_then_restart_keeps_durable_edits_rejoins_and_catches_up(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a:  # type: ignore[arg-type]
        doc = await a.open_document("notes")
        doc.insert(0, "a0 ")
        proc = Proc(str(tmp_path / "p"), a.share(doc, user="p"))
        try:
            ready = await proc.ask()
            assert ready["ready"]
            assert (await proc.ask({"wait": "a0"}))["text"] == "a0 "
            assert (await proc.ask({"insert": "p1 ✓ "}))["durable"] == "a0 p1 ✓ "
            await wait_until(lambda: doc.text == "a0 p1 ✓ ", 10, "a got p1", a)
            doc.insert(len(doc), "a1 ")
            await proc.ask({"wait": "a1"})
            await proc.ask({"insert": "p2 "})  # durable on its disk; a may not have it yet
            proc.kill()
            doc.insert(0, "missed ")  # made while the process is down (a may not know yet)
        finally:
            if proc.proc.poll() is None:
                proc.kill()
        # Restart by document ID (no ticket): the catalog knows the document and its holders.
        again = Proc(str(tmp_path / "p"), doc.doc_id)
        try:
            ready = await again.ask()
            text = str(ready["text"])
            assert "p1 ✓ " in text and "a1 " in text and "p2 " in text, text
            assert "missed" in (await again.ask({"wait": "missed"}))["text"]  # type: ignore[operator]
            await wait_until(lambda: "p2 " in doc.text, 10, "a got p2 after the restart", a)
            final = await again.ask({"insert": "end"})
            await wait_until(lambda: doc.text == final["durable"], 10, "identical", a)
            assert doc.text.count("p1") == 1 and doc.text.count("missed") == 1
        finally:
            again.kill()
