"""The editor's model without an app: rows over code points, remote edits around the caret, local undo."""

from __future__ import annotations

import random

import pytest

from aetherflow_sdk.replica import Replica
from tui_editor._lines import LineIndex
from tui_editor._model import EditorModel, ReadOnlyDocument

# Every kind of break str.splitlines() knows, plus text that is not one code unit per cell.
BREAKS = ["\n", "\r\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
SAMPLE = "héllo 👩‍👩‍👧 wörld\r\n漢字かな\u2028e\u0301\u0301x\fnext\x1clast\r"


def _widget_rows(text: str) -> list[str]:
    """What Textual's Document holds after loading the widget text (its own splitting)."""
    from textual.widgets.text_area import Document

    return Document(text).lines


@pytest.mark.parametrize("text", ["", "a", "a\n", "\n", SAMPLE, *(f"x{b}y{b}" for b in BREAKS)])
def test_rows_match_textual_and_offsets_round_trip(text: str) -> None:
    index = LineIndex(text)
    assert index.text == text and len(index) == len(text)
    assert _widget_rows(index.widget_text()) == index.rows()
    for offset in range(len(text) + 1):
        row, column = index.location(offset)
        back = index.offset((row, column))
        # Only an offset inside a two-character break (\r|\n) maps to the end of its row.
        assert back == offset or text[offset - 1 : offset + 1] == "\r\n", (offset, row, column)


def test_every_row_start_is_after_its_break() -> None:
    index = LineIndex(SAMPLE)
    assert index.rows() == ["héllo 👩‍👩‍👧 wörld", "漢字かな", "e\u0301\u0301x", "next", "last", ""]
    assert index.offset((1, 0)) == SAMPLE.index("漢")
    assert index.offset((3, 0)) == SAMPLE.index("next")
    assert index.location(SAMPLE.index("x\f")) == (2, 3)


def _pair(text: str = "") -> tuple[Replica, Replica]:
    a, b = Replica("doc", client_id=1), Replica("doc", client_id=2)
    if text:  # written by the peer, so not in the local undo history
        b.insert(0, text)
        a.apply_update(b.encode_update(), origin="peer")
    return a, b


def _remote(source: Replica, target: Replica, edit: object) -> None:
    """Make an edit on ``source`` and deliver it to ``target`` as a peer's update."""
    before = target.state_vector()
    edit()  # type: ignore[operator]
    target.apply_update(source.encode_update(before), origin="peer")


@pytest.mark.parametrize("seed", range(12))
def test_random_edits_keep_rows_equal_to_the_replica_and_to_textual(seed: int) -> None:
    rng = random.Random(seed)
    print("seed", seed)
    alphabet = ["a", "é", "👍", "漢", "\u0301", *BREAKS, "\r\n"]
    local, peer = _pair(SAMPLE)
    model = EditorModel(local)
    for _ in range(80):
        size = len(peer)
        at = rng.randrange(size + 1)
        if rng.random() < 0.4 and at < size:
            length = rng.randint(1, min(4, size - at))
            _remote(peer, local, lambda at=at, length=length: peer.delete(at, length))
        else:
            piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            _remote(peer, local, lambda at=at, piece=piece: peer.insert(at, piece))
        widget = model.lines.rows()
        pumped = model.pump()
        for change in pumped.replaced:  # the widget's view, updated only from the records
            widget[change.first : change.last + 1] = list(change.rows)
        assert model.lines.text == local.text
        assert widget == model.lines.rows() == _widget_rows(model.lines.widget_text())
    model.close()


def _caret_after(model: EditorModel, remote: object, peer: Replica) -> int:
    _remote(peer, model.replica, remote)
    model.pump()
    return model.selection[1]


def test_remote_edits_before_at_after_and_around_the_caret() -> None:
    local, peer = _pair("0123456789")
    model = EditorModel(local)
    model.set_selection(5, 5)  # between '4' and '5'
    assert _caret_after(model, lambda: peer.insert(0, "ab"), peer) == 7  # before: shifts with its char
    assert local.text[7] == "5"
    assert _caret_after(model, lambda: peer.insert(9, "zz"), peer) == 7  # after: stays
    assert _caret_after(model, lambda: peer.delete(0, 2), peer) == 5  # delete before
    assert local.text[5] == "5"
    assert _caret_after(model, lambda: peer.delete(3, 4), peer) == 3  # a delete around the caret
    assert local.text == "012zz789"
    model.close()


def test_a_remote_delete_around_a_selection_collapses_it_at_the_deletion() -> None:
    local, peer = _pair("hello big world")
    model = EditorModel(local)
    model.set_selection(6, 9)  # "big"
    _remote(peer, local, lambda: peer.delete(4, 7))  # "o big w"
    model.pump()
    assert model.selection == (4, 4)
    model.set_selection(0, 4)  # "hell" selected
    _remote(peer, local, lambda: peer.insert(2, "XY"))  # inside the selection
    model.pump()
    assert model.selection == (0, 6) and local.text[:6] == "heXYll"
    model.close()


def test_remote_edit_on_another_row_keeps_the_caret_row_and_column() -> None:
    local, peer = _pair("one\ntwo\nthree\n")
    model = EditorModel(local)
    model.set_selection(model.offset((2, 3)), model.offset((2, 3)))
    _remote(peer, local, lambda: peer.insert(0, "zero\u2028"))  # a break Textual also splits at
    model.pump()
    assert model.location(model.selection[1]) == (3, 3)
    model.close()


def test_undo_and_redo_touch_only_local_edits() -> None:
    local, peer = _pair("ab")
    model = EditorModel(local)
    model.edit((0, 2), (0, 2), "C")  # local: "abC"
    model.pump()
    _remote(peer, local, lambda: peer.insert(0, "P"))  # remote: "PabC"
    model.pump()
    assert model.undo()
    pumped = model.pump()
    assert local.text == "Pab" and model.lines.text == "Pab"
    assert pumped.local_end == 3 and not pumped.remote
    assert not model.undo()  # the peer's "P" is not ours to undo
    assert local.text == "Pab"
    assert model.redo()
    model.pump()
    assert model.lines.text == "PabC"
    model.close()


def test_local_edits_map_rows_over_crlf_and_u2028() -> None:
    local = Replica("doc")
    local.insert(0, "a\r\nb\u2028c")
    model = EditorModel(local)
    model.edit((0, 1), (1, 0), "")  # join rows 0 and 1: the whole \r\n goes
    model.pump()
    assert local.text == "ab\u2028c"
    end = model.edit((1, 1), (1, 1), "\r")
    model.pump()
    assert model.lines.rows() == ["ab", "c", ""] and model.location(end) == (2, 0)
    model.close()


def test_a_read_only_model_refuses_every_write() -> None:
    local = Replica("doc")
    local.insert(0, "x")
    model = EditorModel(local, read_only=True, read_only_reason="ro ticket")
    for write in (lambda: model.edit((0, 0), (0, 0), "y"), model.undo, model.redo):
        with pytest.raises(ReadOnlyDocument, match="ro ticket"):
            write()
    assert local.text == "x"
    model.close()
