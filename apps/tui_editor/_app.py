"""The editor app: the text, peers' cursors, a peers panel, a status bar, sharing, saving.

``EditorApp`` gets an open document and its node (the ports in ``_ports``); it does not
start or stop them, so the same app runs over the node, over the SDK-only peer, and in
tests with two apps side by side. Everything runs on Textual's asyncio loop; saving
writes the file from a worker thread (the text is an immutable ``str``, so nothing of
the replica crosses threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static, TextArea

from aetherflow_sdk import AetherFlowError
from tui_editor._model import EditorModel
from tui_editor._ports import EditorDocument, EditorNode
from tui_editor._widget import CollabTextArea

PEER_COLORS = ("#30bced", "#6eeb83", "#ffbc42", "#ee6352", "#9ac2c9", "#8acb88", "#f7a1c4", "#c490d1")

LANGUAGES = {
    ".py": "python", ".md": "markdown", ".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml",
    ".html": "html", ".htm": "html", ".css": "css", ".js": "javascript", ".rs": "rust", ".go": "go",
    ".sql": "sql", ".java": "java", ".sh": "bash", ".bash": "bash", ".xml": "xml",
}  # fmt: skip

KEYS = (
    ("ctrl+s", "save the document to its file (atomically: a temporary file, then a rename)"),
    ("f2", "share: show a read-write and a read-only ticket to copy"),
    ("f3", "show or hide the peers panel"),
    ("f4", "soft wrap on or off"),
    ("ctrl+z / ctrl+y", "undo / redo your own edits (a peer's edits are never undone)"),
    ("ctrl+p", "command palette (share, save, wrap, help)"),
    ("f1", "this help"),
    ("ctrl+q", "quit (peers see your cursor go at once)"),
)


def color_for(name: str) -> str:
    """A stable colour for a user name."""
    return PEER_COLORS[zlib.crc32(name.encode()) % len(PEER_COLORS)]


def language_for(path: Path | None) -> str | None:
    """The Textual syntax-highlighting language for a file name, if Textual has it installed."""
    if path is None:
        return None
    language = LANGUAGES.get(path.suffix.lower())
    if language is None:
        return None
    try:
        import tree_sitter  # type: ignore[import-not-found]  # noqa: F401  (highlighting needs textual[syntax])
    except ImportError:
        return None
    return language


def write_atomically(path: Path, text: str) -> int:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    data = text.encode("utf-8")
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return len(data)


class HelpScreen(ModalScreen[None]):
    """The keys."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape,f1,q", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 84; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    """

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"[b]{key:<16}[/b] {what}" for key, what in KEYS)
        with Vertical():
            yield Static("[b]AetherFlow editor: keys[/b]\n")
            yield Static(lines)
            yield Static("\n[dim]escape closes this help[/dim]")


class ShareScreen(ModalScreen[None]):
    """Tickets to copy: read-write and read-only."""

    BINDINGS: ClassVar[list[BindingType]] = [
        ("escape,f2", "dismiss", "close"),
        ("w", "copy('rw')", "copy rw"),
        ("r", "copy('ro')", "copy ro"),
    ]
    DEFAULT_CSS = """
    ShareScreen { align: center middle; }
    ShareScreen > Vertical {
        width: 100%; height: auto; border: thick $accent; background: $surface; padding: 0 1;
    }
    ShareScreen .ticket { height: auto; margin-bottom: 1; }
    """

    def __init__(self, tickets: dict[str, str]) -> None:
        super().__init__()
        self.tickets = tickets

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]Share this document[/b]  (the other person runs: aetherflow edit FILE --join TICKET)\n"
            )
            yield Static("[b]read-write[/b] (w copies it):")
            yield Static(self.tickets["rw"], classes="ticket", id="ticket-rw")
            yield Static("[b]read-only[/b] (r copies it):")
            yield Static(self.tickets["ro"], classes="ticket", id="ticket-ro")
            yield Static("[dim]escape closes[/dim]")

    def action_copy(self, perm: str) -> None:
        self.app.copy_to_clipboard(self.tickets[perm])
        self.notify(f"{perm} ticket copied to the clipboard")


class PeersPanel(DataTable[str]):
    """Name, path, RTT and loss of every connected peer."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("peer", "path", "RTT", "loss")


class EditorApp(App[None]):
    """A collaborative editor on one document."""

    TITLE = "AetherFlow"
    CSS = """
    #main { height: 1fr; }
    #editor { width: 1fr; border: none; }
    #peers { width: 40; border-left: solid $accent; }
    #peers.-hidden { display: none; }
    #status { height: 1; background: $panel; color: $text; padding: 0 1; }
    #status.-read-only { background: $warning 40%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "save", priority=True),
        Binding("f2", "share", "share"),
        Binding("f3", "toggle_peers", "peers"),
        Binding("f4", "toggle_wrap", "wrap"),
        Binding("f1", "help", "help"),
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(
        self,
        *,
        document: EditorDocument,
        node: EditorNode,
        user: str,
        path: Path | None = None,
        color: str | None = None,
        soft_wrap: bool = False,
        show_peers: bool = True,
    ) -> None:
        super().__init__()
        self.document = document
        self.node = node
        self.user = user
        self.path = path
        self.color = color or color_for(user)
        self.model = EditorModel(
            document.replica, read_only=document.read_only, read_only_reason=document.read_only_reason
        )
        self._soft_wrap = soft_wrap
        self._show_peers = show_peers
        self._pump_scheduled = False
        self._unsubscribe = document.replica.subscribe_updates(self._on_replica_update)
        self.saves = 0

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield CollabTextArea(
                self.model, language=language_for(self.path), soft_wrap=self._soft_wrap, id="editor"
            )
            peers = PeersPanel(id="peers")
            peers.set_class(not self._show_peers, "-hidden")
            yield peers
        yield Static(id="status")
        yield Footer()

    @property
    def editor(self) -> CollabTextArea:
        return self.query_one(CollabTextArea)

    def on_mount(self) -> None:
        self.sub_title = self.document.name
        self.editor.focus()
        self._publish_presence()
        self._show_remote_cursors()
        self._refresh_panels()
        self.run_worker(self._follow_peers(), exclusive=True, group="peers")
        if self.model.read_only:
            self.notify(self.model.read_only_reason, title="read-only", severity="warning")

    def on_unmount(self) -> None:
        # Quitting the editor takes our cursor off every peer's screen, even if the node runs on.
        self.document.set_presence(name=self.user, color=self.color, anchor=None, head=None)
        self._unsubscribe()
        self.model.close()

    # -- following the document -----------------------------------------------------------

    def _on_replica_update(self, update: bytes, origin: object, local: bool) -> None:
        # Called by the replica after each transaction; the widget catches up on the next turn
        # of the loop (many updates that arrive together are shown in one go).
        if local or self._pump_scheduled:
            return
        self._pump_scheduled = True
        self.call_next(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self.is_running:
            return
        if self.editor.apply_pending():
            self._show_remote_cursors()
            self._refresh_status()

    async def _follow_peers(self) -> None:
        while True:
            await self.document.wait_activity()
            try:
                self._pump()
                self._show_remote_cursors()
                self._refresh_panels()
            except NoMatches:
                return  # the app is closing: its widgets are gone

    def _show_remote_cursors(self) -> None:
        self.editor.set_remote_cursors(self.model.remote_cursors(self.document.presence_peers()))

    def _publish_presence(self) -> None:
        anchor, head = self.model.selection
        self.document.set_presence(name=self.user, color=self.color, anchor=anchor, head=head)

    @on(CollabTextArea.LocalSelectionChanged)
    def _local_selection(self) -> None:
        self._publish_presence()
        self._refresh_status()

    @on(CollabTextArea.WriteRefused)
    def _write_refused(self, message: CollabTextArea.WriteRefused) -> None:
        self.notify(message.reason, title="read-only", severity="warning")

    @on(TextArea.Changed)
    def _changed(self) -> None:
        self._refresh_status()

    # -- panels ---------------------------------------------------------------------------

    def status_text(self) -> str:
        state = self.document.sync_state()
        if state.state == "synced":
            sync = "● synced"
        elif state.state == "syncing":
            sync = f"◐ syncing {state.pending} updates"
        else:
            sync = f"○ offline, {state.pending} edits kept locally"
        host, port = self.node.address
        peers = len(self.node.peers())
        row, column = self.editor.selection.end if self.is_running else (0, 0)
        mode = "read-only" if self.model.read_only else "rw"
        return (
            f"{sync} │ {self.document.name} │ node {self.node.node_id[:10]}.. {host}:{port} │ "
            f"{peers} peer{'s' if peers != 1 else ''} │ {mode} │ {row + 1}:{column + 1}"
        )

    def _refresh_status(self) -> None:
        status = self.query_one("#status", Static)
        status.update(self.status_text())
        status.set_class(self.model.read_only, "-read-only")

    def _refresh_panels(self) -> None:
        self._refresh_status()
        table = self.query_one(PeersPanel)
        table.clear()
        for peer in self.node.peers():
            rtt = f"{peer.rtt * 1000:.1f} ms" if peer.rtt is not None else "-"
            loss = f"{peer.loss * 100:.1f} %" if peer.loss is not None else "-"
            table.add_row(peer.name[:14], peer.path, rtt, loss)

    # -- actions --------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:  # type: ignore[type-arg]
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Share", "Show read-write and read-only tickets for this document", self.action_share
        )
        yield SystemCommand("Save", "Write the document to its file", self.action_save)
        yield SystemCommand("Soft wrap", "Wrap long lines on or off", self.action_toggle_wrap)
        yield SystemCommand("Peers panel", "Show or hide the peers", self.action_toggle_peers)
        yield SystemCommand("Editor keys", "The editor's key bindings", self.action_help)

    def action_share(self) -> None:
        try:
            tickets = {perm: self.node.share(user=f"guest-{perm}", perm=perm) for perm in ("rw", "ro")}
        except AetherFlowError as exc:
            self.notify(str(exc), title="cannot share", severity="error")
            return
        self.push_screen(ShareScreen(tickets))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_wrap(self) -> None:
        self.editor.soft_wrap = not self.editor.soft_wrap
        self.notify(f"soft wrap {'on' if self.editor.soft_wrap else 'off'}")

    def action_toggle_peers(self) -> None:
        self.query_one(PeersPanel).toggle_class("-hidden")

    async def action_save(self) -> None:
        if self.path is None:
            self.notify("this document has no file: open it with a path to save it", severity="warning")
            return
        text = self.document.replica.text  # a str: safe to hand to the writer thread
        try:
            size = await asyncio.to_thread(write_atomically, self.path, text)
        except OSError as exc:
            self.notify(
                f"could not save {self.path}: {exc.strerror or exc}", title="save failed", severity="error"
            )
            return
        self.saves += 1
        self.notify(f"saved {size} bytes to {self.path}")
