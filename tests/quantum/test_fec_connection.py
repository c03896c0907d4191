"""FEC 10+3 inside a live connection, on the virtual network and clock (issue 3).

Every random choice takes a seed, and a failure message names it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import attrs
import pytest

from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._wire import HeaderFlags, PacketType, parse_header_untrusted
from tests.quantum._vnet import LinkProfile, Pair, VirtualNetwork, send_and_collect
from tests.quantum.test_connection_virtual import A, B


@attrs.define
class GroupDropper:
    """Once armed, drop chosen shards (0..9 data, 10..12 parity) of the client's next FEC group."""

    shards: frozenset[int]
    armed: bool = False
    group: int | None = None
    dropped: list[tuple[int, int]] = attrs.field(factory=list)  # (fec_index, packet number)
    corrupt_parity: Callable[[bytes], bytes] | None = None
    net: VirtualNetwork | None = None

    def __call__(self, data: bytes, source: object, destination: object) -> bool:
        if not self.armed or source != A:
            return False
        header = parse_header_untrusted(data)
        protected = header.packet_type is PacketType.DATA and header.flags & HeaderFlags.FEC_PROTECTED
        if not protected and header.packet_type is not PacketType.PARITY:
            return False
        if self.group is None and protected:
            self.group = header.fec_group
        if header.fec_group != self.group:
            return False
        if header.packet_type is PacketType.PARITY and self.corrupt_parity is not None:
            assert self.net is not None
            self.net.inject(self.corrupt_parity(data), A, B, at=self.net.now + self.net.profile.delay)
            self.dropped.append((header.fec_index, header.packet_number))
            return True
        if header.fec_index in self.shards:
            self.dropped.append((header.fec_index, header.packet_number))
            return True
        return False


def _pair(net: VirtualNetwork, config: QuantumConfig, server_config: QuantumConfig | None = None) -> Pair:
    client_ep = net.add_endpoint(A, config=config)
    server_ep = net.add_endpoint(B, config=server_config or config)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    return client_ep, server_ep, client, server_ep.accepted.popleft()


def _warm_up(net: VirtualNetwork, pair: Pair) -> None:
    """Round trips until SRTT has settled, then wait until nothing is in flight or in a group."""
    client_ep, _server_ep, client, server = pair
    for i in range(10):
        client.send_message(b"%d" % i * 2000)
        client_ep.mark_dirty(client)
        net.run_until(lambda: server.receive_message() is not None, max_time=5)
    net.run_until(
        lambda: client.statistics().bytes_in_flight == 0 and client._fec.get_timer() is None, max_time=5
    )


ALWAYS = QuantumConfig(fec="on")
THREE_OF_THIRTEEN = [frozenset(c) for c in itertools.combinations(range(13), 3)]


@pytest.mark.parametrize(
    "lost",
    [THREE_OF_THIRTEEN[i] for i in random.Random(3).sample(range(len(THREE_OF_THIRTEEN)), 12)],
    ids=str,
)
def test_any_three_of_thirteen_lost_are_repaired_without_retransmission(lost: frozenset[int]) -> None:
    dropper = GroupDropper(lost)
    net = VirtualNetwork(41, LinkProfile(delay=0.020, drop_if=dropper))
    pair = _pair(net, ALWAYS)
    _warm_up(net, pair)
    _client_ep, _server_ep, client, server = pair
    before = client.statistics()
    dropper.armed = True
    payloads = [bytes([i]) * 1300 for i in range(10)]  # one full group: 10 data packets
    send_and_collect(net, pair, payloads)
    after = client.statistics()
    data_lost = sum(1 for index, _ in dropper.dropped if index < 10)
    assert len(dropper.dropped) == 3
    assert after.packets_retransmitted == before.packets_retransmitted, "a repaired packet was resent"
    assert after.rto_count == 0 and after.tail_loss_probes == before.tail_loss_probes
    assert server.statistics().fec_recovered_packets == data_lost
    net.run_until(lambda: client.statistics().fec_peer_recovered_packets == data_lost, max_time=2)


def test_four_lost_fall_back_to_ordinary_loss_recovery() -> None:
    dropper = GroupDropper(frozenset({0, 3, 6, 9}))
    net = VirtualNetwork(42, LinkProfile(delay=0.020, drop_if=dropper))
    pair = _pair(net, ALWAYS)
    _warm_up(net, pair)
    _client_ep, _server_ep, client, server = pair
    before = client.statistics().packets_retransmitted
    dropper.armed = True
    send_and_collect(net, pair, [bytes([i]) * 1300 for i in range(10)])
    assert len(dropper.dropped) == 4
    assert server.statistics().fec_recovered_packets == 0
    assert client.statistics().packets_retransmitted - before >= 4
    assert client.statistics().rto_count == 0  # RACK found them once the parity was acknowledged


def test_the_group_timer_protects_a_single_edit() -> None:
    """One 200 B edit alone, lost: its parity leaves srtt/4 later and repairs it, no retransmit."""
    dropper = GroupDropper(frozenset({0}))
    net = VirtualNetwork(43, LinkProfile(delay=0.020, drop_if=dropper))
    pair = _pair(net, ALWAYS)
    _warm_up(net, pair)
    _client_ep, _server_ep, client, server = pair
    before = client.statistics()
    dropper.armed = True
    took = send_and_collect(net, pair, [b"e" * 200])
    after = client.statistics()
    assert dropper.dropped and dropper.dropped[0][0] == 0
    assert server.statistics().fec_recovered_packets == 1
    assert after.packets_retransmitted == before.packets_retransmitted
    assert after.parity_packets_sent == before.parity_packets_sent + 1  # k=1 -> one parity
    assert server.statistics().parity_packets_received == after.parity_packets_sent
    # The parity left about srtt/4 after the edit, and took one one-way delay: no round trip.
    bound = before.smoothed_rtt / 4 + net.profile.delay + 0.005
    assert took <= bound, f"took {took * 1000:.1f} ms, bound {bound * 1000:.1f} ms"


def _flip_a_ciphertext_byte(data: bytes) -> bytes:
    mutable = bytearray(data)
    mutable[-20] ^= 0x40
    return bytes(mutable)


def _flip_the_fec_index(data: bytes) -> bytes:
    header = parse_header_untrusted(data)
    forged = attrs.evolve(header, fec_index=header.fec_index ^ 1).pack()
    return forged + data[len(forged) :]


@pytest.mark.parametrize("corrupt", [_flip_a_ciphertext_byte, _flip_the_fec_index])
def test_corrupt_parity_is_rejected_by_the_aead_before_any_decode(corrupt: Callable[[bytes], bytes]) -> None:
    dropper = GroupDropper(frozenset({0}), corrupt_parity=corrupt)
    net = VirtualNetwork(44, LinkProfile(delay=0.020, drop_if=dropper))
    dropper.net = net
    pair = _pair(net, ALWAYS)
    _warm_up(net, pair)
    _client_ep, _server_ep, client, server = pair
    decoder = server._fec.decoder
    assert decoder is not None
    seen: list[int] = []
    real_on_parity = decoder.on_parity

    def spy(group_id: int, index: int, payload: bytes, now: float) -> list[object]:
        seen.append(group_id)
        return real_on_parity(group_id, index, payload, now)  # type: ignore[return-value]

    decoder.on_parity = spy  # type: ignore[method-assign]
    bad_before = server.statistics().bad_packets
    before = client.statistics()
    dropper.armed = True
    send_and_collect(net, pair, [b"e" * 200])
    assert [i for i, _ in dropper.dropped] == [0, 10]  # the edit lost, its parity corrupted
    assert server.statistics().bad_packets == bad_before + 1
    assert dropper.group not in seen, "the decoder saw the corrupt parity"
    assert server.statistics().fec_recovered_packets == 0
    after = client.statistics()  # ordinary recovery resent the edit (a tail-loss probe or after a loss)
    assert (after.packets_retransmitted, after.tail_loss_probes) != (
        before.packets_retransmitted,
        before.tail_loss_probes,
    )


def _stream(net: VirtualNetwork, pair: Pair, count: int, size: int, interval: float) -> None:
    client_ep, server_ep, client, server = pair
    start = net.now
    sent = 0
    received = 0

    def pump() -> bool:
        nonlocal sent, received
        while sent < count and net.now >= start + sent * interval:
            client.send_message(sent.to_bytes(4, "big") + bytes(size - 4), ordered=False)
            sent += 1
        client_ep.mark_dirty(client)
        while server.receive_message() is not None:
            received += 1
            server_ep.mark_dirty(server)
        return received == count

    # The stream's own clock: wake the network at each send time.
    ticker = net.add_endpoint(("10.9.9.9", 1), accept=False)
    ticker.get_timer = lambda: start + sent * interval if sent < count else None  # type: ignore[method-assign]
    net.run_until(pump, max_time=count * interval + 30)
    del net.endpoints[("10.9.9.9", 1)]


def test_auto_keeps_fec_off_on_a_clean_path_and_turns_it_on_under_loss() -> None:
    for loss, expect in ((0.0, False), (0.05, True)):
        net = VirtualNetwork(45, LinkProfile(delay=0.020, loss=loss))
        pair = _pair(net, QuantumConfig(fec="auto"))
        _stream(net, pair, count=300, size=200, interval=0.02)
        stats = pair[2].statistics()
        assert stats.fec_enabled is expect, f"seed=45 loss={loss}: {stats}"
        assert (stats.parity_packets_sent > 0) is expect
        assert stats.bytes_sent >= stats.app_bytes_sent


def test_fec_is_sent_only_to_a_peer_that_can_decode() -> None:
    net = VirtualNetwork(46, LinkProfile(delay=0.010, loss=0.05))
    pair = _pair(net, ALWAYS, server_config=QuantumConfig(fec="off"))
    _stream(net, pair, count=100, size=200, interval=0.02)
    client_stats = pair[2].statistics()
    assert not client_stats.fec_enabled and client_stats.parity_packets_sent == 0
    assert pair[3]._fec.decoder is None


@attrs.define
class CountingLoss:
    """Seeded random loss in both directions; counts the client's DATA packets it drops."""

    rng: random.Random
    loss: float
    data_dropped: int = 0

    def __call__(self, data: bytes, source: object, destination: object) -> bool:
        if self.rng.random() >= self.loss:
            return False
        if source == A and parse_header_untrusted(data).packet_type is PacketType.DATA:
            self.data_dropped += 1
        return True


def _repair_ratio(workload: str, seed: int, loss: float = 0.02, fec: str = "auto") -> tuple[float, int, int]:
    counter = CountingLoss(random.Random(seed), loss)
    net = VirtualNetwork(seed, LinkProfile(delay=0.020, drop_if=counter, rate_bytes_per_s=2.5e6))
    pair = _pair(net, QuantumConfig(fec=fec))
    if workload == "bulk":
        send_and_collect(net, pair, [bytes([i % 256]) * 20_000 for i in range(200)], max_time=120)
    else:
        _stream(net, pair, count=3000, size=200, interval=0.02)
    recovered = pair[3].statistics().fec_recovered_packets
    return recovered / max(1, counter.data_dropped), recovered, counter.data_dropped


@pytest.mark.parametrize(("workload", "fec"), [("bulk", "on"), ("stream", "auto")])
def test_most_losses_at_two_percent_are_repaired_without_retransmission(workload: str, fec: str) -> None:
    """The goal is >= 90 % (measured figures: docs/bbr-fec.md); assert a margin below it.

    Bulk under "auto" sends no parity once it is window-limited (test_fec_bulk.py): "on"
    protects it regardless, and that is what is measured for bulk here."""
    seed = 2026
    ratio, recovered, dropped = _repair_ratio(workload, seed, fec=fec)
    assert dropped >= 20, f"seed={seed}: too few losses to judge ({dropped})"
    assert ratio >= 0.70, f"seed={seed} {workload}: {recovered}/{dropped} = {ratio:.0%} repaired by FEC"
    off_ratio, off_recovered, _ = _repair_ratio(workload, seed, fec="off")
    assert off_recovered == 0 and off_ratio == 0  # the control: without FEC nothing is repaired


def test_fec_stays_on_under_steady_loss_and_reports_are_cumulative() -> None:
    """The receiver's FEC_REPORT keeps the sender's policy fed: no on/off flapping at 2 % loss."""
    net = VirtualNetwork(47, LinkProfile(delay=0.020, loss=0.02))
    pair = _pair(net, QuantumConfig(fec="auto"))
    client = pair[2]
    samples: list[bool] = []
    real_step = net.step

    def step() -> bool:
        samples.append(client._fec.sending)
        return real_step()

    net.step = step  # type: ignore[method-assign]
    _stream(net, pair, count=1500, size=200, interval=0.02)
    first_on = samples.index(True)
    assert all(samples[first_on:]), "FEC switched itself off while the loss went on"
    assert client.statistics().fec_peer_recovered_packets == pair[3].statistics().fec_recovered_packets
    # A stale (smaller) cumulative report, e.g. reordered, changes nothing.
    before = client._fec.peer_recovered
    client._fec.on_peer_report(before - 1, net.now)
    assert client._fec.peer_recovered == before


def test_fec_report_frame_round_trips() -> None:
    from aetherflow_sdk.quantum._wire import FecReportFrame, encode_fec_report, parse_frames_untrusted

    assert parse_frames_untrusted(encode_fec_report(2**40 + 3)) == [FecReportFrame(recovered=2**40 + 3)]


@attrs.define
class DropAt:
    """Drop the client's first DATA packet sent at or after each of ``times`` (virtual seconds)."""

    times: list[float]
    net: VirtualNetwork | None = None
    dropped: int = 0

    def __call__(self, data: bytes, source: object, destination: object) -> bool:
        assert self.net is not None
        if not self.times or self.net.now < self.times[0] or source != A:
            return False
        if parse_header_untrusted(data).packet_type is not PacketType.DATA:
            return False
        self.times.pop(0)
        self.dropped += 1
        return True


def test_fec_on_keeps_sending_when_losses_are_rare() -> None:
    """Mode "on" means always: a clean 5 s window must not switch it off (unlike "auto")."""
    drop = DropAt([])
    net = VirtualNetwork(48, LinkProfile(delay=0.020, drop_if=drop))
    drop.net = net
    pair = _pair(net, ALWAYS)
    drop.times = [net.now + 1.0, net.now + 7.0]
    _stream(net, pair, count=8000, size=200, interval=0.001)  # 1,000 packets/s for 8 s
    client = pair[2]
    assert drop.dropped == 2, f"seed={net.seed}"
    assert client._fec.sending and client.statistics().fec_enabled, f"seed={net.seed}"
