"""A virtual network on a virtual clock for sans-I/O Quantum endpoints.

Two (or more) :class:`EndpointCore` objects exchange datagrams through a link
with seeded loss, duplication, reordering (jitter), one-way delay and a
bandwidth limit. Time jumps to the next event (a datagram arriving or a
timer), so thousands of packets run in milliseconds, deterministically.

Besides endpoints, a node at an address may be a *middlebox* (a forwarder, a relay): anything
with ``receive_datagram(data, source, now)``, ``get_timer()``, ``handle_timer(now)`` and
``datagrams_to_send(now)``, whose output items may name their source as a third element
(``(data, destination, source)``), so one box can answer from several addresses.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

import attrs

from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._connection import QuantumConnection
from aetherflow_sdk.quantum._endpoint_core import EndpointCore

Address = tuple[str, int]
Pair = tuple[EndpointCore, EndpointCore, QuantumConnection, QuantumConnection]
"""(client endpoint, server endpoint, client connection, server connection)."""


@attrs.define
class LinkProfile:
    delay: float = 0.010
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0  # uniform extra delay in [0, jitter): reorders packets
    rate_bytes_per_s: float | None = None  # None: unlimited
    # Drop a datagram when the predicate says so (scripted loss), after random loss.
    drop_if: Callable[[bytes, Address, Address], bool] | None = None


@attrs.define
class LinkCounters:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0


class VirtualNetwork:
    def __init__(self, seed: int, profile: LinkProfile | None = None) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        # The endpoints' own random choices (BBR's phase) come from a separate stream, so that
        # they do not shift the link's loss pattern for a given seed.
        self._endpoint_seeds = random.Random(seed ^ 0x5EED)
        self.profile = profile or LinkProfile()
        self.now = 1000.0
        self.endpoints: dict[Address, Any] = {}  # EndpointCore, or a middlebox (see the module)
        self.links: dict[tuple[Address, Address], LinkProfile] = {}  # per-direction overrides
        self._queue: list[tuple[float, int, bytes, Address, Address]] = []
        self._order = itertools.count()
        self._link_free_at: dict[tuple[Address, Address], float] = {}
        self.counters = LinkCounters()
        self.trace: list[tuple[float, Address, Address, int]] = []

    def add_endpoint(
        self,
        address: Address,
        *,
        config: QuantumConfig | None = None,
        identity: Identity | None = None,
        accept: bool = True,
    ) -> EndpointCore:
        endpoint = EndpointCore(
            identity=identity or Identity.generate(),
            config=config or QuantumConfig(),
            accept_connections=accept,
            cookie_secret=self.random.randbytes(32),
            rng=random.Random(self._endpoint_seeds.getrandbits(64)),
        )
        self.endpoints[address] = endpoint
        return endpoint

    def inject(self, data: bytes, source: Address, destination: Address, at: float | None = None) -> None:
        heapq.heappush(
            self._queue, (self.now if at is None else at, next(self._order), data, source, destination)
        )

    def _transmit(self, data: bytes, source: Address, destination: Address) -> None:
        p = self.links.get((source, destination), self.profile)
        self.counters.sent += 1
        if p.drop_if is not None and p.drop_if(data, source, destination):
            self.counters.lost += 1
            return
        if p.loss and self.random.random() < p.loss:
            self.counters.lost += 1
            return
        depart = self.now
        if p.rate_bytes_per_s:
            key = (source, destination)
            depart = max(self.now, self._link_free_at.get(key, 0.0)) + len(data) / p.rate_bytes_per_s
            self._link_free_at[key] = depart
        copies = 2 if p.duplicate and self.random.random() < p.duplicate else 1
        if copies == 2:
            self.counters.duplicated += 1
        for _ in range(copies):
            arrival = depart + p.delay + (self.random.random() * p.jitter if p.jitter else 0.0)
            heapq.heappush(self._queue, (arrival, next(self._order), data, source, destination))

    def flush(self) -> None:
        """Move every endpoint's pending output onto the link."""
        seen: set[int] = set()
        for address, endpoint in list(self.endpoints.items()):
            if id(endpoint) in seen:
                continue  # a middlebox at several addresses is flushed once
            seen.add(id(endpoint))
            for item in endpoint.datagrams_to_send(self.now):
                self._transmit(item[0], item[2] if len(item) > 2 else address, item[1])

    def step(self) -> bool:
        """Advance to the next event; False when nothing is left to do."""
        self.flush()
        boxes = list({id(e): e for e in self.endpoints.values()}.values())
        timers = [t for e in boxes if (t := e.get_timer()) is not None]
        next_timer = min(timers) if timers else None
        next_packet = self._queue[0][0] if self._queue else None
        if next_timer is None and next_packet is None:
            return False
        if next_packet is not None and (next_timer is None or next_packet <= next_timer):
            arrival, _, data, source, destination = heapq.heappop(self._queue)
            self.now = max(self.now, arrival)
            endpoint = self.endpoints.get(destination)
            if endpoint is not None:
                self.counters.delivered += 1
                endpoint.receive_datagram(data, source, self.now)
        else:
            assert next_timer is not None
            self.now = max(self.now, next_timer)
            for endpoint in boxes:
                endpoint.handle_timer(self.now)
        return True

    def run_until(
        self, condition: Callable[[], bool], *, max_time: float = 600.0, max_steps: int = 5_000_000
    ) -> None:
        deadline = self.now + max_time
        for _ in range(max_steps):
            if condition():
                return
            if self.now > deadline or not self.step():
                break
        if not condition():
            raise AssertionError(f"condition not reached by t={self.now - 1000.0:.3f}s (seed={self.seed})")


def send_and_collect(net: VirtualNetwork, pair: Pair, payloads: list[bytes], max_time: float = 10) -> float:
    """Queue ``payloads`` (unordered) client -> server, run until all arrived; the time it took."""
    client_ep, server_ep, client, server = pair
    for p in payloads:
        client.send_message(p, ordered=False)
    client_ep.mark_dirty(client)
    start = net.now
    got: list[bytes] = []

    def collect() -> bool:
        while (m := server.receive_message()) is not None:
            got.append(m)
            server_ep.mark_dirty(server)
        return len(got) == len(payloads)

    net.run_until(collect, max_time=max_time)
    assert sorted(got) == sorted(payloads), f"seed={net.seed}"
    return net.now - start
