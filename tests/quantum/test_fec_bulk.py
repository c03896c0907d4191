"""FEC "auto" tells bulk from edits: parity backs off while the sender is window- or
pacing-limited, and stays for app-limited (interactive) traffic. Virtual clock and network."""

from __future__ import annotations

import random

import pytest

import aetherflow_sdk.quantum._fec_path as fec_path
from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._fec_path import BULK_HOLD_FRACTION, BULK_RUN, FecPath
from tests.quantum._vnet import LinkProfile, VirtualNetwork, send_and_collect
from tests.quantum.test_fec_connection import CountingLoss, _pair, _repair_ratio, _stream

SRTT = 0.040


def _lossy_path(mode: str) -> FecPath:
    """A FecPath whose policy has measured enough loss to protect."""
    path = FecPath(mode=mode, group_timeout_fraction=0.125)
    path.peer_can_decode = True
    for i in range(100):
        path.on_data_sent(1000, 1100, i * 0.01)
    path.on_packets_lost(5, 1.0)
    path.update(1.0)
    assert path.policy.enabled
    return path


def test_the_policy_backs_off_after_a_run_of_backlogged_packets_and_resumes_when_drained() -> None:
    path = _lossy_path("auto")
    now = 1.0
    assert path.sending
    for _ in range(BULK_RUN - 1):  # a paste of a few packets is still interactive
        now += 0.0005
        path.on_data_sent(1300, 1400, now, backlogged=True, smoothed_rtt=SRTT)
    assert path.sending and not path.bulk
    now += 0.0005
    path.on_data_sent(1300, 1400, now, backlogged=True, smoothed_rtt=SRTT)
    assert path.bulk and not path.sending and path.bulk_periods == 1
    # A momentary empty queue inside the transfer does not end it ...
    now += 0.001
    path.on_data_sent(1300, 1400, now, backlogged=False, smoothed_rtt=SRTT)
    path.update(now + 0.001)
    assert path.bulk
    # ... a queue empty for half an SRTT does: the next edit is protected from its first packet.
    path.update(now + BULK_HOLD_FRACTION * SRTT)
    assert not path.bulk and path.sending
    assert path.policy.enabled  # the loss was measured all along


def test_mode_on_protects_bulk_too_and_off_never_protects() -> None:
    on = _lossy_path("on")
    for i in range(3 * BULK_RUN):
        on.on_data_sent(1300, 1400, 1.0 + i * 0.0005, backlogged=True, smoothed_rtt=SRTT)
    assert on.bulk and on.sending
    off = FecPath(mode="off", group_timeout_fraction=0.125)
    off.peer_can_decode = True
    assert not off.sending


def _bulk(fec: str, seed: int, loss: float = 0.02) -> tuple[float, int, int, int, int]:
    """4 MB through 20 Mbit/s, 40 ms RTT: (seconds, wire bytes, parity packets, packets, bulk periods)."""
    counter = CountingLoss(random.Random(seed), loss)
    net = VirtualNetwork(seed, LinkProfile(delay=0.020, drop_if=counter, rate_bytes_per_s=2.5e6))
    pair = _pair(net, QuantumConfig(fec=fec))
    seconds = send_and_collect(net, pair, [bytes([i % 256]) * 20_000 for i in range(200)], max_time=120)
    stats = pair[2].statistics()
    return seconds, stats.bytes_sent, stats.parity_packets_sent, stats.packets_sent, pair[2]._fec.bulk_periods


def test_bulk_under_auto_sends_almost_no_parity_and_matches_fec_off() -> None:
    for seed in (11, 12):
        auto_time, auto_wire, parity, packets, periods = _bulk("auto", seed)
        off_time, off_wire, _, _, _ = _bulk("off", seed)
        on_time, on_wire, on_parity, _, _ = _bulk("on", seed)
        assert on_time > auto_time, f"seed={seed}"
        assert periods >= 1, f"seed={seed}"
        # Before the first groups of the transfer are counted as bulk some parity goes out; then none.
        assert parity <= 0.01 * packets, f"seed={seed}: {parity} parity packets of {packets}"
        assert on_parity > 10 * max(parity, 1), f"seed={seed}"
        # What parity cost bulk before: bytes and time. Now auto is within 2 % of "off".
        assert auto_wire <= 1.02 * off_wire, f"seed={seed}: {auto_wire} vs {off_wire}"
        assert auto_time <= 1.02 * off_time, f"seed={seed}: {auto_time:.3f}s vs {off_time:.3f}s"
        assert on_wire > 1.05 * off_wire, f"seed={seed}"  # the control: parity is bandwidth


def test_edits_stay_protected_and_are_again_after_a_transfer() -> None:
    seed = 2026
    ratio, recovered, dropped = _repair_ratio("stream", seed)
    assert dropped >= 20 and ratio >= 0.70, f"seed={seed}: {recovered}/{dropped} repaired"
    # One connection: a transfer, then a 50 msg/s edit stream at 2 % loss.
    counter = CountingLoss(random.Random(seed), 0.02)
    net = VirtualNetwork(seed, LinkProfile(delay=0.020, drop_if=counter, rate_bytes_per_s=2.5e6))
    pair = _pair(net, QuantumConfig(fec="auto"))
    send_and_collect(net, pair, [bytes([i % 256]) * 20_000 for i in range(100)], max_time=120)
    client, server = pair[2], pair[3]
    assert client._fec.bulk_periods >= 1
    parity_before = client.statistics().parity_packets_sent
    recovered_before = server.statistics().fec_recovered_packets
    dropped_before = counter.data_dropped
    _stream(net, pair, count=1500, size=200, interval=0.02)
    assert not client._fec.bulk
    assert client.statistics().parity_packets_sent - parity_before >= 1000, f"seed={seed}"
    recovered = server.statistics().fec_recovered_packets - recovered_before
    dropped = counter.data_dropped - dropped_before
    assert dropped >= 15 and recovered >= 0.7 * dropped, f"seed={seed}: {recovered}/{dropped}"


def _mixed(seed: int) -> tuple[int, int, int, int]:
    """10 MB queued at once and 200 edits at 50/s on one connection, 5 % loss:
    (parity packets, DATA packets, edits' repairs, bulk periods)."""
    counter = CountingLoss(random.Random(seed), 0.05)
    net = VirtualNetwork(seed, LinkProfile(delay=0.020, drop_if=counter, rate_bytes_per_s=2.5e6))
    pair = _pair(net, QuantumConfig(fec="auto"))
    _stream(net, pair, count=20, size=200, interval=0.02)  # the policy measures the loss first
    client, server = pair[2], pair[3]
    for i in range(500):
        client.send_message(bytes([i % 256]) * 20_000, ordered=False)
    before = server.statistics().fec_recovered_packets
    _stream(net, pair, count=200, size=200, interval=0.02)
    assert client._fec.bulk, f"seed={seed}: the transfer should still be running"
    stats = client.statistics()
    repaired = server.statistics().fec_recovered_packets - before
    return stats.parity_packets_sent, stats.packets_sent, repaired, client._fec.bulk_periods


def test_edits_sharing_a_connection_with_a_transfer_keep_parity(monkeypatch: pytest.MonkeyPatch) -> None:
    seed = 31
    parity, packets, repaired, periods = _mixed(seed)
    assert periods >= 1
    # Each edit's packet is protected, alone in its group; the transfer's packets are not.
    assert repaired >= 3, f"seed={seed}: {repaired} packets repaired"
    assert parity <= 0.08 * packets, f"seed={seed}: {parity} parity of {packets} packets"
    # The control: treat no message as small, and nothing of the edits is repaired while bulk.
    monkeypatch.setattr(fec_path, "SMALL_MESSAGE", 0)
    _, _, repaired_without, _ = _mixed(seed)
    assert repaired_without == 0, f"seed={seed}"
