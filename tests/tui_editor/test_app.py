"""The editor app driven with Pilot: two apps in one test, each over its own peer on loopback."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.tui_editor._rig import app_for, two_peers, wait_for
from tui_editor._widget import selection_shade


def _run(scenario: object) -> None:
    anyio.run(scenario, backend="asyncio")  # type: ignore[arg-type]


def _cell_style(app: object, x: int, y: int) -> object:
    """The rich Style of the editor's cell (x, y), as rendered."""
    editor = app.editor  # type: ignore[attr-defined]
    strip = editor.render_line(y)
    position = 0
    for segment in strip:
        if position <= x < position + len(segment.text):
            return segment.style
        position += len(segment.text)
    raise AssertionError(f"no cell {x} on line {y}")


def test_typing_in_one_editor_shows_in_the_other_with_its_cursor(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_peers(tmp_path, "hello\nworld\n") as (owner, guest):
            alice, bob = app_for(owner, "alice", color="#ee6352"), app_for(guest, "bob", color="#30bced")
            async with alice.run_test(size=(80, 12)) as pa, bob.run_test(size=(80, 12)) as pb:
                alice.editor.selection = ((1, 5), (1, 5))
                await pa.press("!", "!")
                await wait_for(
                    "bob sees alice's text", lambda: bob.editor.text == "hello\nworld!!\n", (pa, pb)
                )
                assert guest.replica.text == "hello\nworld!!\n"
                # Alice's caret is after "world!!" on row 1: bob draws it in her colour at that cell.
                await wait_for("bob sees alice's cursor", lambda: bool(bob.editor.remote_cursors), (pa, pb))
                cursor = bob.editor.remote_cursors[0]
                assert (cursor.name, cursor.head) == ("alice", (1, 7))
                x = bob.editor.gutter_width + 7
                await wait_for(
                    "alice's caret cell has her colour",
                    lambda: str(_cell_style(bob, x, 1).bgcolor.name) == "#ee6352",  # type: ignore[attr-defined]
                    (pa, pb),
                )
                assert "alice" in "".join(s.text for s in bob.editor.render_line(1))
                # Bob types on row 0 while alice's caret is on row 1: her caret stays on its character.
                bob.editor.selection = ((0, 0), (0, 0))
                await pb.press(">", "space")
                await wait_for(
                    "alice sees bob's text", lambda: alice.editor.text.startswith("> hello"), (pa, pb)
                )
                assert alice.editor.selection.end == (1, 7)
                # Alice selects "hello": bob shades the selection in her colour.
                alice.editor.selection = ((0, 2), (0, 7))
                await wait_for(
                    "alice's selection shaded",
                    lambda: (
                        str(_cell_style(bob, bob.editor.gutter_width + 3, 0).bgcolor.name)  # type: ignore[attr-defined]
                        == selection_shade("#ee6352")
                    ),
                    (pa, pb),
                )

    _run(scenario)


def test_quitting_removes_the_cursor_from_the_other_editor(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_peers(tmp_path, "abc\n") as (owner, guest):
            bob = app_for(guest, "bob")
            async with bob.run_test(size=(60, 8)) as pb:
                alice = app_for(owner, "alice")
                async with alice.run_test(size=(60, 8)) as pa:
                    await pa.press("x")
                    await wait_for("bob sees alice", lambda: bool(bob.editor.remote_cursors), (pa, pb))
                # Alice's app has quit (her node still runs): her cursor goes from bob's screen.
                await wait_for("the cursor is gone", lambda: not bob.editor.remote_cursors, (pb,))
                assert bob.editor.text == "xabc\n"

    _run(scenario)


def test_a_read_only_guest_cannot_change_the_document(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_peers(tmp_path, "fixed\n", perm="ro") as (owner, guest):
            assert guest.read_only
            bob = app_for(guest, "bob")
            alice = app_for(owner, "alice")
            async with bob.run_test(size=(60, 8)) as pb, alice.run_test(size=(60, 8)) as pa:
                assert "read-only" in bob.status_text()
                await pb.press("z", "enter", "backspace", "ctrl+z", "ctrl+v")
                bob.editor.insert("programmatic")
                bob.editor.replace("", (0, 0), (0, 3))
                bob.editor.undo()
                assert guest.replica.text == "fixed\n" and bob.editor.text == "fixed\n"
                # Writes made around the editor are refused by the owner too (the session is ro).
                guest.replica.insert(0, "forged ")
                alice.editor.selection = ((0, 5), (0, 5))
                await pa.press("!")
                await wait_for("bob still receives", lambda: "fixed!" in bob.editor.text, (pa, pb))
                assert owner.replica.text == "fixed!\n"

    _run(scenario)


def test_undo_is_local_and_save_is_atomic(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "files").mkdir()
        target = tmp_path / "files" / "notes.txt"
        target.write_text("one\n")
        async with two_peers(tmp_path, "one\n") as (owner, guest):
            alice, bob = app_for(owner, "alice", path=target), app_for(guest, "bob")
            async with alice.run_test(size=(60, 8)) as pa, bob.run_test(size=(60, 8)) as pb:
                alice.editor.selection = ((0, 3), (0, 3))
                await pa.press("A")
                await wait_for("bob sees A", lambda: bob.editor.text == "oneA\n", (pa, pb))
                bob.editor.selection = ((1, 0), (1, 0))
                await pb.press("B")
                await wait_for("alice sees B", lambda: alice.editor.text == "oneA\nB", (pa, pb))
                await pa.press("ctrl+z")
                assert alice.editor.text == "one\nB"  # her A went, bob's B stayed
                await wait_for("bob sees the undo", lambda: bob.editor.text == "one\nB", (pa, pb))
                await pa.press("ctrl+y")
                await wait_for("redo", lambda: bob.editor.text == "oneA\nB", (pa, pb))
                await pa.press("ctrl+s")
                await wait_for("saved", lambda: alice.saves == 1, (pa,))
                assert target.read_text() == "oneA\nB"
                assert [p.name for p in target.parent.iterdir()] == ["notes.txt"]  # no temporary left

    _run(scenario)


def test_the_scrollable_width_follows_the_widest_row_through_remote_edits() -> None:
    from aetherflow_sdk.replica import Replica
    from tests.tui_editor._fixed import FixedDocument, FixedNode
    from tui_editor._app import EditorApp

    async def scenario() -> None:
        document = FixedDocument("short\nmedium row\n", [])
        peer = Replica("snapshot", client_id=2)
        peer.apply_update(document.replica.encode_update())
        app = EditorApp(document=document, node=FixedNode([]), user="a")  # type: ignore[arg-type]
        async with app.run_test(size=(40, 8)) as pilot:
            editor = app.editor

            def remote(edit: object) -> None:
                before = document.replica.state_vector()
                edit()  # type: ignore[operator]
                document.replica.apply_update(peer.encode_update(before), origin="peer")
                editor.apply_pending()

            def expected() -> int:
                return editor.document.get_size(editor.indent_width).width + editor.gutter_width + 1

            for edit in (
                lambda: peer.insert(0, "a much, much longer first row than any other\n"),  # widest grows
                lambda: peer.insert(len(peer), "x"),  # elsewhere: unchanged
                lambda: peer.delete(0, 46),  # the widest row goes: shrink
                lambda: peer.insert(3, "\t\tTab"),  # tabs count as cells
            ):
                remote(edit)
                await pilot.pause()
                assert editor.virtual_size.width == expected(), document.replica.text

    _run(scenario)
