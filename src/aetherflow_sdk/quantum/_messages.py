"""Messages over packets: fragmentation, reassembly, ordered/unordered delivery, flow control.

Sans-I/O. The connection asks ``MessageSender.next_fragment`` for data to put
in a packet, reports each fragment acknowledged or lost, and feeds received
fragments to ``MessageReceiver.on_fragment``.

Numbering. Ordered and unordered messages are numbered separately from 0
(``sequence``). Every message also has a connection-wide ``flow_offset``: the
sum, over all earlier messages of both classes in queue order, of
``length + MESSAGE_FLOW_COST``. So messages occupy disjoint, consecutive
intervals ``[flow_offset, flow_offset + length + MESSAGE_FLOW_COST)`` of one
"flow" line. The fixed charge per message stands for the bookkeeping a held
message costs the receiver beyond its bytes (objects, dict slots); without it a
peer could make the receiver hold millions of tiny or empty messages inside a
small window.

Flow control (whole messages). The receiver advertises
``max_data = consumed + receive_window``, where ``consumed`` is the charged
size (``length + MESSAGE_FLOW_COST``) of the messages the application has
taken. The sender starts sending a message only when all of its bytes fit:
``flow_offset + message_length <= peer max_data``; the receiver rejects a
fragment of a message that does not fit, as a protocol violation.
(Whole-message, rather than per-byte, credit lets the receiver allocate each
reassembly buffer exactly once; the cost is that a message waits until the
whole of it fits. A message larger than the peer's window could never fit, so
``queue_message`` refuses it with MessageTooLarge. The charge is not needed to
fit, so a message of exactly ``receive_window`` bytes is deliverable.)

Memory bound (the proof). Every message the receiver holds -- a partial
reassembly or a complete message not yet taken -- satisfied
``flow_offset + length <= max_data`` when it arrived, and max_data never
shrinks, so its charged interval lies inside ``[0, max_data + MESSAGE_FLOW_COST)``.
Intervals of distinct messages are disjoint, and the messages already consumed
cover exactly ``consumed`` of that line. So the charged size of everything held
is at most ``max_data + MESSAGE_FLOW_COST - consumed = receive_window +
MESSAGE_FLOW_COST``, whatever the order of completion: unordered delivery does
not change the argument, since it only counts positions. A peer that lies
about ``flow_offset`` (overlapping messages) could break the premise, so the
receiver also counts what it holds and treats going past that bound as a
protocol violation; an honest peer can never trigger it. Delivered messages
are remembered compactly (a counter for ordered ones, a RangeSet of sequences
for unordered ones), so late duplicates are dropped in O(log ranges) and never
re-delivered.
"""

from __future__ import annotations

from collections import deque

import attrs

from aetherflow_sdk._errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from aetherflow_sdk.quantum._ranges import RangeSet

MAX_DATA_UPDATE_FRACTION = 4  # advertise a larger max_data once it grew by window/4 (cf. RFC 9000 §4.2)
MIN_PART_BYTES = 32
"""A partial message may hold at most ``length // MIN_PART_BYTES + 16`` disjoint received parts.
Honest fragments are >= 64 bytes (the connection's MIN_FRAGMENT) except a message's or a
retransmitted range's tail, so honest peers stay far below; the bound keeps the bookkeeping
of a reassembly under ~2.5x the message size."""
MESSAGE_FLOW_COST = 64
"""Flow-control charge per message beyond its bytes: about what CPython spends to hold one
small message (a bytes header of 33 bytes plus container slots), so the window bounds
memory even for empty messages."""


@attrs.frozen(kw_only=True, slots=True)
class Fragment:
    """A piece of one message, as carried in a packet."""

    ordered: bool
    """Ordered and unordered messages are numbered separately."""
    sequence: int
    """Message number within its class, from 0, increasing by 1 per message."""
    flow_offset: int
    """Connection-wide flow-control offset of the message's FIRST byte: the sum of
    ``length + MESSAGE_FLOW_COST`` over all earlier messages of both classes, in queue order."""
    message_length: int
    """Total length of the message in bytes."""
    offset: int
    """Where this fragment's data starts within the message."""
    data: bytes
    """The fragment's bytes; empty only for an empty message."""
    channel: int = 0
    """The channel the message belongs to (0: the connection's default channel, see _channels.py)."""


class _Outgoing:
    """Sender-side state of one message until it is fully acknowledged."""

    __slots__ = (
        "acked",
        "acked_bytes",
        "channel",
        "data",
        "done",
        "flow_offset",
        "length",
        "ordered",
        "sent",
        "sequence",
    )

    def __init__(self, data: bytes, ordered: bool, sequence: int, flow_offset: int, channel: int) -> None:
        self.data = data
        self.channel = channel
        self.ordered = ordered
        self.sequence = sequence
        self.flow_offset = flow_offset
        self.length = len(data)
        self.sent = 0  # new-data cursor: bytes [0, sent) have been sent at least once
        self.acked = RangeSet()
        self.acked_bytes = 0
        self.done = False

    def fragment(self, start: int, stop: int) -> Fragment:
        data = self.data
        if start or stop != self.length:
            data = data[start:stop]
        return Fragment(
            ordered=self.ordered,
            sequence=self.sequence,
            flow_offset=self.flow_offset,
            message_length=self.length,
            offset=start,
            data=data,
            channel=self.channel,
        )


class MessageSender:
    """Splits queued messages into fragments, retransmits lost parts, honours the peer's window.

    Interleaving (so that a large message never holds back a small one). A message is
    *admitted* as soon as all of its bytes fit the peer's window; flow offsets grow in
    queue order, so the admitted messages are always a prefix of the queue. Admitted
    messages take turns, one fragment per turn: each unordered message has its own turn,
    and the ordered messages share one turn, oldest first (an ordered message cannot be
    delivered before those queued ahead of it, so splitting their turn would only delay
    the first one). Lost data still goes before any new data.
    """

    def __init__(
        self, *, max_message_size: int, send_buffer: int, initial_peer_max_data: int, channel: int = 0
    ) -> None:
        self.channel = channel
        """The channel whose messages this sender carries (stamped on every fragment)."""
        self.max_message_size = max_message_size
        self.send_buffer = send_buffer
        self._peer_max_data = initial_peer_max_data
        # The peer's window never shrinks: max_data starts at its receive window.
        self._peer_window = initial_peer_max_data
        self._next_sequence = {True: 0, False: 0}
        self._flow_end = 0
        self._new: deque[_Outgoing] = deque()  # queued, not yet admitted (does not fit yet), queue order
        self._turns: deque[_Outgoing] = deque()  # admitted messages with unsent bytes, taking turns
        self._ordered_behind: deque[_Outgoing] = deque()  # admitted ordered ones behind the ordered turn
        self._ordered_in_turns = False  # one ordered message holds the ordered turn
        self._unacked: dict[tuple[bool, int], _Outgoing] = {}
        self._retransmit: deque[tuple[_Outgoing, int, int]] = deque()
        self._buffered = 0
        self._blocked_reported = 0
        self.messages_queued = 0
        """Messages accepted by ``queue_message``."""
        self.bytes_retransmitted = 0
        """Message bytes sent again after a loss."""

    @property
    def buffered_bytes(self) -> int:
        """Queued-but-unsent plus sent-but-unacknowledged message bytes."""
        return self._buffered

    @property
    def peer_max_data(self) -> int:
        """The largest flow offset the peer allows (exclusive)."""
        return self._peer_max_data

    def can_queue(self, size: int) -> bool:
        """Backpressure: True if nothing is buffered, or the message fits in the send buffer."""
        return self._buffered == 0 or self._buffered + size <= self.send_buffer

    def queue_message(self, data: bytes, ordered: bool) -> None:
        """Queue one message. Raises MessageTooLarge if it exceeds the limit or the peer's window."""
        size = len(data)
        if size > self.max_message_size:
            raise MessageTooLarge(
                f"message of {size} bytes exceeds the maximum message size of {self.max_message_size} "
                f"bytes; split it, or raise QuantumConfig.max_message_size on both peers"
            )
        if size > self._peer_window:
            raise MessageTooLarge(
                f"message of {size} bytes exceeds the peer's receive window of {self._peer_window} bytes, "
                f"so it could never be delivered; split it, or raise the peer's receive_window"
            )
        if type(data) is not bytes:
            data = bytes(data)
        sequence = self._next_sequence[ordered]
        self._next_sequence[ordered] = sequence + 1
        msg = _Outgoing(data, ordered, sequence, self._flow_end, self.channel)
        self._flow_end += size + MESSAGE_FLOW_COST
        self._new.append(msg)
        self._unacked[(ordered, sequence)] = msg
        self._buffered += size
        self.messages_queued += 1
        self._admit()

    def _admit(self) -> None:
        """Move the queued messages that now fit the peer's window into the turns."""
        new = self._new
        limit = self._peer_max_data
        while new:
            msg = new[0]
            if msg.flow_offset + msg.length > limit:
                return
            new.popleft()
            if not msg.ordered:
                self._turns.append(msg)
            elif self._ordered_in_turns:
                self._ordered_behind.append(msg)
            else:
                self._turns.append(msg)
                self._ordered_in_turns = True

    def _prune_retransmit(self) -> None:
        queue = self._retransmit
        while queue:
            msg, start, stop = queue[0]
            if msg.done or (msg.length and msg.acked.first_gap(start, stop) is None):
                queue.popleft()
            else:
                return

    def has_data_to_send(self) -> bool:
        """Retransmissions pending, or new data the peer's window allows."""
        self._prune_retransmit()
        return bool(self._retransmit) or bool(self._turns)

    @property
    def blocked_by_flow_control(self) -> bool:
        """There is new data, but the next message does not fit the peer's window."""
        return bool(self._new)  # admission is eager: what is still queued does not fit

    @property
    def blocked_at(self) -> int | None:
        """The peer max_data the next message needs while blocked by flow control, else None.

        Why it matters: the receiver announces a larger max_data only once it grew by a
        quarter window, and it cannot know how much the sender needs. A message that
        needs nearly the whole window can wait behind a small growth that is never
        announced; telling the receiver this value (as QUIC's DATA_BLOCKED frame does,
        RFC 9000 §4.1, §19.12) makes it announce as soon as it can satisfy it
        (``MessageReceiver.on_peer_blocked``).
        """
        if not self._new:
            return None
        msg = self._new[0]
        needed = msg.flow_offset + msg.length
        return needed if needed > self._peer_max_data else None

    def should_send_blocked(self) -> bool:
        """True when ``blocked_at`` is a value not yet reported to the peer."""
        needed = self.blocked_at
        return needed is not None and needed > self._blocked_reported

    def on_blocked_sent(self) -> None:
        """``blocked_at`` was put in a packet (call again for a retransmission if it is lost)."""
        needed = self.blocked_at
        if needed is not None:
            self._blocked_reported = needed

    def on_blocked_lost(self) -> None:
        """The packet reporting ``blocked_at`` was lost: report it again."""
        self._blocked_reported = 0

    def next_fragment(self, max_data_bytes: int) -> Fragment | None:
        """The next fragment to send, with at most ``max_data_bytes`` of data (None: nothing to send).

        Lost data first (skipping parts acknowledged meanwhile), then new data of the
        admitted messages in turn (see the class), never a message that does not fit the
        peer's window.
        """
        if max_data_bytes <= 0:
            return None
        queue = self._retransmit
        while queue:
            msg, start, stop = queue[0]
            if msg.done:
                queue.popleft()
                continue
            if not msg.length:
                queue.popleft()
                return msg.fragment(0, 0)
            gap = msg.acked.first_gap(start, stop)
            if gap is None:
                queue.popleft()
                continue
            end = gap.stop if gap.stop - gap.start <= max_data_bytes else gap.start + max_data_bytes
            if end >= stop:
                queue.popleft()
            else:
                queue[0] = (msg, end, stop)
            self.bytes_retransmitted += end - gap.start
            return msg.fragment(gap.start, end)
        turns = self._turns
        if not turns:
            return None
        msg = turns.popleft()
        start = msg.sent
        end = msg.length if msg.length - start <= max_data_bytes else start + max_data_bytes
        msg.sent = end
        if end < msg.length:
            turns.append(msg)
        elif msg.ordered:
            if self._ordered_behind:
                turns.append(self._ordered_behind.popleft())
            else:
                self._ordered_in_turns = False
        return msg.fragment(start, end)

    def on_fragment_acked(self, fragment: Fragment) -> None:
        """The packet carrying ``fragment`` was acknowledged."""
        key = (fragment.ordered, fragment.sequence)
        msg = self._unacked.get(key)
        if msg is None:
            return
        n = len(fragment.data)
        if n:
            added = msg.acked.add(fragment.offset, fragment.offset + n)
            msg.acked_bytes += added
            self._buffered -= added
            if msg.acked_bytes < msg.length:
                return
        msg.done = True
        msg.data = b""
        del self._unacked[key]

    def on_fragment_lost(self, fragment: Fragment) -> None:
        """The packet carrying ``fragment`` was declared lost: resend what is not acknowledged."""
        msg = self._unacked.get((fragment.ordered, fragment.sequence))
        if msg is None:
            return
        self._retransmit.append((msg, fragment.offset, fragment.offset + len(fragment.data)))

    def update_peer_max_data(self, max_data: int) -> None:
        """The peer advertised a new max_data (smaller values are stale and ignored)."""
        if max_data > self._peer_max_data:
            self._peer_max_data = max_data
            self._admit()

    def all_acked(self) -> bool:
        """Nothing queued and nothing unacknowledged (a graceful close may finish)."""
        return not self._unacked


class _Reassembly:
    """A message being received in several fragments."""

    __slots__ = ("buffer", "flow_offset", "length", "received", "received_bytes")

    def __init__(self, flow_offset: int, length: int) -> None:
        self.flow_offset = flow_offset
        self.length = length
        self.buffer = bytearray(length)  # allocated once; fragments are copied in place
        self.received = RangeSet()
        self.received_bytes = 0


class MessageReceiver:
    """Reassembles fragments into messages and delivers them, ordered or as soon as complete."""

    def __init__(self, *, max_message_size: int, receive_window: int) -> None:
        if receive_window < max_message_size:
            raise LocalProtocolError(
                f"receive_window ({receive_window}) must be >= max_message_size ({max_message_size})"
            )
        self.max_message_size = max_message_size
        self.receive_window = receive_window
        self._consumed = 0
        self._max_data_sent = receive_window  # the initial window is known to the peer
        self._peer_blocked_at = 0
        self._held_bytes = 0
        self._partial: dict[tuple[bool, int], _Reassembly] = {}
        self._ready_unordered: deque[bytes] = deque()
        self._ready_ordered: dict[int, bytes] = {}
        self._next_ordered = 0
        self._done_unordered = RangeSet()  # unordered sequences complete (ready or delivered)
        # Each gap in _done_unordered is a message not yet arrived; an honest peer's missing
        # messages lie inside the window and are charged MESSAGE_FLOW_COST each, so there are
        # at most (window + cost) / cost of them. More means the peer skips sequence numbers.
        self._max_unordered_gaps = receive_window // MESSAGE_FLOW_COST + 2
        self.duplicates = 0
        """Fragments dropped because their message was already complete or the bytes already held."""
        self.messages_delivered = 0
        """Messages handed to the application."""

    @property
    def max_data(self) -> int:
        """What to advertise: consumed bytes + receive window."""
        return self._consumed + self.receive_window

    @property
    def held_bytes(self) -> int:
        """Charged size (length + MESSAGE_FLOW_COST) of partial and complete messages not yet taken.

        Never more than ``receive_window + MESSAGE_FLOW_COST`` (see the module docstring)."""
        return self._held_bytes

    def should_send_max_data(self) -> bool:
        """True when max_data grew by at least a quarter window since last marked sent, or when it
        now satisfies what the peer said it is blocked at (``on_peer_blocked``)."""
        max_data = self._consumed + self.receive_window
        sent = self._max_data_sent
        if max_data - sent >= self.receive_window // MAX_DATA_UPDATE_FRACTION:
            return True
        return sent < self._peer_blocked_at <= max_data

    def max_data_update_available(self) -> bool:
        """max_data grew at all since last sent: worth adding to a packet that is sent anyway."""
        return self._consumed + self.receive_window > self._max_data_sent

    def on_peer_blocked(self, needed_max_data: int) -> None:
        """The peer reports that its next message needs ``needed_max_data`` (its ``blocked_at``)."""
        if needed_max_data > self._peer_blocked_at:
            self._peer_blocked_at = needed_max_data

    def on_max_data_sent(self) -> None:
        """The current max_data was put in a packet."""
        self._max_data_sent = self.max_data

    def _violation(self, fragment: Fragment, what: str) -> RemoteProtocolError:
        kind = "ordered" if fragment.ordered else "unordered"
        return RemoteProtocolError(
            f"peer broke the message protocol: {what} ({kind} message {fragment.sequence}, "
            f"flow_offset={fragment.flow_offset}, length={fragment.message_length}, "
            f"fragment offset={fragment.offset}, {len(fragment.data)} bytes)"
        )

    def on_fragment(self, fragment: Fragment) -> None:
        """Accept one fragment. Raises RemoteProtocolError if the peer broke the rules."""
        ordered = fragment.ordered
        sequence = fragment.sequence
        length = fragment.message_length
        data = fragment.data
        offset = fragment.offset
        n = len(data)
        if length > self.max_message_size:
            raise self._violation(fragment, f"message longer than the maximum {self.max_message_size}")
        if sequence < 0 or offset < 0 or fragment.flow_offset < 0:
            raise self._violation(fragment, "negative sequence or offset")
        if offset + n > length or (n == 0 and length != 0):
            raise self._violation(fragment, "fragment data outside the message")
        if fragment.flow_offset + length > self._consumed + self.receive_window:
            raise self._violation(fragment, f"message beyond the advertised max_data {self.max_data}")
        # Already complete (delivered or waiting)? Drop cheaply.
        if ordered:
            if sequence < self._next_ordered or sequence in self._ready_ordered:
                self.duplicates += 1
                return
        elif sequence in self._done_unordered:
            self.duplicates += 1
            return
        key = (ordered, sequence)
        partial = self._partial.get(key)
        if partial is None:
            if self._held_bytes + length > self.receive_window:
                raise self._violation(
                    fragment, f"overlapping messages: more than the receive window {self.receive_window} held"
                )
            if not ordered and len(self._done_unordered) > self._max_unordered_gaps:
                raise self._violation(fragment, "unordered sequence numbers skipped beyond the window")
            self._held_bytes += length + MESSAGE_FLOW_COST
            if n == length:
                # Fast path: the whole message in one fragment, no copy.
                self._complete(ordered, sequence, data)
                return
            partial = _Reassembly(fragment.flow_offset, length)
            self._partial[key] = partial
        elif partial.length != length or partial.flow_offset != fragment.flow_offset:
            raise self._violation(
                fragment,
                f"inconsistent with an earlier fragment (length {partial.length}, "
                f"flow_offset {partial.flow_offset})",
            )
        added = partial.received.add(offset, offset + n)
        if not added:
            self.duplicates += 1
            return
        if len(partial.received) > length // MIN_PART_BYTES + 16:
            # Each disjoint received part costs ~70 bytes of bookkeeping; a peer scattering
            # tiny fragments could otherwise make that dwarf the message itself.
            raise self._violation(fragment, "message scattered into too many tiny disjoint fragments")
        partial.buffer[offset : offset + n] = data
        partial.received_bytes += added
        if partial.received_bytes == length:
            del self._partial[key]
            self._complete(ordered, sequence, bytes(partial.buffer))

    def _complete(self, ordered: bool, sequence: int, message: bytes) -> None:
        if ordered:
            self._ready_ordered[sequence] = message
        else:
            self._done_unordered.add(sequence)
            self._ready_unordered.append(message)

    def has_message(self) -> bool:
        """A message is ready for ``next_message``."""
        return bool(self._ready_unordered) or self._next_ordered in self._ready_ordered

    def next_message(self) -> bytes | None:
        """Take the next deliverable message (this frees window), or None.

        Unordered messages come first, as soon as complete; ordered ones only in order.
        """
        if self._ready_unordered:
            message = self._ready_unordered.popleft()
        else:
            message_or_none = self._ready_ordered.pop(self._next_ordered, None)
            if message_or_none is None:
                return None
            message = message_or_none
            self._next_ordered += 1
        charged = len(message) + MESSAGE_FLOW_COST
        self._held_bytes -= charged
        self._consumed += charged
        self.messages_delivered += 1
        return message
