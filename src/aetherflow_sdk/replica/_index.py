"""Python code points <-> the UTF-8 byte offsets that pycrdt's ``Text`` counts.

pycrdt (0.14) indexes ``Text`` by UTF-8 bytes: ``len()``, ``insert()``,
``remove_range()``, event deltas and sticky indices all count bytes. An offset
that falls inside a multi-byte character is not rejected: yrs moves the edit
elsewhere (checked: inserting at byte 2 of ``"a😀"`` appends at the end), and
replicas silently diverge from what the user meant (y-crdt/pycrdt PR #379).
The replica's API counts Python code points, like ``str``; these helpers do
the conversion. ASCII text needs none, so callers skip them when the text is
known to be ASCII (``str.isascii()`` is O(1) in CPython).
"""

from __future__ import annotations

from typing import Any


def byte_offset(text: str, index: int) -> int:
    """The UTF-8 byte offset of code point ``index`` in ``text``."""
    if text.isascii():
        return index
    return len(text[:index].encode("utf-8"))


def code_point_offset(text: str, byte_index: int) -> int:
    """The code-point index of UTF-8 byte offset ``byte_index`` in ``text``.

    A byte offset inside a character rounds down to that character's start.
    """
    if text.isascii():
        return byte_index
    return len(text.encode("utf-8")[:byte_index].decode("utf-8", errors="ignore"))


def delta_to_code_points(old_text: str | None, delta: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Convert a pycrdt text delta (UTF-8 byte counts) into code-point ops.

    ``old_text`` is the text before the change, or None when it is known to be
    ASCII (byte counts are then code-point counts). Returns ``("retain", n)``,
    ``("insert", s)`` and ``("delete", n)`` tuples.
    """
    ops: list[tuple[str, Any]] = []
    if old_text is None or old_text.isascii():
        for op in delta:
            if "insert" in op:
                value = op["insert"]
                ops.append(("insert", value if isinstance(value, str) else ""))
            elif "delete" in op:
                ops.append(("delete", int(op["delete"])))
            elif "retain" in op:
                ops.append(("retain", int(op["retain"])))
        return ops
    old_bytes = old_text.encode("utf-8")
    position = 0  # byte position in the old text
    for op in delta:
        if "insert" in op:
            value = op["insert"]
            ops.append(("insert", value if isinstance(value, str) else ""))
        elif "delete" in op or "retain" in op:
            kind = "delete" if "delete" in op else "retain"
            count = int(op[kind])
            chunk = old_bytes[position : position + count]
            position += count
            ops.append((kind, len(chunk.decode("utf-8", errors="ignore"))))
    return ops


def apply_ops(text: str, ops: list[tuple[str, Any]]) -> str:
    """Apply code-point ops (from :func:`delta_to_code_points`) to ``text``."""
    parts: list[str] = []
    position = 0
    for kind, value in ops:
        if kind == "retain":
            parts.append(text[position : position + value])
            position += value
        elif kind == "delete":
            position += value
        else:
            parts.append(value)
    parts.append(text[position:])
    return "".join(parts)
