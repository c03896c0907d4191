"""Tail-loss probes on the virtual network (RFC 8985 §7): a lost tail is found without an RTO."""

from __future__ import annotations

import attrs

from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._stats import ConnectionStatistics
from aetherflow_sdk.quantum._wire import PacketType, parse_header_untrusted
from tests.quantum._vnet import LinkProfile, VirtualNetwork, send_and_collect
from tests.quantum.test_connection_virtual import A, _pair


@attrs.define
class DropNth:
    """Once armed, drop the client's ``n``-th full-size DATA packet (the tail of a burst)."""

    n: int
    armed: bool = False
    seen: int = 0

    def __call__(self, data: bytes, source: object, destination: object) -> bool:
        if not self.armed or source != A or len(data) < 1000:
            return False
        if parse_header_untrusted(data).packet_type is not PacketType.DATA:
            return False
        self.seen += 1
        return self.seen == self.n


def _lose_the_tail(probes: int) -> tuple[float, ConnectionStatistics, QuantumConfig]:
    drop = DropNth(5)
    net = VirtualNetwork(31, LinkProfile(delay=0.020, drop_if=drop))
    config = QuantumConfig(tail_loss_probes=probes)
    pair = client_ep, _server_ep, client, server = _pair(net, config)
    for i in range(10):  # a few round trips first, so that SRTT and RTTVAR have settled
        client.send_message(b"%d" % i * 2000)
        client_ep.mark_dirty(client)
        net.run_until(lambda: server.receive_message() is not None, max_time=5)
    net.run_until(lambda: client.statistics().bytes_in_flight == 0, max_time=5)
    drop.armed = True
    payloads = [bytes([i]) * 1300 for i in range(5)]  # one packet each; the 5th is lost
    took = send_and_collect(net, pair, payloads)
    assert drop.seen >= 5
    return took, client.statistics(), config


def test_a_lost_tail_is_repaired_by_a_probe_not_an_rto() -> None:
    took, stats, config = _lose_the_tail(probes=2)
    # The control: the same tail without probes waits for the RTO and collapses the window.
    took_rto, stats_rto, _ = _lose_the_tail(probes=0)
    assert stats_rto.rto_count == 1 and stats_rto.tail_loss_probes == 0
    assert stats.rto_count == 0 and stats.tail_loss_probes == 1, stats
    assert took < took_rto and took < config.min_rto, (took, took_rto)
    assert stats.congestion_window > stats_rto.congestion_window
