"""Token-bucket pacer on a virtual clock."""

from __future__ import annotations

import random

import pytest

from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk.quantum._pacer import Pacer

MDS = 1200


def test_unpaced_until_rate_set() -> None:
    pacer = Pacer(max_datagram_size=MDS)
    for _ in range(100):
        assert pacer.next_send_time(MDS, 0.0) is None
        pacer.on_packet_sent(MDS, 0.0)


def test_initial_burst_then_paced() -> None:
    pacer = Pacer(max_datagram_size=MDS, burst_packets=10)
    pacer.set_rate(MDS * 100)  # 100 packets/s
    for _ in range(10):
        assert pacer.next_send_time(MDS, 0.0) is None
        pacer.on_packet_sent(MDS, 0.0)
    t = pacer.next_send_time(MDS, 0.0)
    assert t == pytest.approx(0.01)
    assert pacer.next_send_time(MDS, 0.005) == pytest.approx(0.01)
    assert pacer.next_send_time(MDS, 0.01) is None


def test_tokens_capped_at_burst_after_idle() -> None:
    pacer = Pacer(max_datagram_size=MDS, burst_packets=4)
    pacer.set_rate(MDS * 100)
    pacer.on_packet_sent(MDS, 0.0)
    sent = 0
    while pacer.next_send_time(MDS, 100.0) is None and sent < 100:
        pacer.on_packet_sent(MDS, 100.0)
        sent += 1
    assert sent == 4


def test_bucket_holds_at_least_a_millisecond_at_high_rates() -> None:
    pacer = Pacer(max_datagram_size=MDS, burst_packets=10)
    pacer.set_rate(1e9)
    assert pacer.capacity == pytest.approx(1e6)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_rate_honoured_over_a_long_run(seed: int) -> None:
    rng = random.Random(seed)
    rate = rng.uniform(1e5, 5e7)
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(rate)
    now = 1000.0
    sent_bytes = 0
    start = now
    # Warm up past the initial burst, then measure.
    for i in range(20_000):
        size = rng.randint(100, MDS)
        t = pacer.next_send_time(size, now)
        if t is not None:
            assert t > now, f"seed={seed}"
            now = t + rng.uniform(0, 1e-5)  # the event loop wakes a little late
            assert pacer.next_send_time(size, now) is None, f"seed={seed}"
        pacer.on_packet_sent(size, now)
        if i == 1000:
            start, sent_bytes = now, 0
        else:
            sent_bytes += size
    measured = sent_bytes / (now - start)
    assert measured == pytest.approx(rate, rel=0.01), f"seed={seed}"


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        Pacer(max_datagram_size=0)
    with pytest.raises(LocalProtocolError):
        Pacer(max_datagram_size=MDS).set_rate(0.0)
