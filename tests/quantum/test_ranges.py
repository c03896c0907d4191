"""RangeSet against a Python set model (hypothesis), plus edge cases."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk.quantum._ranges import RangeSet


def as_set(rs: RangeSet) -> set[int]:
    out: set[int] = set()
    for r in rs:
        out.update(r)
    return out


def check_invariants(rs: RangeSet) -> None:
    ranges = list(rs)
    for r in ranges:
        assert r.start < r.stop
    for a, b in itertools.pairwise(ranges):
        assert a.stop < b.start, f"not merged/sorted: {ranges}"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-20, 200), st.integers(0, 30)),
        st.tuples(st.just("add1"), st.integers(-20, 200), st.just(0)),
        st.tuples(st.just("sub"), st.integers(-20, 200), st.integers(0, 30)),
        st.tuples(st.just("trim"), st.integers(-20, 200), st.just(0)),
        st.tuples(st.just("shift"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_set_model(operations: list[tuple[str, int, int]]) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for op, a, n in operations:
        if op == "add":
            before = len(model)
            model.update(range(a, a + n))
            assert rs.add(a, a + n) == len(model) - before
        elif op == "add1":
            before = len(model)
            model.add(a)
            assert rs.add(a) == len(model) - before
        elif op == "sub":
            model.difference_update(range(a, a + n))
            rs.subtract(a, a + n)
        elif op == "trim":
            model = {x for x in model if x >= a}
            rs.trim_below(a)
        elif op == "shift" and model:
            r = rs.shift()
            assert r.start == min(model)
            model.difference_update(r)
        check_invariants(rs)
        assert as_set(rs) == model
        assert bool(rs) == bool(model)
        assert rs.count() == len(model)
        if model:
            assert rs.bounds() == range(min(model), max(model) + 1)
    for x in range(-25, 240):
        assert (x in rs) == (x in model)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 100)), st.integers(0, 110), st.integers(0, 20))
def test_first_gap(members: set[int], start: int, n: int) -> None:
    rs = RangeSet()
    for x in members:
        rs.add(x)
    stop = start + n
    missing = [x for x in range(start, stop) if x not in members]
    gap = rs.first_gap(start, stop)
    if not missing:
        assert gap is None
    else:
        assert gap is not None
        assert gap.start == missing[0]
        assert all(x not in members for x in gap)
        assert gap.stop == stop or gap.stop in members


def test_basic_behaviour() -> None:
    rs = RangeSet()
    assert not rs and len(rs) == 0
    rs.add(5)
    rs.add(7)
    rs.add(6)
    assert list(rs) == [range(5, 8)]
    rs.add(0, 2)
    assert list(rs) == [range(0, 2), range(5, 8)]
    assert list(reversed(rs)) == [range(5, 8), range(0, 2)]
    assert len(rs) == 2
    assert 1 in rs and 2 not in rs and "x" not in rs
    assert rs.add(3, 3) == 0
    assert rs == RangeSet([range(0, 2), range(5, 8)])
    assert repr(rs) == "RangeSet([range(0, 2), range(5, 8)])"


def test_misuse() -> None:
    rs = RangeSet()
    with pytest.raises(LocalProtocolError):
        rs.shift()
    with pytest.raises(LocalProtocolError):
        rs.bounds()
    with pytest.raises(LocalProtocolError):
        rs.add(5, 3)
