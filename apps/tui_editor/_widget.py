"""``CollabTextArea``: Textual's TextArea showing an :class:`EditorModel`, with peers' cursors drawn in.

The widget holds no truth of its own. A key press becomes :meth:`EditorModel.edit`;
what the widget then shows is what the replica reports (:meth:`apply_pending`), for
local and remote changes alike. Its own undo history is off (``max_checkpoints=0``):
undo and redo are the replica's, so they never undo a peer's edit.

Textual has no decoration API, so peers' cursors are drawn by post-processing the
strips that ``TextArea.render_line`` returns (after its line cache): the caret cell in
the peer's colour, the selection in a darker shade, the name after the line's text.
When a cursor moves, exactly the visual lines it left and entered are refreshed.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Offset, Size
from textual.message import Message
from textual.strip import Strip
from textual.widgets import TextArea
from textual.widgets.text_area import Edit, EditResult, Selection

from tui_editor._lines import Location
from tui_editor._model import EditorModel, ReadOnlyDocument, RemoteCursor


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    if len(color) != 6:
        return (48, 188, 237)
    try:
        return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)
    except ValueError:
        return (48, 188, 237)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def selection_shade(color: str) -> str:
    """The background of a peer's selection: its colour, darkened."""
    return _hex(tuple(int(c * 0.45) for c in _rgb(color)))  # type: ignore[arg-type]


def _restyle(strip: Strip, start: int, end: int, style: Style) -> Strip:
    """``strip`` with cells ``start``..``end`` restyled on top of their own style."""
    start, end = max(0, start), min(strip.cell_length, end)
    if start >= end:
        return strip
    before, middle, after = strip.divide([start, end, strip.cell_length])
    middle = Strip(list(Segment.apply_style(list(middle), post_style=style)), middle.cell_length)
    return Strip.join([before, middle, after])


def _overlay(strip: Strip, at: int, text: str, style: Style) -> Strip:
    """``strip`` with ``text`` written over its cells from ``at`` (cropped at the edge)."""
    width = strip.cell_length
    at = max(0, at)
    text = text[: max(0, width - at)]
    if not text:
        return strip
    before, _hidden, after = strip.divide([at, at + len(text), width])
    return Strip.join([before, Strip([Segment(text, style)], len(text)), after])


class CollabTextArea(TextArea):
    """A TextArea bound to an :class:`EditorModel`."""

    class WriteRefused(Message):
        """A key or command tried to write a read-only document."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class LocalSelectionChanged(Message):
        """The local caret or selection moved (publish presence)."""

    def __init__(
        self,
        model: EditorModel,
        *,
        language: str | None = None,
        soft_wrap: bool = False,
        id: str | None = None,
    ) -> None:
        self.model = model
        self._applying = False
        self._remote: dict[int, RemoteCursor] = {}
        self.applied_changes = 0
        self._sizing: tuple[int, int] | None = None  # widest row out / in, while applying
        self._document_width: int | None = None
        super().__init__(
            "",  # the text comes in on_mount: TextArea would otherwise build and wrap it twice
            language=language,
            soft_wrap=soft_wrap,
            read_only=model.read_only,
            show_line_numbers=True,
            max_checkpoints=0,  # the replica keeps the (local-only) history
            tab_behavior="indent",
            id=id,
        )

    def on_mount(self) -> None:
        self.load_text(self.model.lines.widget_text())

    # -- writes go to the model -----------------------------------------------------------

    def edit(self, edit: Edit) -> EditResult:
        if self._applying:
            return super().edit(edit)
        try:
            caret = self.model.edit(edit.from_location, edit.to_location, edit.text)
        except ReadOnlyDocument as exc:
            self.post_message(self.WriteRefused(str(exc)))
            return EditResult(end_location=self.selection.end, replaced_text="")
        self.apply_pending(caret=caret)
        return EditResult(end_location=self.model.location(caret), replaced_text="")

    def undo(self) -> None:
        self._history_step(self.model.undo)

    def redo(self) -> None:
        self._history_step(self.model.redo)

    def _history_step(self, step: object) -> None:
        try:
            done = step()  # type: ignore[operator]
        except ReadOnlyDocument as exc:
            self.post_message(self.WriteRefused(str(exc)))
            return
        if done:
            self.apply_pending()

    # -- the model's changes reach the widget ---------------------------------------------

    def apply_pending(self, *, caret: int | None = None) -> int:
        """Show every change the replica reported (in order); returns how many were applied.

        ``caret`` is where a local edit leaves the cursor; after remote changes the
        cursor goes where its sticky anchors resolve, and the first visible line stays
        put however many rows changed above it.
        """
        pumped = self.model.pump()
        if not pumped.replaced:
            return 0
        scroll_x, scroll_y = self.scroll_offset
        top_row, top_column = self.wrapped_document.offset_to_location(Offset(0, scroll_y))
        keep_view = pumped.remote and caret is None
        self._applying = True
        try:
            for rows in pumped.replaced:
                self._sizing = (self._widest(self.document[i] for i in range(rows.first, rows.last + 1)),
                                self._widest(rows.rows))  # fmt: skip
                super().edit(
                    Edit(
                        rows.text,
                        (rows.first, 0),
                        (rows.last, rows.last_length),
                        maintain_selection_offset=True,
                    )
                )
                if top_row > rows.last:
                    top_row += len(rows.rows) - (rows.last - rows.first + 1)
                elif top_row >= rows.first:
                    top_column = 0
                self.applied_changes += 1
            if caret is None and pumped.local_end is not None and not pumped.remote:
                caret = pumped.local_end
            if caret is not None:
                self.selection = Selection.cursor(self.model.location(caret))
            else:
                anchor, head = self.model.selection
                self.selection = Selection(self.model.location(anchor), self.model.location(head))
        finally:
            self._applying = False
            self._sizing = None
        if caret is not None:
            self.model.set_selection(caret, caret)
            self.post_message(self.LocalSelectionChanged())
        elif keep_view:
            top = self.wrapped_document.location_to_offset((top_row, top_column))
            self.scroll_to(scroll_x, top.y, animate=False, immediate=True)
        self._refresh_remote_rows(self._remote.values())
        return len(pumped.replaced)

    def _widest(self, rows: Iterable[str]) -> int:
        return max((cell_len(row.expandtabs(self.indent_width)) for row in rows), default=0)

    def _refresh_size(self) -> None:
        # TextArea measures every line after each edit (O(document)); for an edit of a few rows,
        # the widest line changes only if an edited row was or becomes the widest.
        sizing, known = self._sizing, self._document_width
        if sizing is None or known is None or self.soft_wrap or (sizing[0] >= known > sizing[1]):
            super()._refresh_size()
            self._document_width = None if self.soft_wrap else self.virtual_size.width - self.gutter_width - 1
            return
        self._document_width = max(known, sizing[1])
        self.virtual_size = Size(self._document_width + self.gutter_width + 1, self.document.line_count)
        self._refresh_scrollbars()

    def _watch_selection(self, previous_selection: Selection, selection: Selection) -> None:
        super()._watch_selection(previous_selection, selection)
        if self._applying:
            return
        self.model.set_selection(self.model.offset(selection.start), self.model.offset(selection.end))
        self.post_message(self.LocalSelectionChanged())

    # -- peers' cursors -------------------------------------------------------------------

    def set_remote_cursors(self, cursors: list[RemoteCursor]) -> None:
        """Show these peers' cursors; refresh only the lines whose decoration changed."""
        new = {cursor.client_id: cursor for cursor in cursors}
        changed = [c for k, c in self._remote.items() if new.get(k) != c]
        changed += [c for k, c in new.items() if self._remote.get(k) != c]
        self._remote = new
        self._refresh_remote_rows(changed)

    @property
    def remote_cursors(self) -> list[RemoteCursor]:
        return list(self._remote.values())

    def _rows_of(self, cursor: RemoteCursor) -> range:
        top, bottom = sorted((cursor.anchor[0], cursor.head[0]))
        return range(top, bottom + 1)

    def _refresh_remote_rows(self, cursors: object) -> None:
        rows: set[int] = set()
        for cursor in cursors:  # type: ignore[attr-defined]
            rows.update(self._rows_of(cursor))
        line_count = self.document.line_count
        for row in rows:
            if row < line_count:
                first = self.wrapped_document.location_to_offset((row, 0)).y
                self.refresh_lines(first, len(self.wrapped_document.get_offsets(row)) + 1)

    def _cell(self, location: Location) -> Offset:
        row = min(location[0], self.document.line_count - 1)
        column = min(location[1], len(self.document[row]))
        return self.wrapped_document.location_to_offset((row, column))

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if not self._remote:
            return strip
        scroll_x, scroll_y = self.scroll_offset
        line_y = scroll_y + y
        left = self.gutter_width - scroll_x
        labels: list[tuple[int, RemoteCursor]] = []
        for cursor in self._remote.values():
            head = self._cell(cursor.head)
            start, end = sorted((cursor.anchor, cursor.head))
            if start != end:
                first, last = self._cell(start), self._cell(end)
                if first.y <= line_y <= last.y:
                    x0 = first.x if first.y == line_y else 0
                    x1 = last.x if last.y == line_y else strip.cell_length
                    shade = Style(bgcolor=selection_shade(cursor.color))
                    strip = _restyle(strip, left + x0, left + x1, shade)
            if head.y == line_y:
                caret = Style(bgcolor=cursor.color, color="#000000")
                strip = _restyle(strip, left + head.x, left + head.x + 1, caret)
                labels.append((head.x, cursor))
        for x, cursor in labels:
            row = min(cursor.head[0], self.document.line_count - 1)
            end_of_text = self._cell((row, len(self.document[row])))
            at = left + max((end_of_text.x if end_of_text.y == line_y else x) + 2, x + 2)
            label = f" {cursor.name} "
            # Past the right edge (a long line), the name sits at the edge, over the text.
            at = max(left, min(at, strip.cell_length - len(label)))
            style = Style(bgcolor=cursor.color, color="#000000", bold=True)
            strip = _overlay(strip, at, label, style)
        return strip
