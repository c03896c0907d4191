"""Relative positions (cursors that follow the text), in code points, on top of pycrdt ``StickyIndex``.

The JSON form is Yjs's ``RelativePosition`` JSON: ``{"item": {"client", "clock"},
"assoc"}`` names the character a position sticks to (assoc 0: the position is
before that character; -1: after it), and ``{"tname": ..., "assoc"}`` means the
start (-1) or end (0) of the text. Clocks count UTF-16 units, as in Yjs.

Why not just call pycrdt: measured on pycrdt 0.14, it mixes units. A text is
stored as blocks (runs of characters one client typed in one go). For a block
starting at UTF-8 byte ``s`` with first clock ``k0``:

* ``StickyIndex.new(text, b)`` names clock ``k0 + (b - s)`` -- a *byte* distance
  used as a clock distance (wrong once the block holds a non-ASCII character
  before ``b``);
* resolving clock ``k`` returns ``s + (k - k0)`` -- a clock distance used as bytes;
* both panic (``PanicException``, a BaseException) on a clock that does not exist.

Both are linear in the offset *inside one block* and break at block boundaries,
so we find the block's start by probing (exponential then binary search), then
do the in-block conversion right with the text we hold. For ASCII text all
units agree and no probing is needed. (Probing could mistake two neighbouring
blocks of one client for one block only when the earlier one is pure ASCII, and
then the arithmetic is the same, so the answer is still right.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pycrdt import Assoc, StickyIndex, Text

from aetherflow_sdk.replica._index import code_point_offset


class _Unresolvable(Exception):
    pass


def _utf16_units(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _run_start(origin: int, ok: Callable[[int], bool], floor: int) -> int:
    """Smallest ``j`` in [floor, origin] with ok(j'), for all j' in [j, origin] (ok(origin) holds)."""
    good, step = origin, 1
    bad = floor - 1
    while good - step >= floor:
        if ok(good - step):
            good -= step
            step *= 2
        else:
            bad = good - step
            break
    while good - bad > 1:
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return good


def _item_at_byte(ytext: Text, byte: int) -> tuple[int, int]:
    item = StickyIndex.new(ytext, byte, Assoc.AFTER).to_json().get("item")
    if not isinstance(item, dict):
        raise _Unresolvable
    return int(item["client"]), int(item["clock"])


def make_sticky(ytext: Text, root: str, text: str, index: int, before: bool) -> dict[str, Any]:
    """The relative position of code point ``index`` (0 <= index <= len(text))."""
    if not before and index >= len(text):
        return {"tname": root, "assoc": int(Assoc.AFTER)}
    if before and index <= 0:
        return {"tname": root, "assoc": int(Assoc.BEFORE)}
    char_index = index - 1 if before else index  # the character the position sticks to
    prefix = text[:char_index]
    byte = len(prefix.encode("utf-8"))
    client, clock = _item_at_byte(ytext, byte)
    if not prefix.isascii():

        def in_run(j: int) -> bool:
            return _item_at_byte(ytext, j) == (client, clock - (byte - j))

        start = _run_start(byte, in_run, 0)
        first_clock = clock - (byte - start)
        run_text = text.encode("utf-8")[start:byte].decode("utf-8")
        clock = first_clock + _utf16_units(run_text)
    if before:
        # Yjs names the *last* UTF-16 unit of the character on the left.
        clock += _utf16_units(text[char_index]) - 1
    return {"item": {"client": client, "clock": clock}, "assoc": int(Assoc.BEFORE if before else Assoc.AFTER)}


def resolve_sticky(
    ytext: Text, root: str, text: str, known_clocks: dict[int, int], position: object
) -> int | None:
    """The code-point index of ``position`` now, or None if it is malformed or names an unknown item.

    ``known_clocks`` is our decoded state vector: only clocks below it exist here.
    """
    if not isinstance(position, dict):
        return None
    assoc = position.get("assoc", 0)
    if not isinstance(assoc, int):
        return None
    item = position.get("item")
    if item is None:
        if position.get("tname") == root:
            return 0 if assoc < 0 else len(text)
        return None
    if not isinstance(item, dict):
        return None
    client, clock = item.get("client"), item.get("clock")
    if not isinstance(client, int) or not isinstance(clock, int):
        return None
    if not 0 <= clock < known_clocks.get(client, 0):
        return None  # not integrated here (yet); pycrdt would panic

    def mixed_offset(k: int) -> int:
        try:
            json = {"item": {"client": client, "clock": k}, "assoc": 0}
            return int(StickyIndex.from_json(json, ytext).get_index())
        except BaseException as exc:
            # pyo3's PanicException derives from BaseException; nothing else is swallowed.
            if type(exc).__name__ != "PanicException":
                raise
            raise _Unresolvable from None

    try:
        resolved = mixed_offset(clock)
        if text.isascii():
            index = resolved
            width = 1
        else:

            def in_run(k: int) -> bool:
                try:
                    return mixed_offset(k) == resolved - (clock - k)
                except _Unresolvable:
                    return False

            first_clock = _run_start(clock, in_run, 0)
            start_byte = resolved - (clock - first_clock)
            index = code_point_offset(text, max(0, start_byte))
            units = clock - first_clock  # UTF-16 units from the run start to our character
            width = 1
            while index < len(text):
                width = 2 if ord(text[index]) > 0xFFFF else 1
                if units < width:
                    break
                units -= width
                index += 1
    except _Unresolvable:
        return None
    if assoc < 0:
        index += 1  # after the character
    return max(0, min(len(text), index))
