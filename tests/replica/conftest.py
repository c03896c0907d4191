"""Shared fixtures for the replica tests: a seeded RNG and a virtual network of sync protocols."""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest

from aetherflow_sdk.replica import Replica, SyncProtocol

# The traces ship in tests/data/traces (see its README); AETHERFLOW_TRACES points elsewhere.
TRACES = Path(os.environ.get("AETHERFLOW_TRACES", Path(__file__).resolve().parents[1] / "data" / "traces"))


@pytest.fixture
def rng() -> random.Random:
    """A seeded RNG; the seed is printed (pytest shows it for failing tests). Set REPLICA_SEED to replay."""
    seed = int(os.environ.get("REPLICA_SEED", random.randrange(1 << 32)))
    print(f"REPLICA_SEED={seed}")
    return random.Random(seed)


def make_replica(rng: random.Random, doc_id: str = "d") -> Replica:
    """A replica whose Yjs client ID comes from the seeded RNG (so a failing seed replays exactly)."""
    return Replica(doc_id, client_id=rng.randrange(1, 1 << 32))


def load_trace(name: str) -> dict[str, Any]:
    path = TRACES / name
    if not path.exists():
        pytest.skip(f"trace {path} not present (set AETHERFLOW_TRACES)")
    with gzip.open(path) as f:
        data: dict[str, Any] = json.load(f)
    return data


class VirtualNet:
    """Sync protocols joined by in-memory links, on a virtual clock.

    Ordered messages keep their order per direction; unordered messages and
    datagrams are delivered in a random (seeded) order; datagrams may be lost.
    """

    def __init__(self, rng: random.Random, *, datagram_loss: float = 0.0) -> None:
        self.rng = rng
        self.now = 0.0
        self.datagram_loss = datagram_loss
        self.nodes: dict[Hashable, SyncProtocol] = {}
        # (src, dst) -> list of (kind, data) not yet delivered
        self.in_flight: dict[tuple[Hashable, Hashable], list[tuple[str, bytes]]] = {}
        self.delivered = 0
        self.dead: set[Hashable] = set()
        self.log: list[tuple[Hashable, Hashable, bytes]] = []
        """Every delivered message: (source, destination, bytes)."""

    def add(self, name: Hashable, replica: Replica, **options: Any) -> SyncProtocol:
        protocol = SyncProtocol(replica, now=self.now, **options)
        self.nodes[name] = protocol
        return protocol

    def connect(self, a: Hashable, b: Hashable, *, a_trusts_b: bool = True, b_trusts_a: bool = True) -> None:
        self.nodes[a].add_peer(b, can_write=a_trusts_b)
        self.nodes[b].add_peer(a, can_write=b_trusts_a)
        self.in_flight[(a, b)] = []
        self.in_flight[(b, a)] = []

    def sent(self, src: Hashable, dst: Hashable, prefix: bytes) -> int:
        """How many delivered messages from ``src`` to ``dst`` start with ``prefix``."""
        return sum(1 for s, d, data in self.log if s == src and d == dst and data.startswith(prefix))

    def disconnect(self, a: Hashable, b: Hashable) -> None:
        """Drop the link; whatever was in flight is lost (the connection died)."""
        self.collect()
        self.nodes[a].remove_peer(b)
        self.nodes[b].remove_peer(a)
        del self.in_flight[(a, b)]
        del self.in_flight[(b, a)]

    def vanish(self, name: Hashable) -> None:
        """``name`` stops dead: it sends nothing more, what is sent to it is lost, nobody is told."""
        self.dead.add(name)

    def collect(self) -> None:
        for (src, dst), queue in self.in_flight.items():
            if src in self.dead:
                continue
            for out in self.nodes[src].messages_for(dst, self.now):
                if dst not in self.dead:
                    queue.append((out.kind, out.data))

    def step(self) -> bool:
        """Deliver one message; False when nothing is in flight."""
        self.collect()
        busy = [link for link, queue in self.in_flight.items() if queue]
        if not busy:
            return False
        src, dst = self.rng.choice(sorted(busy, key=repr))
        queue = self.in_flight[(src, dst)]
        unordered = [i for i, (kind, _) in enumerate(queue) if kind != "ordered"]
        first_ordered = next((i for i, (kind, _) in enumerate(queue) if kind == "ordered"), None)
        choices = unordered + ([first_ordered] if first_ordered is not None else [])
        kind, data = queue.pop(self.rng.choice(choices))
        if kind == "datagram" and self.rng.random() < self.datagram_loss:
            return True
        self.nodes[dst].receive_message(src, data, self.now)
        self.delivered += 1
        self.log.append((src, dst, data))
        return True

    def run(self, max_steps: int = 100_000) -> int:
        """Deliver until quiet (bounded); returns the number of steps."""
        for steps in range(max_steps):
            if not self.step():
                return steps
        raise AssertionError(f"network still busy after {max_steps} steps")

    def advance(self, seconds: float) -> None:
        """Move the virtual clock, firing protocol timers on the way (bounded)."""
        target = self.now + seconds
        for _ in range(100_000):
            live = [p for name, p in self.nodes.items() if name not in self.dead]
            deadlines = [t for p in live if (t := p.get_timer()) is not None and t <= target]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            for protocol in live:
                timer = protocol.get_timer()
                if timer is not None and timer <= self.now:
                    protocol.handle_timer(self.now)
            self.collect()
        else:
            raise AssertionError("timers did not settle")
        self.now = target
