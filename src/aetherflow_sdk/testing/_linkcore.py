"""The sans-I/O core of the link emulator: one direction of an emulated link.

Rules of this module:

1. Nothing here reads a clock, touches a file descriptor or sleeps. Every
   method that depends on time takes ``now`` (seconds, any monotonic origin).
2. Every random choice comes from one ``random.Random`` seeded at construction,
   so the same seed and the same packet arrivals give the same drops.
3. A packet's fate is decided once, when it is offered: lost, dropped by the
   queue, or scheduled for delivery at a known time.

The model follows Mahimahi's shells, in this order:

* **loss** -- each packet is dropped with probability ``loss`` (Bernoulli,
  i.i.d.), before it reaches the bottleneck, like a lossy radio hop;
* **bottleneck** -- a link of ``rate_bps`` bits per second fed by a drop-tail
  queue holding at most ``queue_packets`` packets (the one being serialised
  included). A packet that finds the queue full is dropped;
* **propagation** -- after serialisation the packet travels ``delay`` seconds,
  plus a uniform random ``0..jitter`` seconds. Jitter larger than the gap
  between two packets reorders them, as a multi-path network would.
"""

from __future__ import annotations

import collections
import heapq
import random

import attrs

from aetherflow_sdk._errors import LocalProtocolError


def _check_non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise LocalProtocolError(f"link {attribute.name} must be >= 0, got {value}")


def _check_probability(_instance: object, _attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise LocalProtocolError(f"link loss is a probability in [0, 1), got {value}")


def _check_rate(_instance: object, _attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and value <= 0:
        raise LocalProtocolError(f"link rate must be > 0 bits/s (or None for unlimited), got {value}")


def _check_queue(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise LocalProtocolError(f"link queue must hold at least 1 packet, got {value}")


@attrs.frozen(kw_only=True)
class LinkConfig:
    """The impairments of one direction of an emulated link."""

    delay: float = attrs.field(default=0.0, validator=_check_non_negative)
    """One-way propagation delay in seconds, added after the bottleneck."""
    loss: float = attrs.field(default=0.0, validator=_check_probability)
    """Probability in [0, 1) that a packet is dropped (i.i.d., seeded)."""
    rate_bps: float | None = attrs.field(default=None, validator=_check_rate)
    """Bottleneck rate in bits per second; ``None`` means no rate limit (and no queue)."""
    queue_packets: int = attrs.field(default=1000, validator=_check_queue)
    """Drop-tail queue depth at the bottleneck, in packets (only used with a rate)."""
    jitter: float = attrs.field(default=0.0, validator=_check_non_negative)
    """Extra delay drawn uniformly from [0, jitter] seconds per packet; reorders packets."""

    def to_dict(self) -> dict[str, float | int | None]:
        """A JSON-ready form (the forwarder process receives its config this way)."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class DirectionStatistics:
    """Counters of one direction of the link since it was created."""

    offered: int
    """Packets that entered this direction (forwarded + dropped + still in flight)."""
    offered_bytes: int
    """Bytes of those packets (IP headers included): what senders put on the wire."""
    forwarded: int
    """Packets delivered to the far side."""
    forwarded_bytes: int
    """Bytes of the delivered packets."""
    dropped_loss: int
    """Packets dropped by the random loss."""
    dropped_queue: int
    """Packets dropped because the bottleneck queue was full."""
    in_flight: int
    """Packets accepted but not yet delivered (queued or propagating)."""

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready form."""
        return attrs.asdict(self)


class LinkDirection:
    """One direction of an emulated link, driven by the caller's clock.

    Use: call :meth:`offer` for every packet that arrives, ask
    :meth:`next_deadline` when the next one is due, and collect due packets
    with :meth:`pop_due`.
    """

    def __init__(self, config: LinkConfig, *, seed: int | str) -> None:
        self.config = config
        self._random = random.Random(seed)
        # Times at which packets still in the bottleneck finish serialising;
        # its length is the queue occupancy used for drop-tail.
        self._serialising: collections.deque[float] = collections.deque()
        self._link_free_at = float("-inf")
        # (deliver_at, arrival order, packet): the order breaks ties so equal
        # times keep their arrival order, and bytes are never compared.
        self._propagating: list[tuple[float, int, bytes]] = []
        self._sequence = 0
        self._offered = 0
        self._offered_bytes = 0
        self._forwarded = 0
        self._forwarded_bytes = 0
        self._dropped_loss = 0
        self._dropped_queue = 0

    def offer(self, packet: bytes, now: float) -> bool:
        """A packet arrives at ``now``; returns False if it was dropped."""
        config = self.config
        self._offered += 1
        self._offered_bytes += len(packet)
        if config.loss and self._random.random() < config.loss:
            self._dropped_loss += 1
            return False
        if config.rate_bps is None:
            leaves_bottleneck = now
        else:
            serialising = self._serialising
            while serialising and serialising[0] <= now:
                serialising.popleft()
            if len(serialising) >= config.queue_packets:
                self._dropped_queue += 1
                return False
            start = now if self._link_free_at < now else self._link_free_at
            leaves_bottleneck = start + len(packet) * 8 / config.rate_bps
            self._link_free_at = leaves_bottleneck
            serialising.append(leaves_bottleneck)
        deliver_at = leaves_bottleneck + config.delay
        if config.jitter:
            deliver_at += self._random.uniform(0.0, config.jitter)
        self._sequence += 1
        heapq.heappush(self._propagating, (deliver_at, self._sequence, packet))
        return True

    def next_deadline(self) -> float | None:
        """When the next packet is due for delivery, or None if nothing is in flight."""
        return self._propagating[0][0] if self._propagating else None

    def pop_due(self, now: float) -> list[bytes]:
        """Remove and return, in delivery order, every packet due at or before ``now``."""
        due: list[bytes] = []
        propagating = self._propagating
        while propagating and propagating[0][0] <= now:
            packet = heapq.heappop(propagating)[2]
            due.append(packet)
            self._forwarded_bytes += len(packet)
        self._forwarded += len(due)
        return due

    def statistics(self) -> DirectionStatistics:
        """The counters so far."""
        return DirectionStatistics(
            offered=self._offered,
            offered_bytes=self._offered_bytes,
            forwarded=self._forwarded,
            forwarded_bytes=self._forwarded_bytes,
            dropped_loss=self._dropped_loss,
            dropped_queue=self._dropped_queue,
            in_flight=len(self._propagating),
        )


@attrs.frozen(kw_only=True)
class LinkStatistics:
    """Counters of both directions of an emulated link."""

    a_to_b: DirectionStatistics
    """Packets from namespace A towards namespace B."""
    b_to_a: DirectionStatistics
    """Packets from namespace B towards namespace A."""

    def to_dict(self) -> dict[str, dict[str, int]]:
        """A JSON-ready form."""
        return {"a_to_b": self.a_to_b.to_dict(), "b_to_a": self.b_to_a.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, int]]) -> LinkStatistics:
        """Rebuild from :meth:`to_dict` output (the forwarder reports this way)."""
        return cls(a_to_b=DirectionStatistics(**data["a_to_b"]), b_to_a=DirectionStatistics(**data["b_to_a"]))
