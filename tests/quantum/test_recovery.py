"""Loss recovery on a scripted virtual clock: SACK, packet/time-threshold loss, RTO, late ACKs."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from aetherflow_sdk._errors import LocalProtocolError, RemoteProtocolError
from aetherflow_sdk.quantum._congestion import PacketInfo, RttView
from aetherflow_sdk.quantum._recovery import LossRecovery, SentPacket
from aetherflow_sdk.quantum._rtt import RttEstimator

SIZE = 1200


class RecordingCC:
    """A congestion controller that records every hook call."""

    name = "recording"
    congestion_window = 10**9
    pacing_rate = 1e9

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, int | None, float]] = []

    def on_packet_sent(self, packet: PacketInfo, bytes_in_flight: int, now: float) -> None:
        self.calls.append(("sent", packet.packet_number, bytes_in_flight, now))

    def on_packets_acked(
        self, acked: Sequence[PacketInfo], rtt: RttView, bytes_in_flight: int, now: float
    ) -> None:
        self.calls.append(("acked", [p.packet_number for p in acked], bytes_in_flight, now))

    def on_packets_lost(self, lost: Sequence[PacketInfo], bytes_in_flight: int, now: float) -> None:
        self.calls.append(("lost", [p.packet_number for p in lost], bytes_in_flight, now))

    def on_retransmission_timeout(self, now: float) -> None:
        self.calls.append(("rto", None, None, now))

    def on_app_limited(self, bytes_in_flight: int, now: float) -> None:
        self.calls.append(("app_limited", None, bytes_in_flight, now))

    def state_name(self) -> str:
        return "recording"

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def make() -> tuple[LossRecovery, RttEstimator, RecordingCC]:
    rtt = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=60.0)
    cc = RecordingCC()
    return LossRecovery(rtt=rtt, congestion=cc), rtt, cc


def send(rec: LossRecovery, pn: int, now: float, *, eliciting: bool = True) -> SentPacket:
    p = SentPacket(
        packet_number=pn, time_sent=now, size=SIZE, ack_eliciting=eliciting, in_flight=eliciting, payload=pn
    )
    rec.on_packet_sent(p, now)
    return p


def numbers(packets: list[SentPacket]) -> list[int]:
    return [p.packet_number for p in packets]


def test_ack_takes_rtt_sample_and_updates_in_flight() -> None:
    rec, rtt, cc = make()
    for pn in range(3):
        send(rec, pn, 0.0)
    assert rec.bytes_in_flight == 3 * SIZE
    assert rec.has_unacked()
    out = rec.on_ack_received([range(0, 3)], ack_delay=0.0, now=0.05)
    assert numbers(out.newly_acked) == [0, 1, 2]
    assert out.rtt_updated and out.lost == [] and out.late_acked == []
    assert rtt.latest_rtt == pytest.approx(0.05)
    assert rec.bytes_in_flight == 0
    assert not rec.has_unacked()
    assert rec.largest_acked == 2
    assert cc.calls[-1] == ("acked", [0, 1, 2], 0, 0.05)
    assert rec.loss_detection_timer() is None


def test_no_rtt_sample_when_largest_already_acked_or_not_eliciting() -> None:
    rec, rtt, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    assert rec.on_ack_received([range(1, 2)], 0.0, 0.05).rtt_updated
    out = rec.on_ack_received([range(0, 2)], 0.0, 0.5)  # largest (1) was acked before
    assert numbers(out.newly_acked) == [0]
    assert not out.rtt_updated
    assert rtt.latest_rtt == pytest.approx(0.05)
    send(rec, 2, 1.0, eliciting=False)
    out = rec.on_ack_received([range(2, 3)], 0.0, 1.07)
    assert numbers(out.newly_acked) == [2] and not out.rtt_updated


def test_packet_threshold_loss() -> None:
    rec, _, cc = make()
    for pn in range(6):
        send(rec, pn, 0.0)
    # 0 is missing; 1..3 acked: largest_acked 3 >= 0 + 3 -> 0 is lost.
    out = rec.on_ack_received([range(1, 4)], 0.0, 0.01)
    assert numbers(out.newly_acked) == [1, 2, 3]
    assert numbers(out.lost) == [0]
    assert out.lost[0].declared_lost and out.lost[0].payload == 0
    assert rec.packets_lost == 1
    assert rec.bytes_in_flight == 2 * SIZE
    # RFC 9002 order: losses reported before acks.
    assert cc.kinds()[-2:] == ["lost", "acked"]
    assert cc.calls[-2][1] == [0]


def test_time_threshold_loss_via_timer() -> None:
    rec, _, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.010)
    out = rec.on_ack_received([range(1, 2)], 0.0, 0.110)  # latest_rtt = smoothed = 0.100
    assert out.lost == []
    loss_delay = 9 / 8 * 0.100
    timer = rec.loss_detection_timer()
    assert timer is not None
    assert timer == pytest.approx(0.0 + loss_delay)
    early = rec.on_loss_detection_timeout(timer - 0.001)
    assert early.lost == [] and not early.rto_fired
    fired = rec.on_loss_detection_timeout(timer)
    assert numbers(fired.lost) == [0] and not fired.rto_fired
    assert rec.loss_detection_timer() is None
    assert rec.bytes_in_flight == 0


def test_time_threshold_loss_on_a_later_ack() -> None:
    rec, _, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    send(rec, 2, 0.5)
    out = rec.on_ack_received([range(2, 3)], 0.0, 0.6)  # 0 and 1 sent 0.6 s ago >> 9/8 * 0.1
    assert numbers(out.lost) == [0, 1]


def test_rto_backoff_and_go_back_n() -> None:
    rec, rtt, cc = make()
    for pn in range(4):
        send(rec, pn, 0.0)
    rto = rtt.rto
    assert rec.loss_detection_timer() == pytest.approx(rto)
    out = rec.on_loss_detection_timeout(rto)
    assert out.rto_fired
    assert numbers(out.lost) == [0, 1, 2, 3]  # everything outstanding: go-back-N
    assert rec.rto_count == 1 and rtt.backoff == 1
    assert rec.bytes_in_flight == 0 and not rec.has_unacked()
    assert cc.kinds()[-2:] == ["rto", "lost"]
    assert rec.loss_detection_timer() is None
    # Retransmit in a new packet; the backed-off RTO is armed from its send time.
    send(rec, 4, rto)
    assert rec.loss_detection_timer() == pytest.approx(rto + 2 * rto)
    out = rec.on_loss_detection_timeout(rto + 2 * rto)
    assert out.rto_fired and numbers(out.lost) == [4]
    assert rtt.backoff == 2
    # Karn: the backoff stays until a valid sample arrives.
    t = 3 * rto
    send(rec, 5, t)
    assert rec.loss_detection_timer() == pytest.approx(t + 4 * rto)
    out2 = rec.on_ack_received([range(5, 6)], 0.0, t + 0.1)
    assert out2.rtt_updated and rtt.backoff == 0


def test_late_ack_is_spurious_retransmission() -> None:
    rec, _, _ = make()
    for pn in range(5):
        send(rec, pn, 0.0)
    out = rec.on_ack_received([range(1, 5)], 0.0, 0.1)
    assert numbers(out.lost) == [0]
    in_flight = rec.bytes_in_flight
    late = rec.on_ack_received([range(0, 5)], 0.0, 0.12)
    assert numbers(late.late_acked) == [0]
    assert late.newly_acked == []
    assert rec.spurious_retransmissions == 1
    assert rec.bytes_in_flight == in_flight  # it no longer counted in flight
    again = rec.on_ack_received([range(0, 5)], 0.0, 0.13)
    assert again.late_acked == [] and rec.spurious_retransmissions == 1


def test_late_ack_after_rto_gives_rtt_sample_and_memory_expires() -> None:
    rec, rtt, _ = make()
    send(rec, 0, 0.0)
    out = rec.on_loss_detection_timeout(rtt.rto)
    assert out.rto_fired
    late = rec.on_ack_received([range(0, 1)], 0.0, 0.35)
    assert numbers(late.late_acked) == [0] and late.rtt_updated
    assert rtt.latest_rtt == pytest.approx(0.35) and rtt.backoff == 0
    # A packet lost long ago is forgotten: its ACK is then simply ignored.
    send(rec, 1, 1.0)
    send(rec, 2, 1.0)
    send(rec, 3, 1.0)
    send(rec, 4, 1.0)
    assert numbers(rec.on_ack_received([range(2, 5)], 0.0, 1.05).lost) == [1]
    send(rec, 5, 100.0)
    rec.on_ack_received([range(5, 6)], 0.0, 100.1)
    assert rec.on_ack_received([range(1, 2)], 0.0, 100.2).late_acked == []


def test_lost_memory_is_bounded_in_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from aetherflow_sdk.quantum import _recovery

    monkeypatch.setattr(_recovery, "LOST_MEMORY_MAX", 5)
    rec, _, _ = make()
    for pn in range(23):
        send(rec, pn, 0.0)
    # Ack 20..22 only: 0..19 are lost by the packet threshold; only the newest 5 are remembered.
    out = rec.on_ack_received([range(20, 23)], 0.0, 0.01)
    assert numbers(out.lost) == list(range(20))
    late = rec.on_ack_received([range(0, 23)], 0.0, 0.02)
    assert numbers(late.late_acked) == list(range(15, 20))


def test_late_ack_within_an_rto_is_recognised_even_with_a_tiny_rtt() -> None:
    rec, rtt, _ = make()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.001)  # srtt 1 ms; rto floors at 200 ms
    send(rec, 1, 0.01)
    assert rec.on_loss_detection_timeout(0.01 + rtt.rto).rto_fired
    late = rec.on_ack_received([range(1, 2)], 0.0, 0.01 + rtt.rto + 0.15)
    assert numbers(late.late_acked) == [1]


def test_overlapping_and_empty_ranges() -> None:
    rec, _, _ = make()
    for pn in range(10):
        send(rec, pn, 0.0)
    out = rec.on_ack_received([range(5, 10), range(0, 7), range(3, 3), range(2, 9)], 0.0, 0.05)
    assert numbers(out.newly_acked) == list(range(10))
    assert rec.on_ack_received([range(4, 4)], 0.0, 0.06).newly_acked == []


def test_ack_of_unsent_packet_is_a_protocol_violation() -> None:
    rec, _, _ = make()
    send(rec, 0, 0.0)
    with pytest.raises(RemoteProtocolError):
        rec.on_ack_received([range(0, 2)], 0.0, 0.1)


def test_packet_numbers_must_increase() -> None:
    rec, _, _ = make()
    send(rec, 5, 0.0)
    with pytest.raises(LocalProtocolError):
        send(rec, 5, 0.0)


def test_rto_timer_restarts_when_new_data_acked() -> None:
    rec, rtt, _ = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.08)
    assert rec.loss_detection_timer() == pytest.approx(0.08 + rtt.rto)


def test_ack_only_packets_are_not_counted_as_lost() -> None:
    rec, _, _ = make()
    send(rec, 0, 0.0, eliciting=False)
    for pn in range(1, 5):
        send(rec, pn, 0.0)
    out = rec.on_ack_received([range(1, 5)], 0.0, 0.1)
    assert numbers(out.lost) == [0]
    assert rec.packets_lost == 0


def test_ack_cost_does_not_depend_on_history() -> None:
    """ACK ranges that re-cover old packets are clipped, not walked (O(new + ranges))."""
    rec, _, _ = make()
    now = 0.0
    for pn in range(20_000):
        send(rec, pn, now)
        rec.on_ack_received([range(0, pn + 1)], 0.0, now)
        now += 0.0001
    assert rec.outstanding() == 0 and rec.bytes_in_flight == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_sack_bookkeeping(seed: int) -> None:
    """Seeded random loss/reordering of ACKs: every packet ends acked, late-acked or lost exactly once."""
    rng = random.Random(seed)
    rec, _, cc = make()
    now = 0.0
    received: set[int] = set()
    fate: dict[int, str] = {}
    pn = 0
    for _ in range(300):
        for _ in range(rng.randint(0, 4)):
            send(rec, pn, now)
            if rng.random() > 0.1:
                received.add(pn)
            pn += 1
        now += rng.uniform(0.001, 0.05)
        if received and rng.random() < 0.7:
            ranges = sorted(received)
            acked = []
            start = prev = ranges[0]
            for x in ranges[1:]:
                if x != prev + 1:
                    acked.append(range(start, prev + 1))
                    start = x
                prev = x
            acked.append(range(start, prev + 1))
            rng.shuffle(acked)
            out = rec.on_ack_received(acked, 0.0, now)
            for p in out.newly_acked:
                assert fate.setdefault(p.packet_number, "acked") == "acked", f"seed={seed}"
            for p in out.late_acked:
                assert fate.get(p.packet_number) == "lost", f"seed={seed}"
                fate[p.packet_number] = "late"
            for p in out.lost:
                assert p.packet_number not in fate, f"seed={seed}"
                fate[p.packet_number] = "lost"
        timer = rec.loss_detection_timer()
        if timer is not None and timer <= now:
            for p in rec.on_loss_detection_timeout(now).lost:
                assert p.packet_number not in fate, f"seed={seed}"
                fate[p.packet_number] = "lost"
        outstanding_bytes = SIZE * sum(1 for x in range(pn) if x not in fate)
        assert rec.bytes_in_flight == outstanding_bytes, f"seed={seed}"
    sent = sum(1 for c in cc.calls if c[0] == "sent")
    assert sent == pn


class _Link:
    """One direction of a virtual path: propagation delay, seeded loss, a rate-limited drop-tail queue."""

    def __init__(self, rng: random.Random, *, delay: float, loss: float, rate: float, queue: int) -> None:
        self.rng, self.delay, self.loss, self.rate, self.queue = rng, delay, loss, rate, queue
        self.busy_until = 0.0
        self.dropped = 0

    def arrival(self, size: int, now: float) -> float | None:
        """When a packet sent now arrives, or None if lost or dropped by the queue."""
        start = max(now, self.busy_until)
        if (start - now) * self.rate > self.queue:
            self.dropped += 1
            return None
        self.busy_until = start + size / self.rate
        if self.rng.random() < self.loss:
            return None
        return self.busy_until + self.delay


@pytest.mark.parametrize(("seed", "loss"), [(7, 0.0), (8, 0.02), (9, 0.1)])
def test_components_transfer_messages_over_lossy_virtual_path(seed: int, loss: float) -> None:
    """RTT + recovery + NewReno + pacer + messages, wired by hand, on a virtual clock:
    every message arrives exactly once (ordered ones in order) through loss and queue drops."""
    import heapq

    from aetherflow_sdk.quantum._messages import Fragment, MessageReceiver, MessageSender
    from aetherflow_sdk.quantum._newreno import NewReno
    from aetherflow_sdk.quantum._pacer import Pacer
    from aetherflow_sdk.quantum._ranges import RangeSet

    rng = random.Random(seed)
    mds = 1200
    rtt = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=10.0)
    cc = NewReno(mds, 10)
    rec = LossRecovery(rtt=rtt, congestion=cc)
    pacer = Pacer(max_datagram_size=mds)
    window = 1_000_000
    sender = MessageSender(max_message_size=100_000, send_buffer=300_000, initial_peer_max_data=window)
    receiver = MessageReceiver(max_message_size=100_000, receive_window=window)
    forward = _Link(rng, delay=0.02, loss=loss, rate=2_000_000, queue=60_000)
    backward = _Link(rng, delay=0.02, loss=loss, rate=10_000_000, queue=10**9)
    received = RangeSet()
    messages = [
        (rng.random() < 0.5, i.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 20_000))) for i in range(600)
    ]
    to_queue = list(messages)
    got: list[bytes] = []
    events: list[tuple[float, int, str, object]] = []
    order = 0
    now = 0.0
    pn = 0
    wake: float | None = None

    def push(at: float, kind: str, item: object) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, item))

    def try_send() -> None:
        nonlocal pn, wake
        for _ in range(10_000):
            while to_queue and sender.can_queue(len(to_queue[0][1])):
                ordered, data = to_queue.pop(0)
                sender.queue_message(data, ordered)
            if rec.bytes_in_flight + mds > cc.congestion_window or not sender.has_data_to_send():
                if not sender.has_data_to_send():
                    cc.on_app_limited(rec.bytes_in_flight, now)
                return
            pacer.set_rate(cc.pacing_rate)
            at = pacer.next_send_time(mds, now)
            if at is not None:
                if wake is None or at < wake:
                    wake = at
                    push(at, "wake", None)
                return
            frags: list[Fragment] = []
            room = mds - 40
            while room > 30:
                f = sender.next_fragment(room - 30)
                if f is None:
                    break
                frags.append(f)
                room -= 30 + len(f.data)
            size = mds - room
            rec.on_packet_sent(
                SentPacket(
                    packet_number=pn,
                    time_sent=now,
                    size=size,
                    ack_eliciting=True,
                    in_flight=True,
                    payload=frags,
                ),
                now,
            )
            pacer.on_packet_sent(size, now)
            arrive = forward.arrival(size, now)
            if arrive is not None:
                push(arrive, "data", (pn, frags))
                if rng.random() < 0.02:
                    push(arrive + rng.uniform(0, 0.01), "data", (pn, frags))  # duplicated
            pn += 1
        raise AssertionError("send loop did not end")

    def on_lost(lost: list[SentPacket]) -> None:
        for p in lost:
            for f in p.payload:  # type: ignore[attr-defined]
                sender.on_fragment_lost(f)

    try_send()
    for _ in range(500_000):
        timer = rec.loss_detection_timer()
        if events and (timer is None or events[0][0] <= timer):
            now, _, kind, item = heapq.heappop(events)
        elif timer is not None:
            now, kind, item = timer, "timer", None
        else:
            break
        if kind == "data":
            number, frags = item  # type: ignore[misc]
            received.add(number)
            received.trim_below(number - 5000)
            for f in frags:
                receiver.on_fragment(f)
            while (m := receiver.next_message()) is not None:
                got.append(m)
            ranges = list(reversed(received))[:32]
            arrive = backward.arrival(40, now)
            if arrive is not None:
                push(arrive, "ack", (ranges, receiver.max_data))
        elif kind == "ack":
            ranges, max_data = item  # type: ignore[misc]
            sender.update_peer_max_data(max_data)
            out = rec.on_ack_received(ranges, 0.0, now)
            for p in out.newly_acked + out.late_acked:
                for f in p.payload:  # type: ignore[attr-defined]
                    sender.on_fragment_acked(f)
            on_lost(out.lost)
        elif kind == "timer":
            on_lost(rec.on_loss_detection_timeout(now).lost)
        elif kind == "wake" and wake is not None and now >= wake:
            wake = None
        try_send()
        if not to_queue and sender.all_acked() and len(got) == len(messages):
            break
    else:
        raise AssertionError(f"seed={seed}: transfer did not finish")
    assert now < 120, f"seed={seed}: took {now:.1f} virtual seconds"
    expected_ordered = [d for o, d in messages if o]
    assert [m for m in got if messages[int.from_bytes(m[:4], "big")][0]] == expected_ordered, f"seed={seed}"
    assert sorted(got) == sorted(d for _, d in messages), f"seed={seed}"
    if loss:
        assert rec.packets_lost > 0, f"seed={seed}"


# -- tail-loss probes (RFC 8985 §7, RFC 9002 §6.2) -------------------------------------------


def make_probing(max_probes: int = 2) -> tuple[LossRecovery, RttEstimator, RecordingCC]:
    rtt = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=60.0)
    cc = RecordingCC()
    return LossRecovery(rtt=rtt, congestion=cc, max_probes=max_probes, max_ack_delay=0.025), rtt, cc


def test_probe_timeout_is_srtt_plus_4_rttvar_plus_max_ack_delay() -> None:
    rec, rtt, _ = make_probing()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.040)  # first sample: srtt 40 ms, rttvar 20 ms
    assert rec.probe_timeout() == pytest.approx(0.040 + 4 * 0.020 + 0.025)
    send(rec, 1, 0.050)
    assert rec.loss_detection_timer() == pytest.approx(0.050 + rec.probe_timeout())
    assert rec.loss_detection_timer() < 0.050 + rtt.rto  # the probe comes before the RTO


def test_two_probes_then_the_rto_backstop() -> None:
    rec, rtt, cc = make_probing()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.040)
    send(rec, 1, 0.050)
    pto = rec.probe_timeout()
    assert pto < rtt.rto < 2 * pto

    first = rec.on_loss_detection_timeout(0.050 + pto)
    assert first.probe and not first.rto_fired and first.lost == []
    assert "rto" not in cc.kinds() and "lost" not in cc.kinds() and rec.bytes_in_flight == SIZE
    t1 = 0.050 + pto
    send(rec, 2, t1)  # the probe
    # Backed off, but never later than the RTO would be (RFC 8985 §7.2): 2 x 145 ms > 200 ms.
    assert rec.loss_detection_timer() == pytest.approx(t1 + rtt.rto)
    second = rec.on_loss_detection_timeout(t1 + rtt.rto)
    assert second.probe and second.lost == []
    t2 = t1 + rtt.rto
    send(rec, 3, t2)
    assert rec.probe_count == 2
    # Both probes unanswered: the RFC 6298 RTO is next, with go-back-N and the window collapse.
    assert rec.loss_detection_timer() == pytest.approx(t2 + rtt.rto)
    rto = rec.on_loss_detection_timeout(t2 + rtt.rto)
    assert rto.rto_fired and not rto.probe and numbers(rto.lost) == [1, 2, 3]
    assert rec.rto_count == 1 and "rto" in cc.kinds()


def test_an_ack_of_new_data_ends_the_probe_backoff() -> None:
    rec, _rtt, _ = make_probing()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.040)
    send(rec, 1, 0.050)
    pto = rec.probe_timeout()
    assert rec.on_loss_detection_timeout(0.050 + pto).probe
    send(rec, 2, 0.050 + pto)
    # The probe's ACK arrives and shows packet 1 missing, sent long enough before the probe
    # to be lost by the time threshold at once (RACK): no RTO, and probing starts afresh.
    now = 0.050 + pto + 0.040
    out = rec.on_ack_received([range(2, 3)], 0.0, now)
    assert numbers(out.newly_acked) == [2] and numbers(out.lost) == [1]
    assert rec.rto_count == 0 and rec.loss_detection_timer() is None
    send(rec, 3, now)
    assert rec.loss_detection_timer() == pytest.approx(now + rec.probe_timeout())


def test_without_probes_the_rto_comes_first() -> None:
    rec, rtt, _ = make_probing(max_probes=0)
    send(rec, 0, 0.0)
    assert rec.loss_detection_timer() == pytest.approx(rtt.rto)
    assert rec.on_loss_detection_timeout(rtt.rto).rto_fired


# -- adaptive reordering (rule 8) --------------------------------------------------------------


def test_a_spurious_loss_widens_the_packet_and_time_thresholds() -> None:
    rtt = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=60.0)
    rec = LossRecovery(rtt=rtt, congestion=RecordingCC(), adaptive_reordering=True)
    for pn in range(8):
        send(rec, pn, 0.0)
    out = rec.on_ack_received([range(1, 8)], 0.0, 0.1)  # 0 is 7 behind: lost by packet threshold
    assert numbers(out.lost) == [0] and rec.packet_threshold == 3
    late = rec.on_ack_received([range(0, 1)], 0.0, 0.25)  # ...but it was only reordered
    assert numbers(late.late_acked) == [0] and rec.spurious_retransmissions == 1
    assert rec.packet_threshold == 8  # the same reordering would not be taken for loss again
    # It took 250 ms against an RTT of 100 ms: the time threshold widens to its 2 x RTT cap.
    assert rec.time_threshold == 2.0
    for pn in range(8, 16):
        send(rec, pn, 0.3)
    out = rec.on_ack_received([range(9, 16)], 0.0, 0.4)
    assert out.lost == [], "a 7-deep reordering is now tolerated"


def test_thresholds_stay_fixed_without_adaptation_or_after_an_rto() -> None:
    rec, _rtt, _ = make()
    for pn in range(8):
        send(rec, pn, 0.0)
    rec.on_ack_received([range(1, 8)], 0.0, 0.1)
    rec.on_ack_received([range(0, 1)], 0.0, 0.25)
    assert rec.spurious_retransmissions == 1
    assert (rec.packet_threshold, rec.time_threshold) == (3, 9 / 8)

    rtt2 = RttEstimator(initial_rtt=0.1, min_rto=0.2, max_rto=60.0)
    adaptive = LossRecovery(rtt=rtt2, congestion=RecordingCC(), adaptive_reordering=True)
    send(adaptive, 0, 0.0)
    assert adaptive.on_loss_detection_timeout(rtt2.rto).rto_fired
    adaptive.on_ack_received([range(0, 1)], 0.0, rtt2.rto + 0.01)  # slow, not reordered
    assert adaptive.spurious_retransmissions == 1
    assert (adaptive.packet_threshold, adaptive.time_threshold) == (3, 9 / 8)
