"""The y-protocols wire format: sync, awareness and auth messages, byte for byte.

Every message is what y-websocket puts in one WebSocket frame, built from lib0
varuints (7 bits per byte, least significant group first, high bit = "more"):

    sync       varuint 0 (messageSync), varuint step (0 step1, 1 step2, 2 update), varbytes payload
    awareness  varuint 1 (messageAwareness), varbytes awareness-update
    auth       varuint 2 (messageAuth), varuint 0 (permission denied), varstring reason

(y-protocols ``sync.js``, ``awareness.js``, ``auth.js``; y-websocket ``server/utils.js``.)
An awareness update is ``varuint count`` then, per client, ``varuint clientID,
varuint clock, varstring JSON state`` where the JSON text ``null`` removes the client.
docs/replica.md has worked examples.

Parsers of network bytes end in ``_untrusted`` and raise only :class:`BadPacket`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from aetherflow_sdk._errors import BadPacket

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_MESH = 100
"""AetherFlow's one extension to y-protocols (its own numbers end at 3): a peer's mesh identity
and neighbours, so that an update crosses each link of a mesh once (docs/replica.md)."""

MESH_RESYNC = 0x01
"""Mesh flag: "send me a sync step 1" -- I may have skipped you, counting on a link now gone."""
MAX_MESH_NEIGHBORS = 1024

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

# lib0 decodes varuints into JS numbers, exact up to 2**53 - 1 (Number.MAX_SAFE_INTEGER).
_MAX_VARUINT = (1 << 53) - 1
_MAX_VARUINT_BYTES = 8


@attrs.frozen(kw_only=True)
class SyncStep1:
    """ "Here is my state vector; send me what I lack" (y-protocols messageYjsSyncStep1)."""

    state_vector: bytes
    """The sender's encoded Yjs state vector (v1)."""


@attrs.frozen(kw_only=True)
class SyncStep2:
    """The reply to a step 1: every change the asker lacks (messageYjsSyncStep2)."""

    update: bytes
    """A Yjs v1 update."""


@attrs.frozen(kw_only=True)
class SyncUpdate:
    """A live change, pushed as it happens (messageYjsUpdate)."""

    update: bytes
    """A Yjs v1 update."""


@attrs.frozen(kw_only=True)
class AwarenessEntry:
    """One client's presence inside an awareness update."""

    client_id: int
    """The Yjs client ID the state belongs to."""
    clock: int
    """Counter the owner bumps on each change; a higher clock wins."""
    state: dict[str, Any] | None
    """The presence state (a JSON object), or None: the client left."""


@attrs.frozen(kw_only=True)
class AwarenessUpdate:
    """A batch of presence states (messageAwareness)."""

    entries: tuple[AwarenessEntry, ...]
    """The states, in wire order."""


@attrs.frozen(kw_only=True)
class PermissionDenied:
    """The receiver refused our write (messageAuth / messagePermissionDenied)."""

    reason: str
    """Human-readable reason."""


@attrs.frozen(kw_only=True)
class MeshNeighbors:
    """Who the sender is in the mesh and which peers it exchanges writes with (AetherFlow extension)."""

    node: int
    """The sender's mesh ID (its replica's Yjs client ID when the sync protocol started)."""
    neighbors: tuple[int, ...]
    """Mesh IDs of the sender's peers that accept its writes and whose writes it accepts."""
    resync: bool
    """The sender asks us for a sync step 1 (``MESH_RESYNC``)."""


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | PermissionDenied | MeshNeighbors


def encode_varuint(value: int) -> bytes:
    """lib0 ``writeVarUint``."""
    if value < 0 or value > _MAX_VARUINT:
        raise ValueError(f"varuint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _varbytes(data: bytes) -> bytes:
    return encode_varuint(len(data)) + data


class _Reader:
    """A cursor over untrusted bytes; every failure is BadPacket."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint_untrusted(self) -> int:
        value = 0
        shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if self.pos >= len(self.data):
                raise BadPacket("truncated varuint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > _MAX_VARUINT:
                    raise BadPacket("varuint above 2**53")
                return value
            shift += 7
        raise BadPacket("varuint longer than 8 bytes")

    def varbytes_untrusted(self) -> bytes:
        length = self.varuint_untrusted()
        end = self.pos + length
        if end > len(self.data):
            raise BadPacket(f"length {length} runs past the end of the message")
        chunk = self.data[self.pos : end]
        self.pos = end
        return bytes(chunk)

    def varstring_untrusted(self) -> str:
        try:
            return self.varbytes_untrusted().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadPacket("string is not UTF-8") from exc

    def end_untrusted(self) -> None:
        if self.pos != len(self.data):
            raise BadPacket(f"{len(self.data) - self.pos} trailing bytes after the message")


def encode_sync_step1(state_vector: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP1)) + _varbytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP2)) + _varbytes(update)


def encode_sync_update(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_UPDATE)) + _varbytes(update)


def encode_permission_denied(reason: str) -> bytes:
    return bytes((MESSAGE_AUTH, AUTH_PERMISSION_DENIED)) + _varbytes(reason.encode("utf-8"))


def encode_mesh_neighbors(node: int, neighbors: list[int], *, resync: bool = False) -> bytes:
    parts = [encode_varuint(MESSAGE_MESH), encode_varuint(MESH_RESYNC if resync else 0)]
    parts.append(encode_varuint(node))
    parts.append(encode_varuint(len(neighbors)))
    parts.extend(encode_varuint(neighbor) for neighbor in neighbors)
    return b"".join(parts)


def encode_state_vector(vector: dict[int, int]) -> bytes:
    """A Yjs v1 state vector: varuint count, then (client, clock) pairs."""
    parts = [encode_varuint(len(vector))]
    for client, clock in sorted(vector.items()):
        parts.append(encode_varuint(client))
        parts.append(encode_varuint(clock))
    return b"".join(parts)


def encode_awareness_entries(entries: list[AwarenessEntry]) -> bytes:
    """The awareness-update payload (without the message header)."""
    parts = [encode_varuint(len(entries))]
    for entry in entries:
        parts.append(encode_varuint(entry.client_id))
        parts.append(encode_varuint(entry.clock))
        # y-protocols writes JSON.stringify(state): compact, "null" for a removal.
        parts.append(_varbytes(json.dumps(entry.state, separators=(",", ":")).encode("utf-8")))
    return b"".join(parts)


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    return encode_varuint(MESSAGE_AWARENESS) + _varbytes(encode_awareness_entries(entries))


def _awareness_entries_untrusted(payload: bytes) -> tuple[AwarenessEntry, ...]:
    reader = _Reader(payload)
    count = reader.varuint_untrusted()
    # Each entry takes at least 3 bytes, so a count beyond that is a lie: refuse it
    # before looping (every loop is bounded by the bytes actually present).
    if count * 3 > len(payload):
        raise BadPacket(f"awareness update claims {count} entries in {len(payload)} bytes")
    entries = []
    for _ in range(count):
        client_id = reader.varuint_untrusted()
        clock = reader.varuint_untrusted()
        text = reader.varstring_untrusted()
        try:
            state = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadPacket("awareness state is not JSON") from exc
        if state is not None and not isinstance(state, dict):
            raise BadPacket("awareness state is neither an object nor null")
        entries.append(AwarenessEntry(client_id=client_id, clock=clock, state=state))
    reader.end_untrusted()
    return tuple(entries)


def parse_message_untrusted(data: bytes) -> Message:
    """Decode one y-protocols message. Raises only BadPacket."""
    reader = _Reader(data)
    kind = reader.varuint_untrusted()
    message: Message
    if kind == MESSAGE_SYNC:
        step = reader.varuint_untrusted()
        payload = reader.varbytes_untrusted()
        if step == SYNC_STEP1:
            message = SyncStep1(state_vector=payload)
        elif step == SYNC_STEP2:
            message = SyncStep2(update=payload)
        elif step == SYNC_UPDATE:
            message = SyncUpdate(update=payload)
        else:
            raise BadPacket(f"unknown sync message type {step}")
    elif kind == MESSAGE_AWARENESS:
        message = AwarenessUpdate(entries=_awareness_entries_untrusted(reader.varbytes_untrusted()))
    elif kind == MESSAGE_AUTH:
        auth_kind = reader.varuint_untrusted()
        if auth_kind != AUTH_PERMISSION_DENIED:
            raise BadPacket(f"unknown auth message type {auth_kind}")
        message = PermissionDenied(reason=reader.varstring_untrusted())
    elif kind == MESSAGE_MESH:
        message = _mesh_neighbors_untrusted(reader)
    else:
        raise BadPacket(f"unknown message type {kind}")
    reader.end_untrusted()
    return message


def _mesh_neighbors_untrusted(reader: _Reader) -> MeshNeighbors:
    flags = reader.varuint_untrusted()
    if flags & ~MESH_RESYNC:
        raise BadPacket(f"unknown mesh flags {flags:#x}")
    node = reader.varuint_untrusted()
    count = reader.varuint_untrusted()
    if count > MAX_MESH_NEIGHBORS or count > len(reader.data):
        raise BadPacket(f"mesh message claims {count} neighbours")
    neighbors = tuple(reader.varuint_untrusted() for _ in range(count))
    return MeshNeighbors(node=node, neighbors=neighbors, resync=bool(flags & MESH_RESYNC))


def parse_state_vector_untrusted(data: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector: varuint count, then (client, clock) pairs."""
    reader = _Reader(data)
    count = reader.varuint_untrusted()
    if count * 2 > len(data):
        raise BadPacket(f"state vector claims {count} clients in {len(data)} bytes")
    result = {}
    for _ in range(count):
        client = reader.varuint_untrusted()
        result[client] = reader.varuint_untrusted()
    reader.end_untrusted()
    return result


def is_write_message(payload: bytes) -> bool:
    """True if ``payload`` asks the receiver to change the document (sync step 2 or update).

    Session wrappers use this to stop read-only peers' writes. It reads only the
    two leading varuints; bytes that are not a message at all are not a write
    (the receiver drops them as malformed).
    """
    reader = _Reader(payload)
    try:
        if reader.varuint_untrusted() != MESSAGE_SYNC:
            return False
        return reader.varuint_untrusted() in (SYNC_STEP2, SYNC_UPDATE)
    except BadPacket:
        return False
