"""Durable replicas in real SQLite files: reopen, compaction, size, corruption, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from aetherflow_sdk import StorageError
from aetherflow_sdk.replica import Replica, SqliteStore

from .conftest import load_trace


async def test_reopen_restores_text_and_history(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    replica = Replica.open(path, "notes")
    replica.insert(0, "hello 😀 world" + "." * 2000)
    await replica.flush()
    replica.delete(0, 6)
    replica.close()  # close() writes what flush() had not
    again = Replica.open(path, "notes")
    assert again.text == "😀 world" + "." * 2000
    # The history came back, not just the text: a peer that saw the old state
    # receives only the difference.
    peer = Replica("notes")
    peer.apply_update(again.encode_update())
    again.insert(0, "x")
    assert len(again.encode_update(peer.state_vector())) < 100
    again.close()


@pytest.mark.parametrize("compress", [True, False])
async def test_compaction_restores_identical_document(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "docs.db"
    store = SqliteStore(path, compress=compress, compact_min_bytes=2_000, compact_max_rows=50)
    replica = Replica("doc", store)
    for i in range(600):
        replica.insert(len(replica) // 2, f"line {i} é\n")
        if i % 3 == 0:
            replica.delete(0, 2)
        if i % 5 == 0:
            await replica.flush()
    await replica.flush()
    live_text, live_update = replica.text, replica.encode_update()
    replica.close()
    rows = store._conn.execute("SELECT COUNT(*) FROM updates").fetchone()[0]
    snapshot = store._conn.execute("SELECT compressed, length(data), raw_size FROM snapshots").fetchone()
    store.close()
    assert rows <= 50  # compact_max_rows bounds the log (a flush may end exactly at the bound)
    assert snapshot[0] == int(compress)
    assert (snapshot[1] < snapshot[2]) if compress else (snapshot[1] == snapshot[2])
    restored = Replica.open(path, "doc")
    assert restored.text == live_text
    # Identical CRDT state, not just identical text: merging the live history adds nothing.
    assert restored.apply_update(live_update) is False
    restored.close()


async def test_database_stays_within_ten_times_the_snapshot(tmp_path: Path) -> None:
    trace = load_trace("automerge-paper.json.gz")
    patches = [p for txn in trace["txns"] for p in txn["patches"]][:40_000]
    path = tmp_path / "paper.db"
    replica = Replica.open(path, "paper")
    store = replica._store
    assert store is not None
    ratios = []
    for i, (position, deleted, inserted) in enumerate(patches):
        replica.replace(position, deleted, inserted)
        if i % 100 == 99:
            await replica.flush()
            # SQLite's fixed cost (tables, indexes, WAL frames: ~50 kB) dominates a
            # tiny document; the bound is about steady state, from a 12 kB snapshot on.
            if store.snapshot_size("paper") >= 12_000:
                ratios.append(store.size_bytes() / store.snapshot_size("paper"))
    replica.close()
    assert len(ratios) > 100, "compaction never ran or the document stayed tiny"
    assert max(ratios) <= 10, f"database grew to {max(ratios):.1f}x the snapshot"


async def test_corrupt_row_names_the_file_and_the_rest_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    first = Replica.open(path, "first")
    for word in ("alpha ", "beta ", "gamma "):
        first.insert(len(first), word)
        await first.flush()
    first.close()
    second = Replica.open(path, "second")
    second.insert(0, "untouched")
    second.close()
    with sqlite3.connect(path) as conn:
        row_id, data = conn.execute(
            "SELECT id, data FROM updates WHERE doc_id = 'first' ORDER BY id LIMIT 1 OFFSET 1"
        ).fetchone()
        flipped = data[:-1] + bytes([data[-1] ^ 0xFF])
        conn.execute("UPDATE updates SET data = ? WHERE id = ?", (flipped, row_id))
    with pytest.raises(StorageError) as failure:
        Replica.open(path, "first")
    message = str(failure.value)
    assert str(path) in message and f"update row {row_id}" in message and "salvage" in message
    with Replica.open(path, "second") as other:
        assert other.text == "untouched"
    with Replica.open(path, "first", salvage=True) as salvaged:
        assert salvaged.statistics().corrupt_rows_skipped == 1
        assert salvaged.text.startswith("alpha ")


async def test_corrupt_snapshot_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    store = SqliteStore(path, compact_min_bytes=10, compact_max_rows=2)
    replica = Replica("doc", store)
    for i in range(5):
        replica.insert(0, f"{i}")
        await replica.flush()
    replica.close()
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET data = X'00112233'")
    with pytest.raises(StorageError, match="snapshot row of document 'doc' is corrupt") as failure:
        Replica.open(path, "doc")
    assert str(path) in str(failure.value)


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StorageError, match="not a readable replica store") as failure:
        Replica.open(path, "doc")
    assert str(path) in str(failure.value)


def test_seed_is_remembered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    with Replica.open(path, "doc") as replica:
        replica.seed("from a file")
        seeded_by = replica.seeded_by
    with Replica.open(path, "doc") as again:
        assert again.seeded_by == seeded_by
        assert again.holds_only_seed()
        assert again.text == "from a file"


CHILD = textwrap.dedent(
    """
    import sys, trio
    from aetherflow_sdk.replica import Replica

    async def main():
        replica = Replica.open(sys.argv[1], "doc")
        base = len(replica)
        for i in range(100_000):  # bounded; the parent kills us long before
            replica.insert(len(replica), f"[{i}]")
            if i % 7 == 6:
                await replica.flush()
                print(f"durable up to {i}", flush=True)

    trio.run(main)
    """
)


async def test_edits_reported_durable_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    durable = -1
    async with await anyio.open_process([sys.executable, str(script), str(path)]) as process:
        assert process.stdout is not None
        buffer = b""
        try:
            with anyio.fail_after(60):
                while durable < 300:
                    chunk = await process.stdout.receive()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        durable = int(line.rsplit(b" ", 1)[1])
        finally:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    with Replica.open(path, "doc") as replica:
        text = replica.text
    expected = "".join(f"[{i}]" for i in range(durable + 1))
    assert text.startswith(expected), f"edits up to {durable} were reported durable but are missing"


async def test_autoflush_group_commits_on_a_timer(tmp_path: Path) -> None:
    """Edits become durable with no flush() call; wait_flushed() waits for the commit."""
    path = tmp_path / "auto.db"
    replica = Replica.open(path, "doc")
    async with anyio.create_task_group() as tg:
        tg.start_soon(replica.autoflush, 0.01)
        for i in range(20):
            replica.insert(len(replica), f"{i},")
        assert replica.statistics().unflushed_updates == 20
        with anyio.fail_after(10):
            await replica.wait_flushed()
        assert replica.statistics().unflushed_updates == 0
        with Replica.open(path, "doc") as reader:  # a second connection sees it on disk
            assert reader.text == replica.text
        replica.close()  # autoflush ends with the replica
    assert replica.closed


async def test_reset_during_a_flush_does_not_write_the_old_history_back(tmp_path: Path) -> None:
    """The commit of a flush that reset() overtook is discarded; wait_flushed() still returns."""
    path = tmp_path / "docs.db"
    replica = Replica.open(path, "notes")
    store = replica._store
    assert store is not None
    replica.seed("old seed text")
    replica.insert(0, "more ")
    entered, release = threading.Event(), threading.Event()
    real_commit = store.commit

    def gated_commit(*args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(10)
        real_commit(*args, **kwargs)

    store.commit = gated_commit  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(replica.flush)
            await anyio.to_thread.run_sync(entered.wait, 10)  # flush took _pending, commit not run yet
            replica.insert(0, "dropped ")
            tg.start_soon(replica.wait_flushed)
            await anyio.sleep(0)
            replica.reset()  # the "adopt" path: clear wins the store lock
            release.set()
        store.commit = real_commit  # type: ignore[method-assign]
        replica.insert(0, "new")
        await replica.flush()
        await replica.wait_flushed()
    assert replica.statistics().unflushed_updates == 0
    replica.close()
    again = Replica.open(path, "notes")
    assert again.text == "new"
    again.close()


async def test_async_with_commits_in_a_worker_thread(tmp_path: Path) -> None:
    """``async with Replica.open(...)`` / ``aclose()`` write what is pending off the event loop thread."""
    path = tmp_path / "docs.db"
    loop_thread = threading.get_ident()
    commit_threads: list[int] = []
    async with Replica.open(path, "notes") as replica:
        store = replica._store
        assert store is not None
        real_commit = store.commit

        def recording_commit(*args: Any, **kwargs: Any) -> None:
            commit_threads.append(threading.get_ident())
            real_commit(*args, **kwargs)

        store.commit = recording_commit  # type: ignore[method-assign]
        replica.insert(0, "kept by aclose")
    assert replica.closed
    assert commit_threads and loop_thread not in commit_threads
    await replica.aclose()  # idempotent
    with Replica.open(path, "notes") as again:
        assert again.text == "kept by aclose"
