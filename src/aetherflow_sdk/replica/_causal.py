"""The causal buffer: received updates wait here until what they reference has arrived.

Why it exists is in ``_sync.py`` (rule 4): the installed yrs mis-integrates an update
that arrives before its dependencies. How it is built, so that many peers and many
waiting updates stay cheap:

* **Bounded per peer, in bytes and in count.** Each peer has its own budget; one peer
  that sends 10,000 updates which can never become ready fills only its own budget, and
  the caller then drops that peer's updates and asks it for a fresh step 2.
* **Purged with the peer.** ``drop_peer`` frees everything a departed peer left behind.
* **Indexed by what each update waits for.** A held update is filed under one threshold
  it does not meet yet -- "client C must reach clock K" -- in a per-client heap. When
  C's clock moves, only the updates filed under C with K at or below the new clock are
  looked at again: each is either released or filed under its next unmet threshold. So
  an applied update costs O(log n) for the updates it releases, and nothing at all for
  updates waiting on other clients: there is no rescan of everything held.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable

import attrs

from aetherflow_sdk.replica._deps import UpdateNeeds


@attrs.define(eq=False)
class Held:
    """One update waiting in the buffer."""

    origin: Hashable
    """The peer it came from."""
    update: bytes
    """The Yjs v1 update (emptied once dropped, so a stale index entry holds no bytes)."""
    needs: UpdateNeeds
    """What it depends on (``_deps.py``)."""
    thresholds: dict[int, int]
    """Per client, the clock we must reach (``UpdateNeeds.requirements``)."""
    sequence: int
    """Arrival number (ties in the index go in arrival order)."""
    alive: bool = True


@attrs.define(eq=False)
class _PeerBudget:
    held: dict[int, Held] = attrs.Factory(dict)  # by sequence number, in arrival order
    bytes: int = 0


class CausalBuffer:
    """Updates held until ready, per peer, indexed by the clock each one waits for."""

    def __init__(self, *, max_bytes_per_peer: int, max_updates_per_peer: int) -> None:
        self.max_bytes_per_peer = max_bytes_per_peer
        self.max_updates_per_peer = max_updates_per_peer
        self._peers: dict[Hashable, _PeerBudget] = {}
        # client -> heap of (clock needed, sequence, held); entries of dropped updates
        # stay until popped or until a rebuild (they hold no bytes meanwhile).
        self._waiting: dict[int, list[tuple[int, int, Held]]] = {}
        self._stale_entries = 0
        self._ready: deque[Held] = deque()
        self._sequence = 0
        self.count = 0
        """Updates held now."""
        self.bytes = 0
        """Bytes of the updates held now."""
        self.wakeups = 0
        """Held updates looked at again because a clock they wait on moved."""

    def held_by(self, peer: Hashable) -> tuple[int, int]:
        """(updates, bytes) held from ``peer``."""
        budget = self._peers.get(peer)
        return (0, 0) if budget is None else (len(budget.held), budget.bytes)

    def hold(self, origin: Hashable, update: bytes, needs: UpdateNeeds, have: dict[int, int]) -> bool:
        """Hold ``update`` (not ready on ``have``). False if it does not fit ``origin``'s budget:
        nothing is held then, and the caller should drop the peer's updates and resync."""
        budget = self._peers.setdefault(origin, _PeerBudget())
        if (
            len(budget.held) >= self.max_updates_per_peer
            or budget.bytes + len(update) > self.max_bytes_per_peer
        ):
            return False
        self._sequence += 1
        held = Held(
            origin=origin,
            update=update,
            needs=needs,
            thresholds=needs.requirements(),
            sequence=self._sequence,
        )
        budget.held[held.sequence] = held
        budget.bytes += len(update)
        self.count += 1
        self.bytes += len(update)
        if not self._file(held, have):
            self._ready.append(held)  # the caller found it unready; stay correct if it erred
        return True

    def _file(self, held: Held, have: dict[int, int]) -> bool:
        """File ``held`` under its first unmet threshold; False if it has none (it is ready)."""
        for client, clock in held.thresholds.items():
            if have.get(client, 0) < clock:
                heapq.heappush(self._waiting.setdefault(client, []), (clock, held.sequence, held))
                return True
        return False

    def advanced(self, clients: list[int], have: dict[int, int]) -> None:
        """The clocks of ``clients`` moved to ``have[client]``: release what now may be ready."""
        for client in clients:
            heap = self._waiting.get(client)
            if not heap:
                continue
            clock_now = have.get(client, 0)
            while heap and heap[0][0] <= clock_now:
                _, _, held = heapq.heappop(heap)
                if not held.alive:
                    self._stale_entries -= 1
                    continue
                self.wakeups += 1
                if not self._file(held, have):
                    self._ready.append(held)
            if not heap:
                del self._waiting[client]

    def pop_ready(self) -> Held | None:
        """The next held update that became ready (removed from the buffer), or None."""
        while self._ready:
            held = self._ready.popleft()
            if held.alive:
                self._forget(held)
                return held
        return None

    def _forget(self, held: Held) -> None:
        held.alive = False
        budget = self._peers[held.origin]
        del budget.held[held.sequence]
        budget.bytes -= len(held.update)
        self.count -= 1
        self.bytes -= len(held.update)
        if not budget.held:
            del self._peers[held.origin]

    def drop_peer(self, peer: Hashable) -> int:
        """Forget everything held from ``peer`` (it left, or we resync with it). Returns how many."""
        budget = self._peers.pop(peer, None)
        if budget is None:
            return 0
        for held in budget.held.values():
            held.alive = False
            held.update = b""
        dropped = len(budget.held)
        self.count -= dropped
        self.bytes -= budget.bytes
        # Entries of dropped updates are still in the heaps (ready ones are skipped when
        # popped). Rebuild once they outnumber the live ones, so memory follows what is held.
        self._stale_entries += dropped
        if self._stale_entries > max(64, self.count):
            self._rebuild()
        return dropped

    def _rebuild(self) -> None:
        waiting: dict[int, list[tuple[int, int, Held]]] = {}
        for client, heap in self._waiting.items():
            live = [entry for entry in heap if entry[2].alive]
            if live:
                heapq.heapify(live)
                waiting[client] = live
        self._waiting = waiting
        self._ready = deque(held for held in self._ready if held.alive)
        self._stale_entries = 0

    def reset_index(self, have: dict[int, int]) -> None:
        """Our state vector changed wholesale (history adopted): file every held update again."""
        entries = [held for budget in self._peers.values() for held in budget.held.values()]
        self._waiting = {}
        self._ready = deque()
        self._stale_entries = 0
        for held in sorted(entries, key=lambda held: held.sequence):
            if not self._file(held, have):
                self._ready.append(held)
