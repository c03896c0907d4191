"""Indices are Python code points, whatever pycrdt counts underneath."""

from __future__ import annotations

import random

import pytest
from pycrdt import Doc, Text

from aetherflow_sdk.replica import Replica
from aetherflow_sdk.replica._index import apply_ops, byte_offset, code_point_offset, delta_to_code_points

# Emoji (astral, 4 UTF-8 bytes, 2 UTF-16 units), ZWJ sequence, CJK (3 bytes), combining
# marks, a mathematical bold letter (astral, not an emoji), Latin-1, ASCII.
ALPHABET = ["a", "b", " ", "\n", "é", "e\u0301", "中", "文", "😀", "👩\u200d💻", "𝐀"]
ALPHABET += ["\U0001f1eb\U0001f1f7", "ß"]  # a flag (two regional indicators), sharp s


def random_text(rng: random.Random, max_pieces: int = 4) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, max_pieces)))


def test_installed_pycrdt_counts_utf8_bytes() -> None:
    """The premise of the mapping: if pycrdt ever switches units, this fails first."""
    doc: Doc[Text] = Doc()
    text = doc.get("t", type=Text)
    text += "a😀中"
    assert len(text) == 1 + 4 + 3


def test_insert_at_every_code_point_of_multibyte_text() -> None:
    base = "a😀中e\u0301𝐀b"
    for index in range(len(base) + 1):
        replica = Replica("d")
        replica.insert(0, base)
        replica.insert(index, "X")
        expected = base[:index] + "X" + base[index:]
        assert replica.text == expected
        other = Replica("d")
        other.apply_update(replica.encode_update())
        assert other.text == expected


def test_delete_and_replace_multibyte_ranges() -> None:
    replica = Replica("d")
    replica.insert(0, "😀中e\u0301b👩\u200d💻")
    replica.delete(1, 1)  # 中
    assert replica.text == "😀e\u0301b👩\u200d💻"
    replica.replace(1, 2, "é")  # e + combining acute -> precomposed
    assert replica.text == "😀éb👩\u200d💻"
    replica.delete(3, 3)  # the three code points of the ZWJ sequence
    assert replica.text == "😀éb"
    assert len(replica) == 3


def test_offset_helpers_round_trip() -> None:
    text = "a😀中e\u0301𝐀"
    for index in range(len(text) + 1):
        assert code_point_offset(text, byte_offset(text, index)) == index
    assert byte_offset("abc", 2) == 2


def test_delta_conversion_with_multibyte_old_text() -> None:
    old = "😀ab中"
    ops = delta_to_code_points(old, [{"retain": 4}, {"delete": 1}, {"insert": "é"}, {"retain": 1}])
    assert ops == [("retain", 1), ("delete", 1), ("insert", "é"), ("retain", 1)]
    assert apply_ops(old, ops) == "😀éb中"


def test_remote_changes_keep_code_point_bookkeeping(rng: random.Random) -> None:
    """Remote updates switch the replica between ASCII and non-ASCII modes correctly."""
    a, b = Replica("d"), Replica("d")
    for _ in range(200):
        source = a if rng.random() < 0.5 else b
        if len(source) and rng.random() < 0.4:
            index = rng.randrange(len(source))
            source.delete(index, rng.randint(1, len(source) - index))
        else:
            piece = random_text(rng) if rng.random() < 0.3 else "xy"
            source.insert(rng.randint(0, len(source)), piece)
        target = b if source is a else a
        target.apply_update(source.encode_update(target.state_vector()))
        assert a.text == b.text
        assert len(a) == len(a.text) and len(b) == len(b.text)


@pytest.mark.parametrize("count", [1000])
def test_random_edits_across_three_replicas_end_byte_identical(rng: random.Random, count: int) -> None:
    replicas = [Replica("d") for _ in range(3)]
    models = ["", "", ""]  # each replica's text, tracked with plain str operations
    for step in range(count):
        i = rng.randrange(3)
        replica = replicas[i]
        length = len(models[i])
        if length and rng.random() < 0.35:
            index = rng.randrange(length)
            size = rng.randint(1, min(4, length - index))
            replica.delete(index, size)
            models[i] = models[i][:index] + models[i][index + size :]
        elif length and rng.random() < 0.15:
            index = rng.randrange(length)
            size = rng.randint(1, min(3, length - index))
            piece = random_text(rng)
            replica.replace(index, size, piece)
            models[i] = models[i][:index] + piece + models[i][index + size :]
        else:
            index = rng.randint(0, length)
            piece = random_text(rng)
            replica.insert(index, piece)
            models[i] = models[i][:index] + piece + models[i][index:]
        assert replica.text == models[i], f"local edit {step} diverged from the str model"
        if rng.random() < 0.2:
            # Partial sync: one random direction, only what the target lacks.
            src, dst = rng.sample(range(3), 2)
            replicas[dst].apply_update(replicas[src].encode_update(replicas[dst].state_vector()))
            models[dst] = replicas[dst].text
    for src in range(3):
        for dst in range(3):
            if src != dst:
                replicas[dst].apply_update(replicas[src].encode_update(replicas[dst].state_vector()))
    texts = [r.text for r in replicas]
    assert texts[0].encode("utf-8") == texts[1].encode("utf-8") == texts[2].encode("utf-8")
    assert len(texts[0]) == len(replicas[0])
    assert any(not ch.isascii() for ch in texts[0])


def test_sticky_positions_follow_their_character_in_code_points(rng: random.Random) -> None:
    """pycrdt's StickyIndex mixes units on non-ASCII text; ours resolve to code points."""
    a, b = Replica("d"), Replica("d")
    a.insert(0, "".join(random_text(rng) for _ in range(20)))
    marker_at = rng.randint(0, len(a))
    a.insert(marker_at, "§")
    b.apply_update(a.encode_update())
    after = a.sticky_index(a.text.index("§"))  # sticks before the marker
    before = a.sticky_index(a.text.index("§") + 1, before=True)  # sticks after it
    start, end = a.sticky_index(0, before=True), a.sticky_index(len(a))
    for _ in range(150):
        text = b.text
        if len(text) > 1 and rng.random() < 0.4:
            index = rng.randrange(len(text))
            if text[index] != "§":
                b.delete(index, 1)
        else:
            b.insert(rng.randint(0, len(text)), random_text(rng))
        a.apply_update(b.encode_update(a.state_vector()))
        for replica in (a, b):
            marker = replica.text.index("§")
            assert replica.resolve_sticky_index(after) == marker
            assert replica.resolve_sticky_index(before) == marker + 1
            assert replica.resolve_sticky_index(start) == 0
            assert replica.resolve_sticky_index(end) == len(replica)
    unknown = {"item": {"client": 12345, "clock": 0}, "assoc": 0}
    assert a.resolve_sticky_index(unknown) is None
