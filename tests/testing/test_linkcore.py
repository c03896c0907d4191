"""The link emulator's sans-I/O core on a virtual clock: delay, loss, rate, queue, jitter."""

from __future__ import annotations

import math

import attrs
import pytest

from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk.testing import LinkConfig, LinkDirection


def packet(index: int, size: int = 100) -> bytes:
    return index.to_bytes(4, "big") + bytes(size - 4)


def run_until_empty(direction: LinkDirection) -> list[tuple[float, bytes]]:
    """Advance the virtual clock deadline by deadline; returns (time, packet) pairs."""
    delivered: list[tuple[float, bytes]] = []
    while (deadline := direction.next_deadline()) is not None:
        delivered.extend((deadline, p) for p in direction.pop_due(deadline))
    return delivered


def test_delay_holds_packet_exactly_that_long() -> None:
    direction = LinkDirection(LinkConfig(delay=0.020), seed=1)
    assert direction.offer(packet(0), now=5.0)
    assert direction.next_deadline() == pytest.approx(5.020)
    assert direction.pop_due(5.0199) == []
    assert direction.pop_due(5.020) == [packet(0)]
    assert direction.next_deadline() is None
    stats = direction.statistics()
    assert (stats.offered, stats.forwarded, stats.in_flight) == (1, 1, 0)
    assert stats.forwarded_bytes == stats.offered_bytes == 100


def test_without_jitter_order_is_preserved() -> None:
    direction = LinkDirection(LinkConfig(delay=0.010, rate_bps=10e6), seed=1)
    for i in range(200):
        direction.offer(packet(i), now=i * 0.0001)
    delivered = [p for _, p in run_until_empty(direction)]
    assert delivered == [packet(i) for i in range(200)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeded_loss_rate_and_repeatability(seed: int) -> None:
    loss, count = 0.05, 20_000
    config = LinkConfig(loss=loss)
    first, second = LinkDirection(config, seed=seed), LinkDirection(config, seed=seed)
    fates_first = [first.offer(packet(i), now=i * 1e-3) for i in range(count)]
    fates_second = [second.offer(packet(i), now=i * 1e-3) for i in range(count)]
    assert fates_first == fates_second, f"seed {seed}: same seed must drop the same packets"
    dropped = first.statistics().dropped_loss
    sigma = math.sqrt(count * loss * (1 - loss))
    assert abs(dropped - count * loss) < 5 * sigma, f"seed {seed}: {dropped} drops of {count}"
    assert dropped == fates_first.count(False)
    other = LinkDirection(config, seed=seed + 100)
    assert [other.offer(packet(i), now=0.0) for i in range(count)] != fates_first


def test_rate_limit_serialises_back_to_back_packets() -> None:
    # 1250 bytes at 1 Mbit/s take 10 ms each.
    direction = LinkDirection(LinkConfig(rate_bps=1e6, delay=0.005, queue_packets=100), seed=1)
    for i in range(5):
        assert direction.offer(packet(i, 1250), now=0.0)
    times = [t for t, _ in run_until_empty(direction)]
    assert times == pytest.approx([0.015, 0.025, 0.035, 0.045, 0.055])


def test_rate_limit_idle_link_does_not_bank_credit() -> None:
    direction = LinkDirection(LinkConfig(rate_bps=1e6), seed=1)
    direction.offer(packet(0, 1250), now=0.0)
    direction.pop_due(1.0)
    direction.offer(packet(1, 1250), now=1.0)
    direction.offer(packet(2, 1250), now=1.0)
    assert [t for t, _ in run_until_empty(direction)] == pytest.approx([1.010, 1.020])


def test_drop_tail_queue_drops_what_does_not_fit_and_recovers() -> None:
    direction = LinkDirection(LinkConfig(rate_bps=1e6, queue_packets=3), seed=1)
    fates = [direction.offer(packet(i, 1250), now=0.0) for i in range(10)]
    assert fates == [True] * 3 + [False] * 7
    assert direction.statistics().dropped_queue == 7
    # After one packet has been serialised (10 ms) exactly one slot is free.
    assert direction.offer(packet(10, 1250), now=0.010)
    assert not direction.offer(packet(11, 1250), now=0.010)
    delivered = [p for _, p in run_until_empty(direction)]
    assert delivered == [packet(0, 1250), packet(1, 1250), packet(2, 1250), packet(10, 1250)]
    stats = direction.statistics()
    assert (stats.offered, stats.forwarded, stats.dropped_queue, stats.dropped_loss) == (12, 4, 8, 0)


def test_steady_rate_through_bottleneck_matches_configured_rate() -> None:
    rate = 20e6
    direction = LinkDirection(LinkConfig(rate_bps=rate, queue_packets=50), seed=1)
    delivered_bytes, now = 0, 0.0
    # Offer twice the link rate for one virtual second; the surplus is dropped.
    while now < 1.0:
        direction.offer(packet(0, 1500), now=now)
        delivered_bytes += sum(len(p) for p in direction.pop_due(now))
        now += 1500 * 8 / (2 * rate)
    assert delivered_bytes * 8 == pytest.approx(rate, rel=0.01)
    assert direction.statistics().dropped_queue > 0


def test_jitter_reorders_but_delivers_everything_within_bounds() -> None:
    direction = LinkDirection(LinkConfig(delay=0.020, jitter=0.010), seed=7)
    for i in range(500):
        direction.offer(packet(i), now=i * 0.001)
    delivered = run_until_empty(direction)
    order = [int.from_bytes(p[:4], "big") for _, p in delivered]
    assert sorted(order) == list(range(500))
    assert order != list(range(500)), "10 ms of jitter on 1 ms spacing must reorder"
    for deliver_at, p in delivered:
        sent_at = int.from_bytes(p[:4], "big") * 0.001
        assert 0.020 <= deliver_at - sent_at <= 0.030 + 1e-9


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(LocalProtocolError, match="loss"):
        LinkConfig(loss=1.0)
    with pytest.raises(LocalProtocolError, match="delay"):
        LinkConfig(delay=-0.001)
    with pytest.raises(LocalProtocolError, match="rate"):
        LinkConfig(rate_bps=0)
    with pytest.raises(LocalProtocolError, match="queue"):
        LinkConfig(queue_packets=0)


def test_statistics_are_frozen() -> None:
    stats = LinkDirection(LinkConfig(), seed=1).statistics()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.forwarded = 3  # type: ignore[misc]
