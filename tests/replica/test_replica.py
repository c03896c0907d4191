"""The Replica API: edits, batching, undo/redo, change events, updates, sticky positions."""

from __future__ import annotations

import anyio
import pytest

from aetherflow_sdk import ReplicaError
from aetherflow_sdk.replica import Delete, Insert, Replica, Retain, TextChange


def sync(a: Replica, b: Replica) -> None:
    b.apply_update(a.encode_update(b.state_vector()))
    a.apply_update(b.encode_update(a.state_vector()))


def test_basic_edits_and_errors() -> None:
    replica = Replica("doc")
    replica.insert(0, "hello")
    replica.insert(5, " world")
    replica.replace(0, 5, "HELLO")
    replica.delete(5, 6)
    assert replica.text == "HELLO"
    with pytest.raises(ReplicaError, match="outside the text"):
        replica.insert(6, "x")
    with pytest.raises(ReplicaError, match="outside the text"):
        replica.delete(3, 5)
    with pytest.raises(ReplicaError, match="outside the text"):
        replica.delete(-1, 1)
    with pytest.raises(ReplicaError):
        Replica("")
    replica.close()
    with pytest.raises(ReplicaError, match="closed"):
        replica.insert(0, "x")


def test_batch_makes_one_update_and_one_undo_step() -> None:
    replica = Replica("doc")
    updates: list[bytes] = []
    replica.subscribe_updates(lambda update, origin, local: updates.append(update))
    replica.insert(0, "start ")
    with replica.batch():
        for ch in "typing":
            replica.insert(len(replica), ch)
    assert replica.text == "start typing"
    assert len(updates) == 2
    assert replica.undo()
    assert replica.text == "start "
    assert replica.redo()
    assert replica.text == "start typing"
    with replica.batch(), pytest.raises(ReplicaError, match="inside batch"):
        replica.undo()


def test_undo_covers_local_edits_only() -> None:
    a, b = Replica("doc"), Replica("doc")
    a.insert(0, "local ")
    sync(a, b)
    b.insert(len(b), "remote")
    sync(a, b)
    assert a.text == "local remote"
    assert a.undo()
    assert a.text == "remote"  # our insert is gone, the remote one stays
    assert not a.undo()
    assert a.text == "remote"
    assert a.redo()
    assert a.text == "local remote"


def test_undo_history_is_bounded_but_recent_steps_undo() -> None:
    replica = Replica("doc", max_undo_steps=10)
    for i in range(35):
        replica.insert(len(replica), str(i % 10))
    for _ in range(10):
        assert replica.undo()
    assert replica.text == "0123456789012345678901234"
    steps = 0
    while replica.undo() and steps < 100:
        steps += 1
    assert steps <= 10  # older history was dropped, never more than 2x the limit is kept


async def test_changes_report_code_point_deltas_local_and_remote() -> None:
    a, b = Replica("doc"), Replica("doc")
    changes = b.changes()
    b.insert(0, "中文")
    a.insert(0, "😀")
    b.apply_update(a.encode_update(), origin="peer-a")
    b.delete(1, 1)
    with anyio.fail_after(1):
        first = await changes.__anext__()
        second = await changes.__anext__()
        third = await changes.__anext__()
    assert first == TextChange(delta=(Insert(text="中文"),), local=True, origin=None)
    assert second.local is False and second.origin == "peer-a"
    text = "中文"
    for change in (second, third):
        text = apply_delta(text, change.delta)
    assert text == b.text
    b.close()
    with anyio.fail_after(1):
        rest = [c async for c in changes]
    assert rest == []


def apply_delta(text: str, delta: tuple[Retain | Insert | Delete, ...]) -> str:
    out, position = [], 0
    for op in delta:
        if isinstance(op, Retain):
            out.append(text[position : position + op.count])
            position += op.count
        elif isinstance(op, Delete):
            position += op.count
        else:
            out.append(op.text)
    out.append(text[position:])
    return "".join(out)


def test_apply_update_rejects_garbage_and_reports_redundancy() -> None:
    a, b = Replica("doc"), Replica("doc")
    a.insert(0, "x")
    update = a.encode_update()
    assert b.apply_update(update) is True
    assert b.apply_update(update) is False
    with pytest.raises(ReplicaError, match="not a valid Yjs update"):
        b.apply_update(b"\xff\xff\xff")
    with pytest.raises(ReplicaError, match="state vector"):
        a.encode_update(b"\xff\xff")
    assert b.statistics().remote_updates_applied == 1


def test_sticky_index_follows_text_in_code_points() -> None:
    a, b = Replica("doc"), Replica("doc")
    a.insert(0, "ab😀cd")
    sync(a, b)
    position = a.sticky_index(3)  # before "c"
    b.insert(0, "中中")
    b.delete(4, 1)  # the emoji
    sync(a, b)
    assert a.text == "中中abcd"
    assert a.resolve_sticky_index(position) == 4
    assert b.resolve_sticky_index(position) == 4
    assert a.resolve_sticky_index({"bogus": 1}) is None
    assert a.resolve_sticky_index("nope") is None


def test_seed_and_holds_only_seed() -> None:
    replica = Replica("doc")
    replica.seed("from disk")
    assert replica.seeded_by == replica.client_id
    assert replica.holds_only_seed()
    assert not replica.undo()  # seeding is not undoable
    replica.insert(0, "x")
    assert not replica.holds_only_seed()
    with pytest.raises(ReplicaError, match="never held content"):
        replica.seed("again")


def test_update_listeners_may_read_the_replica() -> None:
    """Listeners run after the transaction, so reading the document inside one works."""
    a, b = Replica("doc"), Replica("doc")
    seen: list[tuple[str, bool]] = []
    a.subscribe_updates(lambda update, origin, local: seen.append((a.text, local)))
    a.insert(0, "x")
    b.insert(0, "y")
    a.apply_update(b.encode_update())
    assert a.undo()
    assert [local for _, local in seen] == [True, False, True]
    assert seen[0][0] == "x" and set(seen[1][0]) == {"x", "y"} and seen[2][0] == "y"


def test_state_vector_dict_compares_replicas_holding_the_same_edits() -> None:
    a, b = Replica("d", client_id=5), Replica("d", client_id=300)
    a.insert(0, "hi")
    b.insert(0, "yo!")
    a.apply_update(b.encode_update())
    b.apply_update(a.encode_update())
    assert a.state_vector_dict() == b.state_vector_dict() == {5: 2, 300: 3}
