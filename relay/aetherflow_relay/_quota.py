"""A token bucket on a clock it is given (sans-I/O)."""

from __future__ import annotations

import math


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full.

    One token is one byte (data) or one message (control). :meth:`take` spends tokens if
    there are enough; :meth:`ready_at` says when there will be.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens at ``now``; False (nothing spent) if there are fewer."""
        self._refill(now)
        # The tolerance absorbs float rounding, so a take at exactly ready_time() succeeds.
        if amount > self._tokens + 1e-6:
            return False
        self._tokens = max(self._tokens - amount, 0.0)
        return True

    def ready_time(self, amount: float) -> float:
        """The earliest time ``take(amount)`` can succeed (inf if ``amount`` exceeds the burst)."""
        if amount > self.burst:
            return math.inf
        missing = amount - self._tokens
        return self._stamp if missing <= 0 else self._stamp + missing / self.rate
