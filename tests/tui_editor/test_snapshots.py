"""How the editor looks (pytest-textual-snapshot; `pytest --snapshot-update` after a deliberate change)."""

from __future__ import annotations

from typing import Any

from tests.tui_editor._fixed import FixedDocument, FixedNode, presence
from tui_editor._app import EditorApp
from tui_editor._ports import PeerRow

TEXT = (
    "def greet(name):\n"
    '    """Say hello."""\n'
    '    return f"hello {name}"\n'
    "\n"
    "for person in ('ada', 'grace'):\n"
    "    print(greet(person))\n"
)
PEERS = [
    PeerRow(name="bob", node_id="bobnodeid", path="lan", rtt=0.0012, loss=0.0),
    PeerRow(name="carol", node_id="carolnodeid", path="relayed", rtt=0.0418, loss=0.021),
]


def _app(**kwargs: Any) -> EditorApp:
    start = TEXT.index("hello {name}")
    peers = [
        presence(7, "bob", "#6eeb83", start, start + 5),  # bob selects "hello"
        presence(9, "carol", "#ffbc42", TEXT.index("print"), TEXT.index("print")),
    ]
    return EditorApp(
        document=FixedDocument(TEXT, peers),  # type: ignore[arg-type]
        node=FixedNode(PEERS),  # type: ignore[arg-type]
        user="alice",
        **kwargs,
    )


def test_main_screen_with_remote_cursor_and_selection(snap_compare: Any) -> None:
    assert snap_compare(_app(show_peers=False), terminal_size=(80, 14))


def test_peers_panel(snap_compare: Any) -> None:
    assert snap_compare(_app(show_peers=True), terminal_size=(100, 14))
