"""The transition table: every allowed row works, every other pair raises the one clear error."""

from __future__ import annotations

import itertools

import pytest

from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk.session import TRANSITIONS, InvalidTransition, SessionState, Trigger
from aetherflow_sdk.session._state import transition

ALL_PAIRS = list(itertools.product(SessionState, Trigger))
ALLOWED = sorted(TRANSITIONS.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value))
DISALLOWED = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


@pytest.mark.parametrize(("pair", "expected"), ALLOWED, ids=lambda v: str(v))
def test_every_allowed_transition(pair: tuple[SessionState, Trigger], expected: SessionState) -> None:
    state, trigger = pair
    assert transition(state, trigger) is expected


@pytest.mark.parametrize("pair", DISALLOWED, ids=lambda p: f"{p[0].value}-{p[1].value}")
def test_every_disallowed_transition_raises_naming_state_and_event(
    pair: tuple[SessionState, Trigger],
) -> None:
    state, trigger = pair
    with pytest.raises(InvalidTransition) as info:
        transition(state, trigger)
    assert isinstance(info.value, LocalProtocolError)
    message = str(info.value)
    assert state.value.upper() in message
    assert repr(trigger.value) in message
    assert info.value.state is state and info.value.trigger is trigger


def test_table_shape() -> None:
    # CLOSED is terminal; every live state can be closed and can expire; only live states resume.
    assert not [pair for pair in TRANSITIONS if pair[0] is SessionState.CLOSED]
    for state in SessionState:
        if state is not SessionState.CLOSED:
            assert TRANSITIONS[(state, Trigger.CLOSE)] is SessionState.CLOSED
            assert TRANSITIONS[(state, Trigger.EXPIRE)] is SessionState.CLOSED
    assert (SessionState.CONNECTING, Trigger.RESUME) not in TRANSITIONS
    # Every state but CLOSED is reachable from CONNECTING.
    reached = {SessionState.CONNECTING}
    for _ in range(len(SessionState)):
        reached |= {new for (old, _t), new in TRANSITIONS.items() if old in reached}
    assert reached == set(SessionState)
