"""What a Yjs v1 update needs before it can be applied: a minimal, untrusted decoder.

Why: the installed yrs mis-integrates an update whose dependencies have not
arrived yet (docs/replica.md, "Order"). Updates sent unordered can arrive in
any order, so the receiver holds each one until everything it references is
present -- a causal buffer -- and yrs only ever sees updates in causal order.

An update (Yjs ``encoding.js``, v1) is: per client, a run of structs starting at
a clock; each struct is GC, Skip or Item; an Item may name its left origin,
right origin or parent item by ID. Then the delete set: per client, clock
ranges. The update is *ready* when, with our state vector ``have``:

* each client's run (and every segment after a Skip) starts at or below
  ``have[client]`` -- clocks are contiguous per client;
* every origin / right origin / parent ID and every deleted range lies below
  what we will hold once the update's own structs are in.

Only the bytes are parsed, never executed; every failure is BadPacket.
"""

from __future__ import annotations

import attrs

from aetherflow_sdk._errors import BadPacket
from aetherflow_sdk.replica._wire import _Reader

_MAX_ANY_DEPTH = 64
_INFO_ORIGIN = 0x80
_INFO_RIGHT_ORIGIN = 0x40
_INFO_PARENT_SUB = 0x20
_CONTENT_MASK = 0x1F
_GC = 0
_SKIP = 10


@attrs.frozen(kw_only=True)
class UpdateNeeds:
    """The dependencies of one update."""

    starts: tuple[tuple[int, int], ...]
    """(client, clock) where each contiguous segment of the update's structs begins."""
    provides: dict[int, int]
    """Per client, the clock just past the update's last struct."""
    references: tuple[tuple[int, int], ...]
    """(client, clock) of every ID the update's items point to, and the last clock of every deleted range."""
    plain_ascii: bool
    """True if the update inserts nothing but ASCII strings (no embeds, formats or other content):
    applying it to ASCII text leaves ASCII text, and byte counts stay code-point counts."""
    deletes: bool = False
    """True if the update's delete set names at least one range (it removes something)."""

    def ready(self, have: dict[int, int]) -> bool:
        """True if an update with these needs can be applied on top of state vector ``have``."""
        for client, clock in self.starts:
            if clock > have.get(client, 0):
                return False
        for client, clock in self.references:
            if clock >= max(have.get(client, 0), self.provides.get(client, 0)):
                return False
        return True

    def requirements(self) -> dict[int, int]:
        """Per client, the clock our state vector must reach for the update to be ready.

        The same test as :meth:`ready`, as thresholds: ``ready(have)`` is true exactly
        when ``have.get(client, 0) >= clock`` for every item. The causal buffer indexes
        a held update by one unmet threshold, so it looks at the update again only when
        that client's clock moves (``_causal.py``).
        """
        needed: dict[int, int] = {}
        for client, clock in self.starts:
            if clock > needed.get(client, 0):
                needed[client] = clock
        for client, clock in self.references:
            if clock >= self.provides.get(client, 0) and clock + 1 > needed.get(client, 0):
                needed[client] = clock + 1
        return needed


def _skip_any_untrusted(reader: _Reader, depth: int) -> None:
    """Skip one lib0 ``any`` value."""
    if depth > _MAX_ANY_DEPTH:
        raise BadPacket("any value nested too deeply")
    if reader.pos >= len(reader.data):
        raise BadPacket("truncated any value")
    kind = reader.data[reader.pos]
    reader.pos += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if kind == 125:  # varint: continuation bit 0x80 on every byte
        for _ in range(10):
            if reader.pos >= len(reader.data):
                raise BadPacket("truncated varint")
            byte = reader.data[reader.pos]
            reader.pos += 1
            if byte < 0x80:
                return
        raise BadPacket("varint too long")
    if kind in (124, 123, 122):  # float32, float64, bigint64
        size = 4 if kind == 124 else 8
        if reader.pos + size > len(reader.data):
            raise BadPacket("truncated number")
        reader.pos += size
        return
    if kind in (119, 116):  # string, Uint8Array
        reader.varbytes_untrusted()
        return
    if kind == 118:  # object
        count = reader.varuint_untrusted()
        if count > len(reader.data):
            raise BadPacket("object larger than the message")
        for _ in range(count):
            reader.varbytes_untrusted()
            _skip_any_untrusted(reader, depth + 1)
        return
    if kind == 117:  # array
        count = reader.varuint_untrusted()
        if count > len(reader.data):
            raise BadPacket("array larger than the message")
        for _ in range(count):
            _skip_any_untrusted(reader, depth + 1)
        return
    raise BadPacket(f"unknown any type {kind}")


def _content_length_untrusted(reader: _Reader, content: int) -> tuple[int, bool]:
    """Skip an item's content; return its length in clock units and whether it is plain ASCII text."""
    if content == 4:  # ContentString: clocks count UTF-16 units
        text = reader.varstring_untrusted()
        if text.isascii():
            return len(text), True
        return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF), False
    if content == 1:  # ContentDeleted
        return reader.varuint_untrusted(), True
    return _other_content_length_untrusted(reader, content), False


def _other_content_length_untrusted(reader: _Reader, content: int) -> int:
    if content == 2:  # ContentJSON
        count = reader.varuint_untrusted()
        if count > len(reader.data):
            raise BadPacket("JSON content larger than the message")
        for _ in range(count):
            reader.varbytes_untrusted()
        return count
    if content == 3:  # ContentBinary
        reader.varbytes_untrusted()
        return 1
    if content == 5:  # ContentEmbed
        reader.varbytes_untrusted()
        return 1
    if content == 6:  # ContentFormat
        reader.varbytes_untrusted()
        reader.varbytes_untrusted()
        return 1
    if content == 7:  # ContentType
        type_ref = reader.varuint_untrusted()
        if type_ref in (3, 5):  # XmlElement, XmlHook carry a name
            reader.varbytes_untrusted()
        return 1
    if content == 8:  # ContentAny
        count = reader.varuint_untrusted()
        if count > len(reader.data):
            raise BadPacket("any content larger than the message")
        for _ in range(count):
            _skip_any_untrusted(reader, 0)
        return count
    if content == 9:  # ContentDoc
        reader.varbytes_untrusted()
        _skip_any_untrusted(reader, 0)
        return 1
    raise BadPacket(f"unknown content type {content}")


def update_needs_untrusted(update: bytes) -> UpdateNeeds:
    """Decode what ``update`` depends on. Raises only BadPacket."""
    reader = _Reader(update)
    starts: list[tuple[int, int]] = []
    provides: dict[int, int] = {}
    references: list[tuple[int, int]] = []
    plain_ascii = True
    deletes = False
    clients = reader.varuint_untrusted()
    if clients > len(update):
        raise BadPacket("more clients than bytes")
    for _ in range(clients):
        structs = reader.varuint_untrusted()
        if structs > len(update):
            raise BadPacket("more structs than bytes")
        client = reader.varuint_untrusted()
        clock = reader.varuint_untrusted()
        segment_open = False
        for _ in range(structs):
            if reader.pos >= len(update):
                raise BadPacket("truncated struct")
            info = update[reader.pos]
            reader.pos += 1
            content = info & _CONTENT_MASK
            if content == _SKIP:
                clock += reader.varuint_untrusted()
                segment_open = False
                continue
            if not segment_open:
                starts.append((client, clock))
                segment_open = True
            if content == _GC:
                length = reader.varuint_untrusted()
            else:
                if info & _INFO_ORIGIN:
                    references.append((reader.varuint_untrusted(), reader.varuint_untrusted()))
                if info & _INFO_RIGHT_ORIGIN:
                    references.append((reader.varuint_untrusted(), reader.varuint_untrusted()))
                if not info & (_INFO_ORIGIN | _INFO_RIGHT_ORIGIN):
                    if reader.varuint_untrusted() == 1:
                        reader.varbytes_untrusted()  # a root type, named
                    else:
                        references.append((reader.varuint_untrusted(), reader.varuint_untrusted()))
                    if info & _INFO_PARENT_SUB:
                        reader.varbytes_untrusted()
                length, plain = _content_length_untrusted(reader, content)
                plain_ascii = plain_ascii and plain
            clock += length
            provides[client] = max(provides.get(client, 0), clock)
    ranges_clients = reader.varuint_untrusted()
    if ranges_clients > len(update):
        raise BadPacket("more delete-set clients than bytes")
    for _ in range(ranges_clients):
        client = reader.varuint_untrusted()
        ranges = reader.varuint_untrusted()
        if ranges > len(update):
            raise BadPacket("more deleted ranges than bytes")
        for _ in range(ranges):
            start = reader.varuint_untrusted()
            length = reader.varuint_untrusted()
            if length:
                references.append((client, start + length - 1))
                deletes = True
    reader.end_untrusted()
    return UpdateNeeds(
        starts=tuple(starts),
        provides=provides,
        references=tuple(references),
        plain_ascii=plain_ascii,
        deletes=deletes,
    )
