"""NewReno (RFC 9002 §7) on a virtual clock."""

from __future__ import annotations

import pytest

from aetherflow_sdk.quantum import _congestion
from aetherflow_sdk.quantum._congestion import PacketInfo
from aetherflow_sdk.quantum._newreno import NewReno
from aetherflow_sdk.quantum._rtt import RttEstimator

MDS = 1000


def pkt(pn: int, t: float, size: int = MDS) -> PacketInfo:
    return PacketInfo(packet_number=pn, size=size, time_sent=t)


def rtt_at(value: float) -> RttEstimator:
    rtt = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=60)
    rtt.on_sample(value)
    return rtt


def test_registered_and_satisfies_protocol() -> None:
    cc = _congestion.create("newreno", MDS, 10)
    assert isinstance(cc, NewReno)
    assert cc.name == "newreno"
    assert cc.congestion_window == 10 * MDS
    assert cc.state_name() == "slow_start"


def test_slow_start_grows_by_bytes_acked() -> None:
    cc = NewReno(MDS, 10)
    rtt = rtt_at(0.05)
    for i in range(10):
        cc.on_packet_sent(pkt(i, 0.0), (i + 1) * MDS, 0.0)
    cc.on_packets_acked([pkt(i, 0.0) for i in range(10)], rtt, 0, 0.05)
    assert cc.congestion_window == 20 * MDS


def test_loss_halves_once_per_recovery_period() -> None:
    cc = NewReno(MDS, 10)
    rtt = rtt_at(0.05)
    for i in range(10):
        cc.on_packet_sent(pkt(i, 0.0), (i + 1) * MDS, 0.0)
    cc.on_packets_lost([pkt(0, 0.0)], 9 * MDS, 0.1)
    assert cc.congestion_window == 5 * MDS
    assert cc.ssthresh == 5 * MDS
    assert cc.state_name() == "recovery"
    # More losses of packets sent before the period began: no further reduction.
    cc.on_packets_lost([pkt(1, 0.0), pkt(2, 0.0)], 7 * MDS, 0.11)
    assert cc.congestion_window == 5 * MDS
    # Acks of packets sent before the period do not grow the window.
    cc.on_packets_acked([pkt(3, 0.0)], rtt, 6 * MDS, 0.12)
    assert cc.congestion_window == 5 * MDS
    # A packet sent after the period began ends recovery and grows (congestion avoidance).
    cc.on_packet_sent(pkt(10, 0.2), 6 * MDS, 0.2)
    cc.on_packets_acked([pkt(10, 0.2)], rtt, 5 * MDS, 0.25)
    assert cc.state_name() == "congestion_avoidance"
    # A new loss of a packet sent after the period began reduces again.
    cc.on_packets_lost([pkt(11, 0.2)], 4 * MDS, 0.3)
    assert cc.congestion_window == int(2.5 * MDS)
    assert cc.congestion_events == 2


def test_congestion_avoidance_one_datagram_per_window() -> None:
    cc = NewReno(MDS, 10)
    rtt = rtt_at(0.05)
    cc.on_packets_lost([pkt(0, 0.0)], 0, 0.01)  # cwnd = ssthresh = 5000
    assert cc.congestion_window == 5 * MDS
    acked = [pkt(i, 0.02) for i in range(1, 6)]  # one window of bytes, sent after recovery start
    for i, p in enumerate(acked):
        cc.on_packet_sent(p, 5 * MDS, 0.02 + i * 1e-3)
    cc.on_packets_acked(acked[:4], rtt, 1000, 0.07)
    assert cc.congestion_window == 5 * MDS
    cc.on_packets_acked(acked[4:], rtt, 0, 0.07)
    assert cc.congestion_window == 6 * MDS


def test_minimum_window_and_rto_collapse() -> None:
    cc = NewReno(MDS, 3)
    cc.on_packets_lost([pkt(0, 0.0)], 0, 0.1)
    assert cc.congestion_window == 2 * MDS  # 1.5 packets -> floored at the 2-packet minimum
    cc2 = NewReno(MDS, 10)
    cc2.on_retransmission_timeout(1.0)
    assert cc2.congestion_window == 2 * MDS
    assert cc2.ssthresh == 5 * MDS
    assert cc2.state_name() == "recovery"
    # Losses of packets sent before the RTO do not reduce further.
    cc2.on_packets_lost([pkt(5, 0.5)], 0, 1.01)
    assert cc2.congestion_window == 2 * MDS


def test_app_limited_does_not_grow() -> None:
    cc = NewReno(MDS, 10)
    rtt = rtt_at(0.05)
    cc.on_packet_sent(pkt(0, 0.0), MDS, 0.0)
    cc.on_app_limited(MDS, 0.0)
    assert cc.app_limited and cc.state_name().endswith("+app_limited")
    cc.on_packets_acked([pkt(0, 0.0)], rtt, 0, 0.05)
    assert cc.congestion_window == 10 * MDS
    # Filling the window ends the app-limited spell.
    for i in range(1, 11):
        cc.on_packet_sent(pkt(i, 0.1), i * MDS, 0.1)
    assert not cc.app_limited
    cc.on_packets_acked([pkt(1, 0.1)], rtt, 9 * MDS, 0.15)
    assert cc.congestion_window == 11 * MDS


def test_app_limited_ignored_when_window_is_full() -> None:
    cc = NewReno(MDS, 10)
    cc.on_app_limited(10 * MDS, 0.0)
    assert not cc.app_limited


def test_pacing_rate() -> None:
    cc = NewReno(MDS, 10)
    assert cc.pacing_rate == pytest.approx(1.25 * 10 * MDS / 0.1)  # before any RTT: 0.1 s
    cc.on_packets_acked([pkt(0, 0.0)], rtt_at(0.02), 0, 0.02)
    assert cc.pacing_rate == pytest.approx(1.25 * 11 * MDS / 0.02)
