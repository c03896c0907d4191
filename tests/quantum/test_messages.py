"""Messages over packets: fragmentation, reassembly, ordering, flow control, violations."""

from __future__ import annotations

import os
import random

import attrs
import pytest

from aetherflow_sdk._errors import MessageTooLarge, RemoteProtocolError
from aetherflow_sdk.quantum._messages import MESSAGE_FLOW_COST, Fragment, MessageReceiver, MessageSender

MIB = 1024 * 1024


def pair(
    *, max_message_size: int = 16 * MIB, window: int = 16 * MIB, send_buffer: int = 4 * MIB
) -> tuple[MessageSender, MessageReceiver]:
    sender = MessageSender(
        max_message_size=max_message_size, send_buffer=send_buffer, initial_peer_max_data=window
    )
    receiver = MessageReceiver(max_message_size=max_message_size, receive_window=window)
    return sender, receiver


def drain(sender: MessageSender, size: int = 1300) -> list[Fragment]:
    out: list[Fragment] = []
    for _ in range(1_000_000):
        f = sender.next_fragment(size)
        if f is None:
            return out
        out.append(f)
    raise AssertionError("sender never ran dry")


def take_all(receiver: MessageReceiver) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(1_000_000):
        m = receiver.next_message()
        if m is None:
            return out
        out.append(m)
    raise AssertionError("receiver never ran dry")


@pytest.mark.parametrize("size", [0, 1, 1299, 1300, 1301, 100_000, 16 * MIB])
def test_fragmentation_and_reassembly(size: int) -> None:
    sender, receiver = pair()
    data = os.urandom(size)
    sender.queue_message(data, ordered=True)
    frags = drain(sender)
    assert len(frags) == max(1, -(-size // 1300))
    assert all(len(f.data) <= 1300 for f in frags)
    for f in reversed(frags):
        receiver.on_fragment(f)
    assert receiver.next_message() == data
    assert receiver.next_message() is None
    for f in frags:
        sender.on_fragment_acked(f)
    assert sender.all_acked() and sender.buffered_bytes == 0


def test_single_fragment_fast_path_delivers_the_same_object() -> None:
    sender, receiver = pair()
    data = b"hello"
    sender.queue_message(data, ordered=False)
    (f,) = drain(sender)
    assert f.data is data
    receiver.on_fragment(f)
    assert receiver.next_message() is data


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ordered_order_under_shuffle_and_duplication(seed: int) -> None:
    rng = random.Random(seed)
    sender, receiver = pair()
    messages = [os.urandom(rng.randint(0, 5000)) for _ in range(200)]
    for m in messages:
        sender.queue_message(m, ordered=True)
    frags = drain(sender, 700)
    frags = frags + rng.sample(frags, len(frags) // 3)
    rng.shuffle(frags)
    got = []
    for f in frags:
        receiver.on_fragment(f)
        got.extend(take_all(receiver))
    assert got == messages, f"seed={seed}"
    assert receiver.held_bytes == 0


def test_unordered_delivered_while_earlier_one_incomplete() -> None:
    sender, receiver = pair()
    big, small = os.urandom(5000), b"small"
    sender.queue_message(big, ordered=False)
    sender.queue_message(small, ordered=False)
    frags = drain(sender, 1000)
    # Admitted messages take turns: the small one goes right after the big one's first fragment.
    assert [f.sequence for f in frags] == [0, 1, 0, 0, 0, 0]
    for f in frags[:-1]:
        receiver.on_fragment(f)
    assert receiver.next_message() == small
    assert not receiver.has_message()
    receiver.on_fragment(frags[-1])
    assert receiver.next_message() == big


def test_ordered_messages_share_one_turn_and_unordered_ones_interleave() -> None:
    sender, receiver = pair()
    sender.queue_message(b"A" * 3000, ordered=True)
    sender.queue_message(b"B" * 3000, ordered=True)
    sender.queue_message(b"u" * 1500, ordered=False)
    frags = drain(sender, 1000)
    order = [(f.ordered, f.sequence) for f in frags]
    # The ordered lane sends A whole before B; the unordered message takes every other turn.
    assert order == [(True, 0), (False, 0), (True, 0), (False, 0), (True, 0), (True, 1), (True, 1), (True, 1)]
    for f in frags:
        receiver.on_fragment(f)
    assert take_all(receiver) == [b"u" * 1500, b"A" * 3000, b"B" * 3000]


def test_ordered_waits_for_earlier_but_unordered_does_not() -> None:
    sender, receiver = pair()
    sender.queue_message(b"o0" * 1000, ordered=True)
    sender.queue_message(b"o1", ordered=True)
    sender.queue_message(b"u0", ordered=False)
    frags = drain(sender, 1000)
    for f in frags[1:]:
        receiver.on_fragment(f)
    assert receiver.next_message() == b"u0"
    assert receiver.next_message() is None
    receiver.on_fragment(frags[0])
    assert take_all(receiver) == [b"o0" * 1000, b"o1"]


def test_duplicates_after_delivery_are_dropped() -> None:
    sender, receiver = pair()
    sender.queue_message(b"a", ordered=True)
    sender.queue_message(b"b", ordered=False)
    sender.queue_message(b"c" * 3000, ordered=False)
    frags = drain(sender, 1000)
    for f in frags:
        receiver.on_fragment(f)
    assert len(take_all(receiver)) == 3
    for f in frags:
        receiver.on_fragment(f)
    assert take_all(receiver) == []
    assert receiver.duplicates == len(frags)


def test_flow_control_blocks_and_unblocks() -> None:
    window = 10_000
    charged = 3000 + MESSAGE_FLOW_COST
    sender, receiver = pair(max_message_size=window, window=window)
    for _ in range(5):
        sender.queue_message(os.urandom(3000), ordered=True)
    frags = drain(sender, 1000)
    assert [f.flow_offset for f in frags[::3]] == [0, charged, 2 * charged]
    # Message 3 would end at 3 * charged + 3000 > 10000: blocked.
    assert {f.sequence for f in frags} == {0, 1, 2}
    assert sender.blocked_by_flow_control and not sender.has_data_to_send()
    for f in frags:
        receiver.on_fragment(f)
    assert receiver.held_bytes == 3 * charged
    assert receiver.max_data == window
    assert not receiver.should_send_max_data()
    receiver.next_message()
    assert receiver.max_data == window + charged and receiver.should_send_max_data()
    sender.update_peer_max_data(receiver.max_data)
    receiver.on_max_data_sent()
    assert not receiver.should_send_max_data()
    sender.update_peer_max_data(5)  # stale: ignored
    assert sender.peer_max_data == window + charged
    assert sender.has_data_to_send()
    more = drain(sender, 1000)
    assert {f.sequence for f in more} == {3}
    assert sender.blocked_by_flow_control


def test_a_message_of_exactly_the_window_is_deliverable() -> None:
    window = 5000
    sender, receiver = pair(max_message_size=window, window=window)
    sender.queue_message(b"a", ordered=True)
    sender.queue_message(b"b" * window, ordered=True)
    first = drain(sender, 1400)
    assert len(first) == 1 and sender.blocked_by_flow_control
    receiver.on_fragment(first[0])
    assert receiver.next_message() == b"a"
    sender.update_peer_max_data(receiver.max_data)
    for f in drain(sender, 1400):
        receiver.on_fragment(f)
    assert receiver.next_message() == b"b" * window


def test_blocked_signal_unsticks_a_message_needing_the_whole_window() -> None:
    window = 10_000
    sender, receiver = pair(max_message_size=window, window=window)
    sender.queue_message(b"a", ordered=True)
    sender.queue_message(b"b" * window, ordered=True)
    (first,) = drain(sender)
    assert sender.blocked_at == 1 + MESSAGE_FLOW_COST + window
    receiver.on_fragment(first)
    assert receiver.next_message() == b"a"
    # The growth (65 bytes) is far below a quarter window: not announced by itself...
    assert not receiver.should_send_max_data()
    assert receiver.max_data_update_available()
    # ...until the sender reports what it is blocked at.
    assert sender.should_send_blocked()
    receiver.on_peer_blocked(sender.blocked_at or 0)
    sender.on_blocked_sent()
    assert not sender.should_send_blocked()
    assert receiver.should_send_max_data()
    sender.update_peer_max_data(receiver.max_data)
    receiver.on_max_data_sent()
    assert not receiver.should_send_max_data() and not receiver.max_data_update_available()
    assert sender.blocked_at is None and not sender.should_send_blocked()
    for f in drain(sender, 1400):
        receiver.on_fragment(f)
    assert receiver.next_message() == b"b" * window


def test_blocked_report_before_the_receiver_can_satisfy_it() -> None:
    window = 10_000
    sender, receiver = pair(max_message_size=window, window=window)
    for size in (1000, 1000, 9000):
        sender.queue_message(b"x" * size, ordered=True)
    frags = drain(sender)
    needed = sender.blocked_at
    assert needed == 2 * (1000 + MESSAGE_FLOW_COST) + 9000
    receiver.on_peer_blocked(needed)
    for f in frags:
        receiver.on_fragment(f)
    assert not receiver.should_send_max_data()  # nothing consumed yet: cannot help
    receiver.next_message()
    assert receiver.max_data < needed and not receiver.should_send_max_data()
    receiver.next_message()
    assert receiver.max_data - window < window // 4  # the quarter-window rule alone would wait
    assert receiver.max_data >= needed and receiver.should_send_max_data()
    # A lost report is sent again.
    sender.on_blocked_sent()
    assert not sender.should_send_blocked()
    sender.on_blocked_lost()
    assert sender.should_send_blocked()


def test_empty_messages_use_window_too() -> None:
    window = 1000
    sender, receiver = pair(max_message_size=window, window=window)
    for _ in range(100):
        sender.queue_message(b"", ordered=False)
    frags = drain(sender)
    assert len(frags) == window // MESSAGE_FLOW_COST + 1  # offsets 0, 64, ..., 960
    assert sender.blocked_by_flow_control
    for f in frags:
        receiver.on_fragment(f)
    assert take_all(receiver) == [b""] * len(frags)


def test_message_too_large() -> None:
    sender, _ = pair(max_message_size=1000, window=1000)
    sender.queue_message(b"x" * 1000, ordered=True)
    with pytest.raises(MessageTooLarge, match="maximum message size"):
        sender.queue_message(b"x" * 1001, ordered=True)
    small_peer = MessageSender(max_message_size=5000, send_buffer=10_000, initial_peer_max_data=2000)
    with pytest.raises(MessageTooLarge, match="receive window"):
        small_peer.queue_message(b"x" * 2001, ordered=False)


def test_backpressure_can_queue() -> None:
    sender, _ = pair(send_buffer=1000)
    assert sender.can_queue(5000)  # empty buffer: a big message is still accepted
    sender.queue_message(b"x" * 5000, ordered=True)
    assert not sender.can_queue(1)
    frags = drain(sender, 1000)
    for f in frags[:-1]:
        sender.on_fragment_acked(f)
    assert sender.buffered_bytes == 1000
    assert not sender.can_queue(1)
    sender.on_fragment_acked(frags[-1])
    assert sender.buffered_bytes == 0 and sender.can_queue(10_000) and sender.all_acked()


def test_lost_fragments_are_retransmitted_minus_acked_parts() -> None:
    sender, receiver = pair()
    data = os.urandom(4000)
    sender.queue_message(data, ordered=True)
    (f,) = drain(sender, 4000)
    sender.on_fragment_lost(f)
    # Part of it is acknowledged by another route (an overlapping retransmission acked).
    sender.on_fragment_acked(attrs.evolve(f, offset=1000, data=data[1000:2000]))
    pieces = drain(sender, 700)
    assert [(p.offset, len(p.data)) for p in pieces] == [
        (0, 700),
        (700, 300),
        (2000, 700),
        (2700, 700),
        (3400, 600),
    ]
    assert sender.bytes_retransmitted == 3000
    for p in pieces:
        receiver.on_fragment(p)
    receiver.on_fragment(attrs.evolve(f, offset=1000, data=data[1000:2000]))
    assert receiver.next_message() == data


def test_lost_after_acked_is_ignored_and_empty_message_retransmits() -> None:
    sender, _ = pair()
    sender.queue_message(b"", ordered=False)
    (f,) = drain(sender)
    assert f.data == b"" and f.message_length == 0
    sender.on_fragment_lost(f)
    assert sender.has_data_to_send()
    (again,) = drain(sender)
    assert again == f
    sender.on_fragment_acked(again)
    sender.on_fragment_lost(f)
    assert not sender.has_data_to_send() and sender.all_acked()


def frag(**kw: object) -> Fragment:
    args: dict[str, object] = {
        "ordered": True,
        "sequence": 0,
        "flow_offset": 0,
        "message_length": 10,
        "offset": 0,
        "data": b"x" * 5,
    }
    args.update(kw)
    return Fragment(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fragment", "text"),
    [
        (frag(message_length=1001), "maximum"),
        (frag(offset=8), "outside"),
        (frag(data=b""), "outside"),
        (frag(flow_offset=995), "max_data"),
        (frag(sequence=-1), "negative"),
    ],
)
def test_protocol_violations(fragment: Fragment, text: str) -> None:
    receiver = MessageReceiver(max_message_size=1000, receive_window=1000)
    with pytest.raises(RemoteProtocolError, match=text):
        receiver.on_fragment(fragment)


def test_inconsistent_fragments_are_violations() -> None:
    receiver = MessageReceiver(max_message_size=1000, receive_window=1000)
    receiver.on_fragment(frag())
    with pytest.raises(RemoteProtocolError, match="inconsistent"):
        receiver.on_fragment(frag(offset=5, message_length=11))
    with pytest.raises(RemoteProtocolError, match="inconsistent"):
        receiver.on_fragment(frag(offset=5, flow_offset=1))


def test_overlapping_flow_offsets_cannot_exceed_the_window() -> None:
    receiver = MessageReceiver(max_message_size=1000, receive_window=1000)
    receiver.on_fragment(frag(sequence=0, message_length=600, data=b"x"))
    with pytest.raises(RemoteProtocolError, match="receive window"):
        receiver.on_fragment(frag(sequence=1, message_length=600, data=b"x"))  # lies: same flow range


def test_a_peer_ignoring_the_window_with_empty_messages_is_a_violation() -> None:
    receiver = MessageReceiver(max_message_size=1000, receive_window=1000)
    for seq in range(1000 // MESSAGE_FLOW_COST + 1):
        receiver.on_fragment(
            frag(sequence=seq, flow_offset=seq * MESSAGE_FLOW_COST, message_length=0, data=b"")
        )
    with pytest.raises(RemoteProtocolError, match="max_data"):
        receiver.on_fragment(frag(sequence=99, flow_offset=1024, message_length=0, data=b""))


def test_skipping_unordered_sequence_numbers_is_bounded() -> None:
    receiver = MessageReceiver(max_message_size=1000, receive_window=1000)
    limit = 1000 // MESSAGE_FLOW_COST + 2
    offset = 0
    for i in range(limit + 1):  # sequences 0, 2, 4, ...: every odd one "missing", each consumed
        receiver.on_fragment(
            frag(ordered=False, sequence=2 * i, flow_offset=offset, message_length=1, data=b"z")
        )
        assert receiver.next_message() == b"z"
        offset += 1 + MESSAGE_FLOW_COST
    with pytest.raises(RemoteProtocolError, match="skipped"):
        receiver.on_fragment(
            frag(ordered=False, sequence=2 * limit + 2, flow_offset=offset, message_length=1, data=b"z")
        )


def test_scattered_tiny_fragments_are_bounded() -> None:
    receiver = MessageReceiver(max_message_size=100_000, receive_window=100_000)
    length = 32 * 100
    limit = length // 32 + 16
    for i in range(limit):
        receiver.on_fragment(frag(message_length=length, offset=2 * i, data=b"q"))
    with pytest.raises(RemoteProtocolError, match="scattered"):
        receiver.on_fragment(frag(message_length=length, offset=2 * limit, data=b"q"))


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_lossy_reordering_duplicating_link_delivers_exactly_once(seed: int) -> None:
    """Thousands of messages through a seeded lossy link: each arrives exactly once, ordered ones in order."""
    rng = random.Random(seed)
    window = 200_000
    sender, receiver = pair(max_message_size=50_000, window=window, send_buffer=100_000)
    to_send = []
    for i in range(3000):
        ordered = rng.random() < 0.5
        size = rng.choice([0, 1, 10, 100, 1500, rng.randint(0, 50_000)])
        to_send.append((ordered, i.to_bytes(4, "big") + os.urandom(size)))
    pending = list(to_send)
    in_flight: list[tuple[int, Fragment]] = []  # (deliver_at_step, fragment)
    got_ordered: list[bytes] = []
    got_unordered: list[bytes] = []
    step = 0
    for step in range(200_000):
        while pending and sender.can_queue(len(pending[0][1])):
            ordered, data = pending.pop(0)
            sender.queue_message(data, ordered)
        for _ in range(rng.randint(0, 8)):
            f = sender.next_fragment(rng.choice([100, 1200, 1400]))
            if f is None:
                break
            in_flight.append((step + rng.randint(1, 20), f))
        due = [x for x in in_flight if x[0] <= step]
        in_flight = [x for x in in_flight if x[0] > step]
        rng.shuffle(due)
        for _, f in due:
            if rng.random() < 0.1:
                sender.on_fragment_lost(f)  # the packet was lost
                continue
            receiver.on_fragment(f)
            if rng.random() < 0.05:
                receiver.on_fragment(f)  # duplicated
            if rng.random() < 0.1:
                sender.on_fragment_lost(f)  # ACK lost: spurious retransmission
            else:
                sender.on_fragment_acked(f)
        for _ in range(rng.randint(0, 5)):
            m = receiver.next_message()
            if m is None:
                break
            # The 4-byte index tells us which message it was.
            idx = int.from_bytes(m[:4], "big")
            assert to_send[idx][1] == m, f"seed={seed}"
            (got_ordered if to_send[idx][0] else got_unordered).append(m)
        assert receiver.held_bytes <= window + MESSAGE_FLOW_COST, f"seed={seed}"
        if receiver.should_send_max_data() and rng.random() < 0.5:
            sender.update_peer_max_data(receiver.max_data)
            receiver.on_max_data_sent()
        if not pending and not in_flight and sender.all_acked() and not receiver.has_message():
            break
        if not sender.has_data_to_send() and not in_flight and not receiver.has_message():
            # Window update was "lost" above: resend it (as the connection does on blocking).
            sender.update_peer_max_data(receiver.max_data)
    else:
        raise AssertionError(f"seed={seed}: did not finish")
    assert got_ordered == [d for o, d in to_send if o], f"seed={seed}"
    assert sorted(got_unordered) == sorted(d for o, d in to_send if not o), f"seed={seed}"
    assert sender.buffered_bytes == 0
