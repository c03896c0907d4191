"""UUIDv7 (RFC 9562 §5.7): a 48-bit Unix-millisecond timestamp, then randomness.

Connection and session IDs are UUIDv7 so that they sort by creation time and
index well. IDs made within one millisecond by one generator stay monotonic:
the 12-bit ``rand_a`` field is a counter seeded at random each millisecond
(RFC 9562 §6.2, method 1, "fixed-length dedicated counter").
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

_VERSION = 0x7
_VARIANT = 0b10  # RFC 9562 §4.1


class UUID7Generator:
    """Makes monotonic UUIDv7 values. ``clock_ms`` and ``random_bytes`` are injectable for tests."""

    def __init__(
        self,
        clock_ms: Callable[[], int] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._random_bytes = random_bytes
        self._last_ms = -1
        self._counter = 0
        self._lock = threading.Lock()

    def __call__(self) -> uuid.UUID:
        with self._lock:
            unix_ms = self._clock_ms()
            if unix_ms <= self._last_ms:
                # Same (or earlier, if the wall clock stepped back) millisecond:
                # keep the last timestamp and bump the counter so IDs still sort.
                unix_ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    unix_ms += 1
                    self._counter = int.from_bytes(self._random_bytes(2), "big") & 0x7FF
            else:
                # Seed below 0x800 so a burst has room to count up (RFC 9562 §6.2).
                self._counter = int.from_bytes(self._random_bytes(2), "big") & 0x7FF
            self._last_ms = unix_ms
            rand_b = int.from_bytes(self._random_bytes(8), "big") & ((1 << 62) - 1)
            value = (unix_ms & ((1 << 48) - 1)) << 80
            value |= _VERSION << 76
            value |= self._counter << 64
            value |= _VARIANT << 62
            value |= rand_b
            return uuid.UUID(int=value)


uuid7 = UUID7Generator()
"""The process-wide generator: ``uuid7()`` returns a new :class:`uuid.UUID`."""


def uuid7_unix_ms(value: uuid.UUID) -> int:
    """The creation time (Unix milliseconds) stored in a UUIDv7."""
    if value.version != _VERSION:
        raise ValueError(f"{value} is a UUID version {value.version}, not 7")
    return value.int >> 80
