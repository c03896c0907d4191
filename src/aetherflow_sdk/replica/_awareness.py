"""Presence (Yjs awareness), sans-I/O: every method takes ``now`` (seconds, any monotonic origin).

Semantics follow y-protocols ``awareness.js``: each client owns one JSON state
and a clock it bumps on every change; an entry is accepted when its clock is
higher than the one we hold (or equal, carrying null, to remove). A state not
renewed for ``timeout`` seconds is dropped; the owner renews its own every
``timeout / 2``. One difference: a peer can never overwrite or remove *our* own
state -- such an entry only makes us bump our clock and re-announce.
"""

from __future__ import annotations

from typing import Any

import attrs

from aetherflow_sdk.replica._wire import _MAX_VARUINT, AwarenessEntry

DEFAULT_AWARENESS_TIMEOUT = 30.0
"""Seconds without renewal before a peer's presence is dropped (y-protocols ``outdatedTimeout``)."""

MAX_CLOCK = _MAX_VARUINT
"""The largest clock the wire carries; ours never goes past it, so it always encodes."""


@attrs.frozen(kw_only=True)
class AwarenessChange:
    """Which clients' presence an operation added, changed or removed."""

    added: tuple[int, ...] = ()
    """Clients that appeared."""
    updated: tuple[int, ...] = ()
    """Clients whose state changed (or was renewed with the same content)."""
    removed: tuple[int, ...] = ()
    """Clients that left (null state, timeout or lost connection)."""
    rejected: tuple[int, ...] = ()
    """Clients whose entry was ignored as invalid (our own client at the maximum clock)."""

    @property
    def changed(self) -> tuple[int, ...]:
        return self.added + self.updated + self.removed


@attrs.define(kw_only=True)
class _Meta:
    clock: int
    last_updated: float


class Awareness:
    """The presence states of this client and every client heard of."""

    def __init__(self, client_id: int, *, now: float, timeout: float = DEFAULT_AWARENESS_TIMEOUT) -> None:
        self.client_id = client_id
        self.timeout = timeout
        self._states: dict[int, dict[str, Any]] = {}
        self._meta: dict[int, _Meta] = {client_id: _Meta(clock=0, last_updated=now)}

    @property
    def local_state(self) -> dict[str, Any] | None:
        return self._states.get(self.client_id)

    @property
    def states(self) -> dict[int, dict[str, Any]]:
        """Every known state, ours included (a copy of the mapping)."""
        return dict(self._states)

    def set_local_state(self, state: dict[str, Any] | None, now: float) -> None:
        """Replace our state (None: we are leaving); bumps our clock."""
        meta = self._meta[self.client_id]
        meta.clock = min(meta.clock + 1, MAX_CLOCK)
        meta.last_updated = now
        if state is None:
            self._states.pop(self.client_id, None)
        else:
            self._states[self.client_id] = dict(state)

    def entries(self, client_ids: list[int] | None = None) -> list[AwarenessEntry]:
        """Wire entries for ``client_ids`` (all known clients if None); absent states encode as null."""
        ids = list(self._meta) if client_ids is None else client_ids
        return [
            AwarenessEntry(client_id=c, clock=self._meta[c].clock, state=self._states.get(c))
            for c in ids
            if c in self._meta
        ]

    def apply_entries(self, entries: tuple[AwarenessEntry, ...], now: float) -> AwarenessChange:
        """Merge entries received from a peer; returns what changed."""
        added: list[int] = []
        updated: list[int] = []
        removed: list[int] = []
        rejected: list[int] = []
        for entry in entries:
            client = entry.client_id
            if client == self.client_id:
                if entry.clock >= MAX_CLOCK:
                    # Outbidding it would take a clock the wire cannot carry.
                    rejected.append(client)
                    continue
                meta = self._meta[client]
                # Our own state relayed back (same clock, same state) is ignored, as in
                # awareness.js -- reacting to it would ping-pong around a mesh cycle.
                # Only a newer clock, or a removal at our clock, is outbid.
                newer = entry.clock > meta.clock or (entry.clock == meta.clock and entry.state is None)
                if newer and self.local_state is not None:
                    meta.clock = entry.clock + 1
                    meta.last_updated = now
                    updated.append(client)
                continue
            meta_or_none = self._meta.get(client)
            if meta_or_none is None and entry.state is None:
                continue  # removing a client we never held: nothing to remember
            current_clock = 0 if meta_or_none is None else meta_or_none.clock
            held = client in self._states
            if not (
                current_clock < entry.clock or (current_clock == entry.clock and entry.state is None and held)
            ):
                continue
            self._meta[client] = _Meta(clock=entry.clock, last_updated=now)
            if entry.state is None:
                if held:
                    del self._states[client]
                    removed.append(client)
            else:
                self._states[client] = entry.state
                (updated if held else added).append(client)
        return AwarenessChange(
            added=tuple(added), updated=tuple(updated), removed=tuple(removed), rejected=tuple(rejected)
        )

    def remove(self, client_ids: list[int]) -> AwarenessChange:
        """Forget remote clients (their connection is gone); our own state is never removed here."""
        removed = []
        for client in client_ids:
            if client != self.client_id and client in self._states:
                del self._states[client]
                # The clock stays as a tombstone (the null entry we relay carries it)
                # until handle_timer() forgets it when the state would have expired.
                removed.append(client)
        return AwarenessChange(removed=tuple(removed))

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work: our renewal or the first remote expiry."""
        deadlines = []
        if self.local_state is not None:
            deadlines.append(self._meta[self.client_id].last_updated + self.timeout / 2)
        for client, meta in self._meta.items():
            if client != self.client_id:
                deadlines.append(meta.last_updated + self.timeout)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> tuple[AwarenessChange, bool]:
        """Drop expired remote states; renew ours when due. Returns (removed, renewed)."""
        expired = [
            c
            for c in self._states
            if c != self.client_id and now >= self._meta[c].last_updated + self.timeout
        ]
        for client in expired:
            del self._states[client]
        # Forget expired states' clocks and the tombstones of removed clients, so
        # clients that come and go (or a flood of IDs) do not grow _meta for ever.
        for client in [
            c
            for c, meta in self._meta.items()
            if c != self.client_id and c not in self._states and now >= meta.last_updated + self.timeout
        ]:
            del self._meta[client]
        renewed = False
        local = self.local_state
        if local is not None and now >= self._meta[self.client_id].last_updated + self.timeout / 2:
            self.set_local_state(local, now)
            renewed = True
        return AwarenessChange(removed=tuple(expired)), renewed
