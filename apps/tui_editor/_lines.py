"""Rows and columns over the CRDT's code points, as Textual's ``TextArea`` sees them.

Textual's ``Document`` splits its text with ``str.splitlines()``, which breaks lines at
``\\n``, ``\\r\\n`` and ``\\r`` but also at ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, ``\\x85``,
``\\u2028`` and ``\\u2029``, and it joins lines back with *one* newline style. So the
widget's own text and its own index arithmetic (``get_index_from_location``) are not
the CRDT's: a file with ``\\u2028`` or mixed line endings would drift by one code point
per such break.

The rule here: the CRDT text is the truth, :class:`LineIndex` mirrors it row by row
(each row keeps its own separator, whatever it is), and the widget only ever receives
row *contents* joined by ``"\\n"``. A row's content never contains a line break, so the
widget splits exactly where we do, and (row, column) means the same in both. Every
change reaches the widget as a :class:`RowsReplaced`: whole rows out, whole rows in,
computed from the replica's code-point delta; the rows around an edit are re-split, so
a ``\\r`` that meets a ``\\n`` (and becomes one break) is handled like any other edit.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

import attrs

from aetherflow_sdk.replica import Delete, Insert, Retain

Location = tuple[int, int]
"""(row, column) with the column in code points, as Textual's ``Location``."""


@attrs.frozen(kw_only=True)
class RowsReplaced:
    """Rows ``first``..``last`` (inclusive, before the change) became ``rows`` (contents only)."""

    first: int
    """First row replaced."""
    last: int
    """Last row replaced (old numbering)."""
    last_length: int
    """Length of the old last row's content: the widget replaces ``(first, 0)``-``(last, last_length)``."""
    rows: tuple[str, ...]
    """The new contents of those rows (no separators)."""
    start: int
    """Code-point offset of the change's first affected character (old and new text agree there)."""
    old_end: int
    """Offset just past the change in the old text."""
    new_end: int
    """Offset just past the change in the new text."""

    @property
    def text(self) -> str:
        """What the widget inserts: the new contents joined with ``"\\n"``."""
        return "\n".join(self.rows)

    def transform(self, offset: int) -> int:
        """Where an offset of the old text is in the new one (inside the change: its start)."""
        if offset >= self.old_end:
            return offset + self.new_end - self.old_end
        return min(offset, self.start)


def _split(text: str) -> list[str]:
    """Rows with their separators; a text that is empty or ends in a break has a last empty row."""
    rows = text.splitlines(keepends=True)
    if not rows or _content_length(rows[-1]) != len(rows[-1]):
        rows.append("")
    return rows


def _content_length(row: str) -> int:
    if not row:
        return 0
    return len(row.splitlines()[0])


class LineIndex:
    """The CRDT text as rows, kept in step with the replica's change deltas.

    Lookups are O(log rows); an edit costs the length of the rows it touches plus one
    addition per row after them (their starts move).
    """

    def __init__(self, text: str = "") -> None:
        self._rows = _split(text)
        # _starts[i] is the offset of row i; kept exact by apply().
        self._starts: list[int] = list(itertools.accumulate((len(r) for r in self._rows[:-1]), initial=0))

    # -- reading ------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def text(self) -> str:
        return "".join(self._rows)

    def __len__(self) -> int:
        return self._starts[-1] + len(self._rows[-1])

    def row(self, index: int) -> str:
        """The content of row ``index`` (without its separator), as the widget shows it."""
        row = self._rows[index]
        return row[: _content_length(row)]

    def rows(self) -> list[str]:
        """Every row's content: what the widget's document holds."""
        return [self.row(i) for i in range(len(self._rows))]

    def widget_text(self) -> str:
        """The text to load into the widget (contents joined with ``"\\n"``)."""
        return "\n".join(self.rows())

    def row_start(self, index: int) -> int:
        return self._starts[index]

    def location(self, offset: int) -> Location:
        """The (row, column) of code-point ``offset``; inside a two-character break (``\\r\\n``)
        it is the end of the row's content."""
        offset = max(0, min(offset, len(self)))
        row = bisect.bisect_right(self._starts, offset) - 1
        return row, min(offset - self._starts[row], _content_length(self._rows[row]))

    def offset(self, location: Location) -> int:
        """The code-point offset of ``location``, clamped into the text (as Textual clamps)."""
        row, column = location
        if row >= len(self._rows):
            return len(self)
        row = max(0, row)
        return self._starts[row] + max(0, min(column, _content_length(self._rows[row])))

    # -- changing -----------------------------------------------------------------------

    def apply(self, delta: Sequence[Retain | Insert | Delete]) -> RowsReplaced | None:
        """Apply a replica delta (code points, left to right); None if it changed nothing."""
        start, old_end, pieces = _span(delta)
        if start is None:
            return None
        size = len(self)
        if old_end > size:
            raise ValueError(f"delta reaches {old_end}, past the text's {size} code points")
        first = bisect.bisect_right(self._starts, start) - 1
        if first and start == self._starts[first]:
            first -= 1  # the break before the change may merge with it (\r + \n)
        last = bisect.bisect_right(self._starts, old_end) - 1
        region_start = self._starts[first]
        old_region = "".join(self._rows[first : last + 1])
        new_middle = _splice(old_region, start - region_start, pieces)
        new_region = old_region[: start - region_start] + new_middle + old_region[old_end - region_start :]
        is_tail = last == len(self._rows) - 1
        new_rows = _split(new_region) if is_tail else new_region.splitlines(keepends=True)
        last_length = _content_length(self._rows[last])
        self._rows[first : last + 1] = new_rows
        new_end = start + len(new_middle)
        # Row starts after the change all move by the same amount: one pass of additions
        # (cheaper than re-adding every row's length; ~1 ms for 25k rows).
        shift = new_end - old_end
        region = list(itertools.accumulate((len(r) for r in new_rows), initial=region_start))
        tail = self._starts[last + 1 :]
        self._starts[first:] = region[:-1] + ([s + shift for s in tail] if shift else tail)
        return RowsReplaced(
            first=first,
            last=last,
            last_length=last_length,
            rows=tuple(r[: _content_length(r)] for r in new_rows),
            start=start,
            old_end=old_end,
            new_end=new_end,
        )


def _span(
    delta: Iterable[Retain | Insert | Delete],
) -> tuple[int | None, int, list[Retain | Insert | Delete]]:
    """The first and past-the-last old offsets a delta touches, and its ops from the first on."""
    position = 0
    start: int | None = None
    end = 0
    ops: list[Retain | Insert | Delete] = []
    for op in delta:
        if isinstance(op, Retain):
            position += op.count
            if start is not None:
                ops.append(op)
            continue
        if isinstance(op, Insert) and not op.text:
            continue
        if isinstance(op, Delete) and not op.count:
            continue
        if start is None:
            start = position
        ops.append(op)
        if isinstance(op, Delete):
            position += op.count
        end = position
    while ops and isinstance(ops[-1], Retain):
        ops.pop()
    return start, end, ops


def _splice(old_region: str, at: int, ops: list[Retain | Insert | Delete]) -> str:
    """The new text of the changed span: retained old text and inserts, deletions skipped."""
    out: list[str] = []
    position = at
    for op in ops:
        if isinstance(op, Retain):
            out.append(old_region[position : position + op.count])
            position += op.count
        elif isinstance(op, Delete):
            position += op.count
        else:
            out.append(op.text)
    return "".join(out)
