"""RFC 6298 RTO estimator: hand-computed values, backoff, clamping, Karn's rule."""

from __future__ import annotations

import pytest

from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk.quantum._rtt import RttEstimator


def make(**kw: float) -> RttEstimator:
    args = {"initial_rtt": 0.1, "min_rto": 0.2, "max_rto": 60.0}
    args.update(kw)
    return RttEstimator(**args)


def test_before_any_sample() -> None:
    rtt = make(initial_rtt=0.5)
    assert not rtt.has_sample
    assert (rtt.latest_rtt, rtt.smoothed_rtt, rtt.rttvar, rtt.min_rtt) == (0.5, 0.5, 0.25, 0.5)
    assert rtt.rto == pytest.approx(0.5 + 4 * 0.25)
    assert rtt.backoff == 0


def test_scripted_samples_match_hand_computation() -> None:
    rtt = make(min_rto=0.001)
    # Sample 1: SRTT = R = 0.100, RTTVAR = R/2 = 0.050 (RFC 6298 §2.2).
    rtt.on_sample(0.100)
    assert rtt.smoothed_rtt == pytest.approx(0.100)
    assert rtt.rttvar == pytest.approx(0.050)
    assert rtt.rto == pytest.approx(0.100 + 4 * 0.050)  # 0.300
    # Sample 2 (0.120): RTTVAR = 3/4*0.050 + 1/4*|0.100-0.120| = 0.0425;
    # SRTT = 7/8*0.100 + 1/8*0.120 = 0.1025.
    rtt.on_sample(0.120)
    assert rtt.rttvar == pytest.approx(0.0425)
    assert rtt.smoothed_rtt == pytest.approx(0.1025)
    assert rtt.rto == pytest.approx(0.1025 + 0.17)
    # Sample 3 (0.080): RTTVAR = 0.75*0.0425 + 0.25*0.0225 = 0.0375; SRTT = 0.0996875.
    rtt.on_sample(0.080)
    assert rtt.rttvar == pytest.approx(0.0375)
    assert rtt.smoothed_rtt == pytest.approx(0.0996875)
    assert rtt.min_rtt == pytest.approx(0.080)
    # Sample 4 (0.300): RTTVAR = 0.75*0.0375 + 0.25*0.2003125 = 0.078203125;
    # SRTT = 0.875*0.0996875 + 0.125*0.3 = 0.124726563.
    rtt.on_sample(0.300)
    assert rtt.rttvar == pytest.approx(0.078203125)
    assert rtt.smoothed_rtt == pytest.approx(0.1247265625)
    assert rtt.latest_rtt == 0.300
    assert rtt.min_rtt == pytest.approx(0.080)
    assert rtt.rto == pytest.approx(0.1247265625 + 4 * 0.078203125)


def test_ack_delay_subtracted_only_above_min_rtt() -> None:
    rtt = make()
    rtt.on_sample(0.100, ack_delay=0.050)  # first sample: ack delay has no effect
    assert rtt.smoothed_rtt == pytest.approx(0.100)
    rtt.on_sample(0.130, ack_delay=0.020)  # 0.110 >= min_rtt 0.100: adjusted
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)
    before = rtt.smoothed_rtt
    rtt.on_sample(0.105, ack_delay=0.020)  # 0.085 < min_rtt: not adjusted
    assert rtt.smoothed_rtt == pytest.approx(0.875 * before + 0.125 * 0.105)


def test_ack_delay_capped_by_max_ack_delay() -> None:
    rtt = make(max_ack_delay=0.010)
    rtt.on_sample(0.050)
    rtt.on_sample(0.100, ack_delay=0.040)  # counted as 0.010: adjusted sample 0.090
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.050 + 0.125 * 0.090)
    rtt.max_ack_delay = None
    assert rtt.max_ack_delay is None
    before = rtt.smoothed_rtt
    rtt.on_sample(0.100, ack_delay=0.040)  # uncapped now: adjusted sample 0.060
    assert rtt.smoothed_rtt == pytest.approx(0.875 * before + 0.125 * 0.060)


def test_non_positive_samples_ignored() -> None:
    rtt = make()
    rtt.on_sample(0.0)
    rtt.on_sample(-1.0)
    assert not rtt.has_sample
    assert rtt.smoothed_rtt == 0.1


def test_clamped_to_min_and_max() -> None:
    rtt = make(min_rto=0.2, max_rto=1.0)
    rtt.on_sample(0.001)
    assert rtt.rto == 0.2
    rtt2 = make(min_rto=0.2, max_rto=1.0)
    rtt2.on_sample(5.0)
    assert rtt2.rto == 1.0


def test_granularity_floor() -> None:
    rtt = make(min_rto=0.0001, granularity=0.01)
    for _ in range(200):
        rtt.on_sample(0.05)
    assert rtt.rttvar < 0.0025
    assert rtt.rto == pytest.approx(0.05 + 0.01)


def test_backoff_doubles_and_is_bounded_by_max_rto() -> None:
    rtt = make(min_rto=0.2, max_rto=3.0)
    rtt.on_sample(0.05)  # base RTO = 0.05 + 0.1 = 0.15 -> floor 0.2
    expected = [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    seen = []
    for _ in expected:
        seen.append(rtt.rto)
        rtt.on_timeout()
    assert seen == pytest.approx(expected)
    assert rtt.backoff == 4  # stopped growing once the RTO reached max_rto
    for _ in range(1000):
        rtt.on_timeout()
    assert rtt.rto == 3.0


def test_karn_backed_off_rto_persists_until_a_new_sample() -> None:
    rtt = make(min_rto=0.2, max_rto=60.0)
    rtt.on_sample(0.1)
    base = rtt.rto
    rtt.on_timeout()
    rtt.on_timeout()
    assert rtt.rto == pytest.approx(4 * base)
    # Nothing but time passing (or further timeouts) changes it: it stays backed off.
    assert rtt.rto == pytest.approx(4 * base)
    # A non-positive (invalid) sample does not end the backoff.
    rtt.on_sample(0.0)
    assert rtt.backoff == 2
    # A valid sample (from the exact packet acked) ends the backoff (RFC 6298 §5.7).
    rtt.on_sample(0.1)
    assert rtt.backoff == 0
    assert rtt.rto < 2 * base


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        RttEstimator(initial_rtt=0.1, min_rto=2.0, max_rto=1.0)
    with pytest.raises(LocalProtocolError):
        RttEstimator(initial_rtt=0.0, min_rto=0.2, max_rto=1.0)
