"""What keeps one peer from hurting the node: reconnection backoff, per-peer budgets, strikes.

Sans-I/O: every call that depends on time takes ``now``; randomness comes from the
caller's ``random.Random`` (seeded in tests).

* :class:`Backoff` -- exponential backoff with jitter between reconnection attempts
  ("full jitter" halved: each delay is uniform in [d/2, d], d doubling from ``base`` up to
  ``cap``), so that nodes that lost a peer together do not redial in lockstep.
* :class:`TokenBucket` -- a rate and a burst, for messages and for bytes per peer.
* :class:`PeerBudget` -- both buckets and the strike count of one peer: garbage, writes
  from a read-only peer. Past ``max_strikes`` the peer is dropped (its connection closed
  and the peer kept away for a while); a flood is throttled (its messages are read more
  slowly, so the transport's flow control pushes back on the sender).
"""

from __future__ import annotations

import math
import random

import attrs


@attrs.frozen(kw_only=True)
class Limits:
    """Per-peer and per-document limits of a node (all configurable through ``open_node``)."""

    max_peers_per_document: int = 32
    """Holders a document syncs with at once; more are refused."""
    messages_per_second: float = 500.0
    """Sustained messages (and datagrams) accepted from one peer, every document together."""
    message_burst: float = 2000.0
    bytes_per_second: float = 4 * 1024 * 1024
    """Sustained bytes accepted from one peer."""
    byte_burst: float = 16 * 1024 * 1024
    max_strikes: int = 16
    """Protocol offences (garbage, read-only writes) tolerated before the peer is dropped."""
    ban_seconds: float = 60.0
    """How long a dropped peer is refused before it may connect again."""
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    direct_timeout: float = 0.5
    """With a home relay: how long a peer's direct addresses get to answer (shared; each at
    least a quarter of it) before the relay is tried."""
    upgrade_interval: float = 60.0
    """While a link this node dialled is relayed: seconds between attempts to punch to a direct path."""

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Limits):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be > 0, got {getattr(self, field.name)!r}")


class Backoff:
    """Delays between reconnection attempts: exponential, capped, jittered."""

    def __init__(self, rng: random.Random, *, base: float = 0.25, cap: float = 30.0) -> None:
        self._rng = rng
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts = min(self.attempts + 1, 64)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, amount: float, now: float) -> float:
        """Spend ``amount``; returns how long to wait before the debt is paid (0 if none).

        The debt is allowed (an oversized message still passes, later): the caller waits.
        """
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` only if available now (for datagrams, which are dropped instead)."""
        self._refill(now)
        # The tolerance absorbs float rounding, so a take at exactly ready_time() succeeds.
        if amount > self._tokens + 1e-6:
            return False
        self._tokens = max(self._tokens - amount, 0.0)
        return True

    def ready_time(self, amount: float) -> float:
        """The earliest time ``try_take(amount)`` can succeed (inf if ``amount`` exceeds the burst)."""
        if amount > self.burst:
            return math.inf
        missing = amount - self._tokens
        return self._stamp if missing <= 0 else self._stamp + missing / self.rate


class PeerBudget:
    """The budgets and the strikes of one peer (all its channels together)."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self._messages = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self._bytes = TokenBucket(limits.bytes_per_second, limits.byte_burst, now)
        self.strikes = 0
        self.throttled = 0
        self.datagrams_dropped = 0

    def on_message(self, size: int, now: float) -> float:
        """A message arrived: seconds to wait before reading on (0 when within budget)."""
        delay = max(self._messages.take(1, now), self._bytes.take(size, now))
        if delay > 0:
            self.throttled += 1
        return delay

    def on_datagram(self, size: int, now: float) -> bool:
        """A datagram arrived: True to keep it, False to drop it (over budget)."""
        if self._messages.try_take(1, now) and self._bytes.try_take(size, now):
            return True
        self.datagrams_dropped += 1
        return False

    def strike(self) -> bool:
        """An offence; True once the peer has earned its drop."""
        self.strikes += 1
        return self.strikes > self.limits.max_strikes
