"""A set of integers kept as sorted, merged half-open ranges.

Used for ACK ranges, replay windows, received parts of a message and the
sequence numbers already delivered. Two parallel sorted lists (starts, stops)
make every lookup one ``bisect``; adding at the top end -- the common case for
packet numbers and in-order data -- is an append or an in-place extension.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from aetherflow_sdk._errors import LocalProtocolError


class RangeSet:
    """Integers as sorted, disjoint, non-touching half-open ``range`` objects."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[range] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for r in ranges:
            self.add(r.start, r.stop)

    def add(self, start: int, stop: int | None = None) -> int:
        """Add ``[start, stop)`` (or the single integer ``start``); return how many integers were new."""
        if stop is None:
            stop = start + 1
        elif stop <= start:
            if stop == start:
                return 0
            raise LocalProtocolError(f"RangeSet.add({start}, {stop}): stop is below start")
        starts = self._starts
        stops = self._stops
        # Fast paths: beyond or touching the top range (ACKs and in-order data).
        if not stops or start > stops[-1]:
            starts.append(start)
            stops.append(stop)
            return stop - start
        if start >= starts[-1]:
            top = stops[-1]
            if stop > top:
                stops[-1] = stop
                return stop - top
            return 0
        # General case: ranges i..j-1 touch or overlap [start, stop).
        i = bisect_left(stops, start)
        j = bisect_right(starts, stop)
        if i == j:
            starts.insert(i, start)
            stops.insert(i, stop)
            return stop - start
        covered = 0
        for k in range(i, j):
            covered += min(stops[k], stop) - max(starts[k], start)
        new_start = min(start, starts[i])
        new_stop = max(stop, stops[j - 1])
        starts[i:j] = [new_start]
        stops[i:j] = [new_stop]
        return (stop - start) - covered

    def subtract(self, start: int, stop: int) -> None:
        """Remove ``[start, stop)``."""
        if stop <= start:
            return
        starts = self._starts
        stops = self._stops
        i = bisect_right(stops, start)
        j = bisect_left(starts, stop)
        if i >= j:
            return
        new_starts: list[int] = []
        new_stops: list[int] = []
        if starts[i] < start:
            new_starts.append(starts[i])
            new_stops.append(start)
        if stops[j - 1] > stop:
            new_starts.append(stop)
            new_stops.append(stops[j - 1])
        starts[i:j] = new_starts
        stops[i:j] = new_stops

    def trim_below(self, value: int) -> None:
        """Drop every integer below ``value``."""
        stops = self._stops
        i = bisect_right(stops, value)
        if i:
            del self._starts[:i]
            del stops[:i]
        if self._starts and self._starts[0] < value:
            self._starts[0] = value

    def shift(self) -> range:
        """Remove and return the lowest range."""
        if not self._starts:
            raise LocalProtocolError("RangeSet.shift() on an empty set")
        return range(self._starts.pop(0), self._stops.pop(0))

    def bounds(self) -> range:
        """``range(lowest, highest + 1)``."""
        if not self._starts:
            raise LocalProtocolError("RangeSet.bounds() of an empty set")
        return range(self._starts[0], self._stops[-1])

    def first_gap(self, start: int, stop: int) -> range | None:
        """The lowest run of integers in ``[start, stop)`` that is NOT in the set, or None."""
        if stop <= start:
            return None
        starts = self._starts
        stops = self._stops
        i = bisect_right(starts, start) - 1
        if i >= 0 and start < stops[i]:
            start = stops[i]
            if start >= stop:
                return None
        # ``start`` is now outside the set; the gap ends at the next range's start.
        k = bisect_right(starts, start)
        end = starts[k] if k < len(starts) else stop
        return range(start, min(end, stop))

    def count(self) -> int:
        """Number of integers in the set (O(ranges))."""
        return sum(b - a for a, b in zip(self._starts, self._stops, strict=True))

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._stops[i]

    def __iter__(self) -> Iterator[range]:
        return map(range, self._starts, self._stops)

    def __reversed__(self) -> Iterator[range]:
        return map(range, reversed(self._starts), reversed(self._stops))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._stops == other._stops

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"range({a}, {b})" for a, b in zip(self._starts, self._stops, strict=True))
        return f"RangeSet([{inner}])"
