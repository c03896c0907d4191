"""Channels: many independent message channels on one Quantum connection (sans-I/O).

A channel is a reliable, ordered-or-unordered message stream plus unreliable datagrams,
with its own 32-bit ID on the wire, its own message numbering and its own flow-control
window. Channel 0 is the connection itself: its messages use the MESSAGE, DATAGRAM,
MAX_DATA and BLOCKED frames exactly as before channels existed. Every other channel is
opened by name (bytes, e.g. a document's keyed hash) with CHANNEL_OPEN, and the peer
answers CHANNEL_ACCEPT or CHANNEL_REFUSE. The frames are in docs/protocol.md.

Rules (everything that changes a channel's state goes through :func:`transition`):

1. IDs. The client opens odd IDs (1, 3, 5 ...), the server even ones (2, 4, 6 ...), each
   side in increasing order, never reusing one, so a late frame for a closed channel can
   never be taken for a newer channel.
2. Unknown and closed channels. A frame naming a channel that was opened and has since
   closed (or was refused) is dropped and counted (``channel_frames_dropped``): such frames
   are legitimate stragglers after a close. A frame naming an ID that was never opened,
   or a CHANNEL_OPEN with this side's parity, is a protocol violation that closes the
   connection: no honest peer sends one.
3. Opening. The opener sends no message on a channel before it is accepted. The acceptor
   may send as soon as it accepted; a message or datagram that reaches the opener before
   the (lost or late) ACCEPT accepts the channel implicitly.
4. Closing. ``close`` sends CHANNEL_CLOSE only once every message this side sent on the
   channel is acknowledged (so what was sent is delivered first), then forgets the
   channel. The peer, on CHANNEL_CLOSE, discards what it still had to send, delivers what it
   holds, then reports the channel closed. Control frames are retransmitted when lost.
5. Limit. At most ``QuantumConfig.max_channels`` channels (both directions, channel 0
   not counted) are open at once; an OPEN past it is refused with a reason.
6. Fairness. Channels with data take turns, one fragment each (a round robin over the
   channels that have something to send), and within a channel messages take turns too
   (``MessageSender``), so a large message delays a small one on another channel by at
   most one packet.
7. Flow control is per channel: each channel has its own receive window, so a channel
   whose reader does not read fills only its own window and stops only its own sender;
   every other channel (and channel 0) keeps its full window. The memory a peer can make
   this side hold is therefore ``(1 + max_channels) x (receive_window + 64)`` bytes per
   connection; lower ``receive_window`` or ``max_channels`` to bound it tighter.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs

from aetherflow_sdk._errors import (
    AetherFlowError,
    ChannelRefused,
    ClosedByPeer,
    ClosedLocally,
    ConnectionClosed,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
)
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._messages import Fragment, MessageReceiver, MessageSender
from aetherflow_sdk.quantum._ranges import RangeSet
from aetherflow_sdk.quantum._stats import ConnectionCounters
from aetherflow_sdk.quantum._wire import (
    AEAD_TAG_SIZE,
    CHANNEL_DATAGRAM_OVERHEAD,
    HEADER_SIZE,
    MAX_CHANNEL_ID,
    MAX_CHANNEL_NAME,
    BlockedFrame,
    ChannelAcceptFrame,
    ChannelCloseFrame,
    ChannelOpenFrame,
    ChannelRefuseFrame,
    DatagramFrame,
    FrameType,
    MaxDataFrame,
    encode_channel_accept,
    encode_channel_close,
    encode_channel_datagram,
    encode_channel_open,
    encode_channel_refuse,
    encode_channel_value,
)

ChannelFilter = Callable[[bytes, bytes], bool]
"""``(peer_id, name) -> accept?`` for each channel the peer opens."""

DATAGRAM_QUEUE: Final = 256  # received datagrams held per channel; the oldest dropped past this
MAX_PENDING_CONTROL: Final = 4096  # queued channel control frames; a peer opening faster is hostile
MAX_ID_RANGES: Final = 1024  # disjoint runs of peer channel IDs remembered (IDs must come nearly in order


class ChannelState(enum.Enum):
    OPENING = "opening"  # we sent CHANNEL_OPEN, waiting for ACCEPT or REFUSE
    OPEN = "open"
    CLOSING = "closing"  # closed by this side; waiting for our messages to be acknowledged
    PEER_CLOSED = "peer_closed"  # the peer closed it; what it sent can still be received
    CLOSED = "closed"


class ChannelEvent(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    LOCAL_CLOSE = "local_close"
    ALL_ACKED = "all_acked"
    PEER_CLOSE = "peer_close"


S = ChannelState
E = ChannelEvent

TRANSITIONS: dict[tuple[ChannelState, ChannelEvent], ChannelState] = {
    (S.OPENING, E.ACCEPTED): S.OPEN,
    (S.OPENING, E.REFUSED): S.CLOSED,
    (S.OPENING, E.PEER_CLOSE): S.CLOSED,
    (S.OPENING, E.LOCAL_CLOSE): S.CLOSED,  # CLOSE tells a peer that accepted meanwhile
    (S.OPEN, E.LOCAL_CLOSE): S.CLOSING,
    (S.OPEN, E.PEER_CLOSE): S.PEER_CLOSED,
    (S.CLOSING, E.LOCAL_CLOSE): S.CLOSING,
    (S.CLOSING, E.ALL_ACKED): S.CLOSED,
    (S.CLOSING, E.PEER_CLOSE): S.CLOSED,
    (S.PEER_CLOSED, E.LOCAL_CLOSE): S.CLOSED,  # the peer forgot it already: nothing to send
    (S.PEER_CLOSED, E.PEER_CLOSE): S.PEER_CLOSED,
    (S.CLOSED, E.LOCAL_CLOSE): S.CLOSED,
}
LIVE: Final = frozenset({S.OPENING, S.OPEN, S.CLOSING, S.PEER_CLOSED})


def transition(state: ChannelState, event: ChannelEvent) -> ChannelState:
    """The state after ``event``; LocalProtocolError if the table has no such move."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"channel cannot handle event {event.value!r} in state {state.value!r}"
        ) from None


class RefuseCode(enum.IntEnum):
    REFUSED = 1  # the channel filter said no (e.g. a document this node does not hold)
    LIMIT = 2  # QuantumConfig.max_channels channels are open
    CLOSING = 3  # the connection is closing


@attrs.frozen(kw_only=True, slots=True)
class ChannelControl:
    """A channel control frame carried by a sent packet (queued again if the packet is lost)."""

    kind: FrameType
    channel: int
    code: int = 0
    reason: str = ""


class ChannelCore:
    """The state of one channel (the application's handle is ``quantum.Channel``)."""

    __slots__ = (
        "blocked_queued",
        "channel_id",
        "datagrams_in",
        "error",
        "in_ring",
        "max_data_queued",
        "name",
        "receiver",
        "sender",
        "state",
    )

    def __init__(
        self,
        channel_id: int,
        name: bytes,
        state: ChannelState,
        sender: MessageSender,
        receiver: MessageReceiver,
    ) -> None:
        self.channel_id = channel_id
        self.name = name
        self.state = state
        self.sender = sender
        self.receiver = receiver
        self.datagrams_in: deque[bytes] = deque()
        self.error: ConnectionClosed | ChannelRefused | None = None
        self.in_ring = False  # in the round robin of channels that may have data to send
        self.max_data_queued = False
        self.blocked_queued = False

    def _apply(self, event: ChannelEvent) -> None:
        self.state = transition(self.state, event)


class Channels:
    """Every channel of one connection: IDs, opening and refusing, the round robin, control frames."""

    def __init__(
        self,
        *,
        config: QuantumConfig,
        is_client: bool,
        stats: ConnectionCounters,
        datagrams_out: deque[bytes],
        channel_filter: ChannelFilter | None = None,
    ) -> None:
        self.config = config
        self.channel_filter = channel_filter
        self._stats = stats
        self._datagrams_out = datagrams_out  # the connection's queue of encoded datagram frames
        self._next_local = 1 if is_client else 2
        self._peer_parity = 0 if is_client else 1
        self._peer_seen = RangeSet()  # peer channel IDs (as id >> 1) that were ever opened
        self._live: dict[int, ChannelCore] = {}
        self._ring: deque[ChannelCore] = deque()
        self._control: deque[ChannelControl] = deque()
        self._max_message_size = config.max_message_size
        self._peer_window = 0
        self.default: ChannelCore | None = None  # channel 0, bound once the handshake is done
        self.accepted: deque[ChannelCore] = deque()
        """Channels the peer opened and the filter accepted, not yet taken by ``accept_channel``."""
        self.opened = 0
        self.refused = 0
        self.frames_dropped = 0

    # ------------------------------------------------------------------ set-up

    def bind_default(
        self, sender: MessageSender, receiver: MessageReceiver, max_message_size: int, peer_window: int
    ) -> None:
        """Channel 0 is the connection's own sender and receiver (bound after the handshake).

        It stays in the round robin for good (it is never pruned), so the connection's own
        send paths need not wake it."""
        default = ChannelCore(0, b"", S.OPEN, sender, receiver)
        if self.default is not None:
            self._ring.remove(self.default)
        self.default = default
        self._max_message_size = max_message_size
        self._peer_window = peer_window
        default.in_ring = True
        self._ring.appendleft(default)

    @property
    def open_count(self) -> int:
        """Live channels besides channel 0."""
        return len(self._live)

    def _new_core(self, channel_id: int, name: bytes, state: ChannelState) -> ChannelCore:
        sender = MessageSender(
            max_message_size=self._max_message_size,
            send_buffer=self.config.send_buffer,
            initial_peer_max_data=self._peer_window,
            channel=channel_id,
        )
        receiver = MessageReceiver(
            max_message_size=self.config.max_message_size, receive_window=self.config.receive_window
        )
        core = ChannelCore(channel_id, name, state, sender, receiver)
        self._live[channel_id] = core
        return core

    # ------------------------------------------------------------------ application calls

    def open(self, name: bytes) -> ChannelCore:
        """Open a channel named ``name``: CHANNEL_OPEN is queued; the state is OPENING."""
        if type(name) is not bytes or not 1 <= len(name) <= MAX_CHANNEL_NAME:
            raise LocalProtocolError(
                f"a channel name must be 1 to {MAX_CHANNEL_NAME} bytes, got {type(name).__name__} "
                f"of length {len(name) if isinstance(name, bytes | bytearray) else '?'}"
            )
        if self.default is None:
            raise LocalProtocolError("open_channel() before the handshake completed")
        if len(self._live) >= self.config.max_channels:
            raise ChannelRefused(
                f"cannot open channel {name!r}: this side already has {len(self._live)} channels open on "
                f"this connection (QuantumConfig.max_channels={self.config.max_channels}); close one first",
                reason="local channel limit reached",
            )
        channel_id = self._next_local
        if channel_id > MAX_CHANNEL_ID:
            raise LocalProtocolError("this connection used up its channel IDs; open a new connection")
        self._next_local += 2
        core = self._new_core(channel_id, name, S.OPENING)
        self._queue(ChannelControl(kind=FrameType.CHANNEL_OPEN, channel=channel_id))
        self.opened += 1
        return core

    def check_can_send(self, core: ChannelCore) -> None:
        """Raise the channel's error unless messages may be queued on it now."""
        if core.state is S.OPEN:
            return
        raise self.error_of(core)

    def error_of(self, core: ChannelCore) -> AetherFlowError:
        """A fresh copy of why the channel is not usable (now)."""
        error = core.error
        if error is None:
            if core.state is S.PEER_CLOSED:
                return ClosedByPeer(f"the peer closed channel {core.name!r}")
            if core.state is S.OPENING:
                return LocalProtocolError("the channel is still opening: wait for open_channel()")
            return ClosedLocally(f"channel {core.name!r} was closed by this side")
        if isinstance(error, ChannelRefused):
            return ChannelRefused(str(error), reason=error.reason)
        return type(error)(str(error), error_code=error.error_code, reason=error.reason)

    def send_message(self, core: ChannelCore, data: bytes, ordered: bool) -> None:
        self.check_can_send(core)
        core.sender.queue_message(data, ordered)
        self._stats.messages_sent += 1
        self._stats.app_bytes_sent += len(data)
        self.wake(core)

    def receive_message(self, core: ChannelCore) -> bytes | None:
        message = core.receiver.next_message()
        if message is not None:
            self._stats.messages_received += 1
            self._stats.app_bytes_received += len(message)
            if core.receiver.should_send_max_data() and not core.max_data_queued and core.state in LIVE:
                core.max_data_queued = True
                self._queue(ChannelControl(kind=FrameType.CHANNEL_MAX_DATA, channel=core.channel_id))
        return message

    def send_datagram(self, core: ChannelCore, data: bytes, packet_size: int) -> None:
        """Queue a CHANNEL_DATAGRAM; ``packet_size`` is the current path's largest packet."""
        self.check_can_send(core)
        room = packet_size - HEADER_SIZE - AEAD_TAG_SIZE - CHANNEL_DATAGRAM_OVERHEAD
        if len(data) > room:
            raise MessageTooLarge(
                f"datagram of {len(data)} bytes exceeds the {room}-byte limit of one packet"
            )
        if len(self._datagrams_out) >= DATAGRAM_QUEUE:
            self._datagrams_out.popleft()
            self._stats.unreliable_dropped += 1
        self._datagrams_out.append(encode_channel_datagram(core.channel_id, bytes(data)))

    def close(self, core: ChannelCore) -> None:
        """Close ``core`` gracefully (rule 4); idempotent."""
        before = core.state
        if before is S.CLOSED:
            return
        core._apply(E.LOCAL_CLOSE)
        if before is S.OPENING:
            core.error = ClosedLocally(f"channel {core.name!r} was closed by this side while opening")
            self._queue(ChannelControl(kind=FrameType.CHANNEL_CLOSE, channel=core.channel_id))
            self._forget(core)
        elif before is S.PEER_CLOSED:
            self._forget(core)
        else:
            self._maybe_finish_close(core)

    def _maybe_finish_close(self, core: ChannelCore) -> None:
        if core.state is S.CLOSING and core.sender.all_acked():
            core._apply(E.ALL_ACKED)
            if core.error is None:
                core.error = ClosedLocally(f"channel {core.name!r} was closed by this side")
            self._queue(ChannelControl(kind=FrameType.CHANNEL_CLOSE, channel=core.channel_id))
            self._forget(core)

    def _forget(self, core: ChannelCore) -> None:
        core.state = S.CLOSED
        self._live.pop(core.channel_id, None)
        core.datagrams_in.clear()

    def all_acked(self) -> bool:
        """Every channel's messages are acknowledged (a graceful connection close may finish)."""
        return all(core.sender.all_acked() for core in self._live.values())

    # ------------------------------------------------------------------ the round robin

    def wake(self, core: ChannelCore) -> None:
        """``core`` may have something to send: give it a turn."""
        if not core.in_ring:
            core.in_ring = True
            self._ring.append(core)

    def has_data_to_send(self) -> bool:
        """Some channel (0 included) has a fragment to send; prunes channels that have none."""
        ring = self._ring
        default = self.default
        for _ in range(len(ring)):
            core = ring[0]
            if core.sender.has_data_to_send() and core.state in LIVE:
                return True
            ring.popleft()
            if core is default:
                ring.append(core)  # channel 0 keeps its place in the ring
            else:
                core.in_ring = False
                self._note_blocked(core)
        return False

    def next_fragment(self, budget: int, overhead: int, channel_overhead: int) -> Fragment | None:
        """The next fragment in turn; at most ``budget`` bytes including its frame head."""
        ring = self._ring
        for _ in range(len(ring)):
            core = ring.popleft()
            fragment = None
            if core.state in LIVE:
                room = budget - (channel_overhead if core.channel_id else overhead)
                fragment = core.sender.next_fragment(room)
            if core is self.default or (core.state in LIVE and core.sender.has_data_to_send()):
                ring.append(core)
            else:
                core.in_ring = False
                self._note_blocked(core)
            if fragment is not None:
                return fragment
        return None

    def _note_blocked(self, core: ChannelCore) -> None:
        if core.channel_id and not core.blocked_queued and core.sender.should_send_blocked():
            core.blocked_queued = True
            self._queue(ChannelControl(kind=FrameType.CHANNEL_BLOCKED, channel=core.channel_id))

    def on_fragment_acked(self, fragment: Fragment) -> None:
        core = self._live.get(fragment.channel)
        if core is not None:
            core.sender.on_fragment_acked(fragment)
            if core.state is S.CLOSING:
                self._maybe_finish_close(core)

    def on_fragment_lost(self, fragment: Fragment) -> None:
        core = self._live.get(fragment.channel) if fragment.channel else self.default
        if core is not None:
            core.sender.on_fragment_lost(fragment)
            if core.channel_id:
                self.wake(core)

    # ------------------------------------------------------------------ control frames out

    def _queue(self, item: ChannelControl) -> None:
        self._control.append(item)

    def has_control(self) -> bool:
        return bool(self._control)

    def write_control(self, parts: list[bytes], retransmittable: list[object], budget: int) -> int:
        """Put queued control frames that fit into ``parts``; return the budget left."""
        control = self._control
        while control:
            item = control[0]
            frame = self._encode(item)
            if frame is None:
                control.popleft()
                continue
            if len(frame) > budget:
                break
            control.popleft()
            parts.append(frame)
            retransmittable.append(item)
            budget -= len(frame)
        return budget

    def _encode(self, item: ChannelControl) -> bytes | None:
        kind = item.kind
        core = self._live.get(item.channel)
        if kind is FrameType.CHANNEL_OPEN:
            return (
                None
                if core is None or core.state is not S.OPENING
                else encode_channel_open(item.channel, core.name)
            )
        if kind is FrameType.CHANNEL_ACCEPT:
            return None if core is None else encode_channel_accept(item.channel)
        if kind is FrameType.CHANNEL_REFUSE:
            return encode_channel_refuse(item.channel, item.code, item.reason)
        if kind is FrameType.CHANNEL_CLOSE:
            return encode_channel_close(item.channel)
        if core is None:
            return None
        if kind is FrameType.CHANNEL_MAX_DATA:
            core.max_data_queued = False
            core.receiver.on_max_data_sent()
            return encode_channel_value(kind, item.channel, core.receiver.max_data)
        # CHANNEL_BLOCKED
        core.blocked_queued = False
        needed = core.sender.blocked_at
        if needed is None or not core.sender.should_send_blocked():
            return None
        core.sender.on_blocked_sent()
        return encode_channel_value(kind, item.channel, needed)

    def on_control_lost(self, item: ChannelControl) -> None:
        """The packet carrying ``item`` was lost: send it again if it still matters."""
        core = self._live.get(item.channel)
        kind = item.kind
        if kind is FrameType.CHANNEL_REFUSE or kind is FrameType.CHANNEL_CLOSE:
            self._queue(item)
        elif core is None:
            return
        elif kind is FrameType.CHANNEL_MAX_DATA:
            if not core.max_data_queued:
                core.max_data_queued = True
                self._queue(item)
        elif kind is FrameType.CHANNEL_BLOCKED:
            core.sender.on_blocked_lost()
            self._note_blocked(core)
        else:
            self._queue(item)

    # ------------------------------------------------------------------ frames in

    def _lookup(self, channel: int, what: str) -> ChannelCore | None:
        """The live channel ``channel``; None (counted) if it is closed; a violation if never opened."""
        core = self._live.get(channel)
        if core is not None:
            return core
        if (channel & 1) == self._peer_parity:
            ever = (channel >> 1) in self._peer_seen
        else:
            ever = channel < self._next_local
        if not ever:
            raise RemoteProtocolError(f"{what} for channel {channel}, which was never opened")
        self.frames_dropped += 1
        return None

    def on_fragment(self, fragment: Fragment) -> None:
        """A message fragment for channel ``fragment.channel`` (not 0). Raises RemoteProtocolError."""
        core = self._lookup(fragment.channel, "CHANNEL_MESSAGE")
        if core is None:
            return
        if core.state is S.OPENING:
            core._apply(E.ACCEPTED)  # rule 3: data implies the (late) ACCEPT
        elif core.state is S.CLOSING:
            self.frames_dropped += 1  # this side is done with the channel; nobody reads it
            return
        core.receiver.on_fragment(fragment)

    def on_frame(self, frame: object, peer_id: bytes, accepting: bool) -> None:
        """A channel control frame, or a DATAGRAM/MAX_DATA/BLOCKED frame of a channel other than 0.

        ``accepting``: the connection still takes new work (not closing). Raises
        RemoteProtocolError when the peer broke the rules (the connection is then closed)."""
        if isinstance(frame, DatagramFrame):
            core = self._lookup(frame.channel, "CHANNEL_DATAGRAM")
            if core is None or core.state is S.CLOSING:
                return
            if core.state is S.OPENING:
                core._apply(E.ACCEPTED)
            if len(core.datagrams_in) >= DATAGRAM_QUEUE:
                core.datagrams_in.popleft()
                self._stats.unreliable_dropped += 1
            core.datagrams_in.append(frame.data)
            self._stats.unreliable_received += 1
        elif isinstance(frame, MaxDataFrame):
            core = self._lookup(frame.channel, "CHANNEL_MAX_DATA")
            if core is not None:
                core.sender.update_peer_max_data(frame.max_data)
                self.wake(core)
        elif isinstance(frame, BlockedFrame):
            core = self._lookup(frame.channel, "CHANNEL_BLOCKED")
            if core is not None:
                core.receiver.on_peer_blocked(frame.needed_max_data)
                if core.receiver.should_send_max_data() and not core.max_data_queued:
                    core.max_data_queued = True
                    self._queue(ChannelControl(kind=FrameType.CHANNEL_MAX_DATA, channel=core.channel_id))
        elif isinstance(frame, ChannelOpenFrame):
            self._on_open(frame, peer_id, accepting)
        elif isinstance(frame, ChannelAcceptFrame):
            core = self._lookup_own(frame.channel, "CHANNEL_ACCEPT")
            if core is not None and core.state is S.OPENING:
                core._apply(E.ACCEPTED)
        elif isinstance(frame, ChannelRefuseFrame):
            core = self._lookup_own(frame.channel, "CHANNEL_REFUSE")
            if core is not None and core.state is S.OPENING:
                core._apply(E.REFUSED)
                reason = frame.reason or "no reason given"
                core.error = ChannelRefused(
                    f"the peer refused channel {core.name!r}: {reason}", reason=reason
                )
                self.refused += 1
                self._forget(core)
        elif isinstance(frame, ChannelCloseFrame):
            self._on_close(frame)

    def _lookup_own(self, channel: int, what: str) -> ChannelCore | None:
        if (channel & 1) == self._peer_parity:
            raise RemoteProtocolError(f"{what} for channel {channel}, which the peer itself opened")
        return self._lookup(channel, what)

    def _on_open(self, frame: ChannelOpenFrame, peer_id: bytes, accepting: bool) -> None:
        channel = frame.channel
        if (channel & 1) != self._peer_parity:
            raise RemoteProtocolError(f"CHANNEL_OPEN for channel {channel}, an ID of this side's parity")
        index = channel >> 1
        if index in self._peer_seen:
            self.frames_dropped += 1  # a retransmitted OPEN: answered already
            return
        self._peer_seen.add(index)
        if len(self._peer_seen) > MAX_ID_RANGES:
            raise RemoteProtocolError("channel IDs skipped far out of order")
        if len(self._control) >= MAX_PENDING_CONTROL:
            raise RemoteProtocolError("channels opened faster than their answers can be sent")
        if not accepting:
            self._refuse(channel, RefuseCode.CLOSING, "the connection is closing")
            return
        if len(self._live) >= self.config.max_channels:
            self._refuse(
                channel,
                RefuseCode.LIMIT,
                f"too many channels open on this connection (limit {self.config.max_channels})",
            )
            return
        try:
            accept = True if self.channel_filter is None else bool(self.channel_filter(peer_id, frame.name))
        except Exception as exc:  # an application callback: its failure refuses, it never kills us
            self._refuse(channel, RefuseCode.REFUSED, f"the channel filter failed ({type(exc).__name__})")
            return
        if not accept:
            self._refuse(
                channel, RefuseCode.REFUSED, "unknown channel name (refused by the peer's channel filter)"
            )
            return
        core = self._new_core(channel, frame.name, S.OPEN)
        self.accepted.append(core)
        self._queue(ChannelControl(kind=FrameType.CHANNEL_ACCEPT, channel=channel))

    def _refuse(self, channel: int, code: RefuseCode, reason: str) -> None:
        self.refused += 1
        self._queue(ChannelControl(kind=FrameType.CHANNEL_REFUSE, channel=channel, code=code, reason=reason))

    def _on_close(self, frame: ChannelCloseFrame) -> None:
        core = self._lookup(frame.channel, "CHANNEL_CLOSE")
        if core is None:
            return
        before = core.state
        core._apply(E.PEER_CLOSE)
        # Rule 4: what this side still had to send on it is discarded.
        core.sender = MessageSender(
            max_message_size=1, send_buffer=1, initial_peer_max_data=0, channel=core.channel_id
        )
        if before is S.OPENING:
            core.error = ClosedByPeer(f"the peer closed channel {core.name!r} while it was opening")
        if core.state is S.CLOSED:
            self._forget(core)

    # ------------------------------------------------------------------ statistics

    def statistics_fields(self) -> dict[str, int]:
        return {
            "channels_open": len(self._live),
            "channels_opened": self.opened,
            "channels_refused": self.refused,
            "channel_frames_dropped": self.frames_dropped,
        }
