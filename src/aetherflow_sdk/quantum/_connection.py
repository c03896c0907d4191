"""The sans-I/O Quantum connection.

Feed it datagrams with :meth:`QuantumConnection.receive_datagram` and timer
expiries with :meth:`handle_timer`; take what it wants sent from
:meth:`datagrams_to_send` and when it next wants the clock from
:meth:`get_timer`. It never reads a clock and never touches a socket, so every
retransmission, timer and congestion decision can be replayed on a virtual
clock (the model is aioquic's ``QuicConnection``).

Inside, it plugs together:

* the handshake (``_handshake``), then per-direction AEAD (``_crypto``);
* packet building (``_output``, a mixin: what goes into the next packet, and when);
* the message layer (``_messages``): fragmentation, ordered/unordered
  delivery, flow control;
* loss recovery (``_recovery``) with the RFC 6298 estimator (``_rtt``),
  a congestion controller (``_congestion``) and a pacer (``_pacer``);
* forward error correction (``_fec_path``: Reed–Solomon parity, adaptive per direction);
* paths (``_paths``, a mixin): packets are matched by connection ID, not by address; a
  new path (NAT rebinding, migration, a relay) is validated before traffic moves to it.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs

from aetherflow_sdk._errors import (
    BadPacket,
    ClosedByPeer,
    ClosedByProtocolViolation,
    ClosedLocally,
    ConnectionClosed,
    ConnectionTimeout,
    HandshakeFailed,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
)
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum import _congestion
from aetherflow_sdk.quantum._channels import ChannelFilter, Channels
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._crypto import PacketProtection
from aetherflow_sdk.quantum._fec_path import FecPath
from aetherflow_sdk.quantum._handshake import (
    ClientHandshake,
    HandshakeResult,
    InitialMessage,
    ServerHandshake,
    TransportParameters,
)
from aetherflow_sdk.quantum._messages import Fragment, MessageReceiver, MessageSender
from aetherflow_sdk.quantum._output import Address, PacketOutput
from aetherflow_sdk.quantum._pacer import Pacer
from aetherflow_sdk.quantum._paths import Path, PathControl, PathMigrationFailed
from aetherflow_sdk.quantum._ranges import RangeSet
from aetherflow_sdk.quantum._recovery import LossRecovery
from aetherflow_sdk.quantum._rtt import RttEstimator
from aetherflow_sdk.quantum._states import (
    ACCEPTS_NEW_MESSAGES,
    CAN_SEND_DATA,
    HANDSHAKING,
    OPEN,
    ConnectionEvent,
    ConnectionState,
    transition,
)
from aetherflow_sdk.quantum._stats import ConnectionCounters, ConnectionStatistics, connection_statistics
from aetherflow_sdk.quantum._wire import (
    AEAD_TAG_SIZE,
    CHANNEL_CONTROL_FRAMES,
    HEADER_SIZE,
    AckFrame,
    BlockedFrame,
    CloseCode,
    CloseFrame,
    DatagramFrame,
    FecReportFrame,
    HandshakeDoneFrame,
    Header,
    HeaderFlags,
    MaxDataFrame,
    PacketType,
    PathChallengeFrame,
    PathResponseFrame,
    encode_close,
    encode_datagram,
    parse_frames_untrusted,
    parse_header_untrusted,
)

HANDSHAKE_MAX_INTERVAL: Final = 1.0  # seconds between handshake retransmissions, at most
HANDSHAKE_RETRANSMIT_FACTOR: Final = 2.0  # first handshake resend after 2 x initial RTT, then doubling
DATAGRAM_QUEUE: Final = 256  # unreliable datagrams held per direction; oldest dropped past this
DRAIN_RTOS: Final = 3  # RFC 9000 §10.2: closing/draining lasts three PTOs
_FEC_PROTECTED: Final = int(HeaderFlags.FEC_PROTECTED)  # a plain int: IntFlag's & is slow per packet
# Frames that name a channel; those of channel 0 (DATAGRAM, MAX_DATA, BLOCKED) are handled here.
_CHANNEL_FRAMES: Final = (DatagramFrame, MaxDataFrame, BlockedFrame, *CHANNEL_CONTROL_FRAMES)


@attrs.frozen(kw_only=True)
class HandshakeCompleted:
    """The handshake finished; ``peer_id`` is the peer's authenticated node ID."""

    peer_id: bytes


@attrs.frozen(kw_only=True)
class ConnectionTerminated:
    """The connection is closed; ``error`` says how."""

    error: ConnectionClosed


@attrs.frozen(kw_only=True)
class PathMigrated:
    """The peer's packets now come from ``address`` (NAT rebinding or migration)."""

    address: Address
    validated: bool


Event = HandshakeCompleted | ConnectionTerminated | PathMigrated | PathMigrationFailed


class QuantumConnection(PacketOutput, PathControl):
    """One Quantum connection, client or server side, as a pure state machine."""

    def __init__(
        self,
        *,
        config: QuantumConfig,
        identity: Identity,
        local_cid: bytes,
        peer_address: Address,
        now: float,
        pinned_peer_id: bytes | None = None,
        initial: InitialMessage | None = None,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        channel_filter: ChannelFilter | None = None,
        path: Path | None = None,
    ) -> None:
        self.config = config
        # Unpredictable bytes (path-challenge tokens); seeded in virtual-network runs to replay.
        self._random_bytes = random_bytes or os.urandom
        self.is_client = initial is None
        self.local_cid = local_cid
        self.peer_id: bytes | None = None
        self.state = ConnectionState.INITIAL_SENT if self.is_client else ConnectionState.HELLO_SENT
        self.error: ConnectionClosed | None = None
        self._events: deque[Event] = deque()
        self._rng = rng
        self._created = now
        self._params = TransportParameters(
            max_message_size=config.max_message_size,
            receive_window=config.receive_window,
            max_datagram_size=config.max_datagram_size,
            fec=config.fec != "off",
        )
        self._fec = FecPath(mode=config.fec, group_timeout_fraction=config.fec_group_timeout_fraction)
        self._peer_params: TransportParameters | None = None
        self._peer_cid = b""
        self._send_protection: PacketProtection | None = None
        self._receive_protection: PacketProtection | None = None
        self._init_paths(peer_address, path)  # the active path: ``path``, or direct to the address

        # Handshake.
        self._client_hs: ClientHandshake | None = None
        self._server_hs: ServerHandshake | None = None
        self._handshake_out: list[bytes] = []
        self._handshake_timer: float | None = None
        self._handshake_sends = 0
        self._handshake_retries = 0
        self._initial_sent_at = now
        if initial is None:
            self._client_hs = ClientHandshake(
                identity=identity, client_cid=local_cid, params=self._params, pinned_peer_id=pinned_peer_id
            )
            self._queue_handshake(self._client_hs.initial_packet(), now)
        else:
            self._server_hs = ServerHandshake(
                identity=identity, server_cid=local_cid, params=self._params, initial=initial
            )
            self._handshake_out.append(self._server_hs.hello_packet)

        # Reliability and congestion.
        self.rtt = RttEstimator(
            initial_rtt=config.initial_rtt, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self.congestion = _congestion.create(
            config.congestion_control, config.max_datagram_size, config.initial_window_packets
        )
        use_rng = getattr(self.congestion, "use_rng", None)
        if rng is not None and use_rng is not None:
            use_rng(rng)  # e.g. BBR's random PROBE_BW phase: seeded tests replay exactly
        self.recovery = LossRecovery(
            rtt=self.rtt,
            congestion=self.congestion,
            max_probes=config.tail_loss_probes,
            max_ack_delay=config.max_ack_delay,
            adaptive_reordering=config.adaptive_reordering,
        )
        self.pacer = Pacer(max_datagram_size=config.max_datagram_size)
        self._next_packet_number = 0
        self._pacing_deadline: float | None = None

        # Messages.
        # The sender needs the peer's window, known once the handshake completes; messages
        # queued before that wait in _early_messages.
        self._sender = MessageSender(
            max_message_size=config.max_message_size, send_buffer=config.send_buffer, initial_peer_max_data=0
        )
        self._early_messages: list[tuple[bytes, bool]] = []
        self._receiver = MessageReceiver(
            max_message_size=config.max_message_size, receive_window=config.receive_window
        )
        self._datagrams_out: deque[bytes] = deque()
        self._datagrams_in: deque[bytes] = deque()

        # Receiving side: replay window and ACK scheduling.
        self._received = RangeSet()
        self._replay_floor = 0
        self._largest_received = -1
        self._ack_eliciting_unacked = 0
        self._ack_deadline: float | None = None
        self._ack_info_pending = False
        self._largest_received_time = now

        # Control frames.
        self._max_data_pending = False
        self._handshake_done_pending = False
        self._ping_pending = False
        self._probe_pending = False  # a tail-loss probe is due (sent past the window and the pacer)

        # Lifecycle timers.
        self._last_received = now
        self._last_sent = now
        self._drain_deadline: float | None = None
        self._close_packet_pending = False
        self._close_frame = b""

        # Counters (see statistics()).
        self._stats = ConnectionCounters()
        # Channels besides channel 0 (the connection's own _sender/_receiver), see _channels.py.
        self.channels = Channels(
            config=config,
            is_client=self.is_client,
            stats=self._stats,
            datagrams_out=self._datagrams_out,
            channel_filter=channel_filter,
        )

    # ------------------------------------------------------------------ public API

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    @property
    def is_established(self) -> bool:
        return self.state in CAN_SEND_DATA

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def max_message_size(self) -> int:
        """The largest message this connection may send (ours and the peer's limit)."""
        peer = self._peer_params.max_message_size if self._peer_params else self.config.max_message_size
        return min(peer, self.config.max_message_size)

    def can_send_message(self, size: int) -> bool:
        """False while the send buffer is full: the shell waits (backpressure)."""
        if self._peer_params is None:
            return not self._early_messages
        return self._sender.can_queue(size)

    def send_message(self, data: bytes, *, ordered: bool = True) -> None:
        """Queue one reliable message. Raises MessageTooLarge or a ConnectionClosed error."""
        self._check_can_queue()
        limit = self.max_message_size
        if len(data) > limit:
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds the limit of {limit} bytes; split it or raise "
                "QuantumConfig.max_message_size on both sides"
            )
        if self._peer_params is None:
            self._early_messages.append((bytes(data), ordered))
        else:
            self._sender.queue_message(bytes(data), ordered)
        self._stats.messages_sent += 1
        self._stats.app_bytes_sent += len(data)

    def send_datagram(self, data: bytes) -> None:
        """Queue an unreliable datagram; dropped if it does not fit one packet or the queue is full."""
        self._check_can_queue()
        room = self._path.packet_size - HEADER_SIZE - AEAD_TAG_SIZE - 3
        if len(data) > room:
            raise MessageTooLarge(
                f"datagram of {len(data)} bytes exceeds the {room}-byte limit of one packet"
            )
        if len(self._datagrams_out) >= DATAGRAM_QUEUE:
            self._datagrams_out.popleft()
            self._stats.unreliable_dropped += 1
        self._datagrams_out.append(encode_datagram(bytes(data)))

    def receive_message(self) -> bytes | None:
        """The next complete message (ordered ones in order), or None. Frees flow-control window."""
        message = self._receiver.next_message()
        if message is not None:
            self._stats.messages_received += 1
            self._stats.app_bytes_received += len(message)
            if self._receiver.should_send_max_data():
                self._max_data_pending = True
        return message

    def has_message(self) -> bool:
        return self._receiver.has_message()

    def has_window_update(self) -> bool:
        """Taking messages freed enough window that a MAX_DATA frame is waiting to be sent."""
        return self._max_data_pending

    def receive_datagram_frame(self) -> bytes | None:
        """The next received unreliable datagram, or None."""
        return self._datagrams_in.popleft() if self._datagrams_in else None

    def close(self, now: float) -> None:
        """Graceful close: deliver everything already sent, then tell the peer."""
        if self.state not in OPEN or self.state is ConnectionState.SHUTTING_DOWN:
            return
        self._set_state(ConnectionEvent.CLOSE_REQUESTED)
        if self.state is ConnectionState.CLOSED:
            self._terminate(ClosedLocally("connection closed by this side before the handshake finished"))
        else:
            self._maybe_finish_shutdown(now)

    def abort(self, now: float, *, error_code: int = CloseCode.APPLICATION_ABORT, reason: str = "") -> None:
        """Close at once, discarding undelivered data; the peer is told ``error_code``/``reason``."""
        if self.state not in OPEN:
            return
        self._begin_closing(now, error_code, reason or "aborted by the application")
        if self.error is None:
            self._fail(
                ClosedLocally(
                    f"connection aborted by this side: {reason or 'no reason given'}",
                    error_code=error_code,
                    reason=reason,
                )
            )

    def fail(self, error: ConnectionClosed) -> None:
        """Close at once without telling the peer: the endpoint gave up on this connection."""
        self._fail(error)
        if self.state is not ConnectionState.CLOSED:
            self._set_state(ConnectionEvent.FAILED)

    # ------------------------------------------------------------------ input

    def receive_datagram(
        self, data: bytes, address: Address, now: float, header: Header | None = None, via: Path | None = None
    ) -> None:
        """Process one datagram from the network. Never raises: bad input is counted and dropped.

        ``via`` is the framed path it came through (its framing already removed), None for direct."""
        self._stats.datagrams_received += 1
        self._stats.bytes_received += len(data)
        if self.state is ConnectionState.CLOSED:
            return
        try:
            if header is None:
                header = parse_header_untrusted(data)
            ptype = header.packet_type
            if ptype is PacketType.DATA or ptype is PacketType.PARITY:
                self._receive_data(data, header, address, now, via)
            elif ptype is PacketType.SERVER_HELLO and self._client_hs is not None:
                self._receive_server_hello(data, now)
            elif ptype is PacketType.RETRY and self._client_hs is not None:
                self._receive_retry(data, now)
            elif ptype is PacketType.CLIENT_FINISH and self._server_hs is not None:
                self._receive_client_finish(data, now)
            elif ptype is PacketType.INITIAL and self._server_hs is not None:
                # The client did not get our SERVER_HELLO: send it again (its address is validated).
                if self.state is ConnectionState.HELLO_SENT:
                    self._handshake_out.append(self._server_hs.hello_packet)
                self._stats.duplicate_packets += 1
            else:
                self._stats.dropped_packets += 1
        except BadPacket:
            self._stats.bad_packets += 1

    def _receive_retry(self, data: bytes, now: float) -> None:
        assert self._client_hs is not None
        if self.state is not ConnectionState.INITIAL_SENT:
            raise BadPacket("RETRY after the handshake moved on")
        self._client_hs.on_retry_untrusted(data)
        # Karn: the INITIAL is about to be resent, so its RTT sample will be ambiguous.
        self._handshake_sends = 0
        self._queue_handshake(self._client_hs.initial_packet(), now)

    def _receive_server_hello(self, data: bytes, now: float) -> None:
        assert self._client_hs is not None
        if self.state is not ConnectionState.INITIAL_SENT:
            # Our FINISH was lost: the server is resending its hello. Resend FINISH.
            if self.state is ConnectionState.CONFIRMING and self._client_hs.finish_packet:
                self._handshake_out.append(self._client_hs.finish_packet)
            raise BadPacket("duplicate SERVER_HELLO")
        try:
            result = self._client_hs.on_server_hello_untrusted(data)
        except HandshakeFailed as exc:
            self._fail(exc)
            self._set_state(ConnectionEvent.ABORT)
            return
        if self._handshake_sends == 1:
            # Karn's rule (RFC 6298 §3): sample the handshake RTT only if INITIAL went out once.
            self.rtt.on_sample(now - self._initial_sent_at)
        self._last_received = now
        self._complete_handshake(result, now)
        if self.is_closed:
            return
        self._set_state(ConnectionEvent.HELLO_RECEIVED)
        assert self._client_hs.finish_packet is not None
        self._queue_handshake(self._client_hs.finish_packet, now)

    def _receive_client_finish(self, data: bytes, now: float) -> None:
        assert self._server_hs is not None
        if self.state is not ConnectionState.HELLO_SENT:
            raise BadPacket("CLIENT_FINISH after the handshake completed")
        result = self._server_hs.on_client_finish_untrusted(data)
        self.rtt.on_sample(now - self._initial_sent_at)
        self._last_received = now
        self._complete_handshake(result, now)
        if self.is_closed:
            return
        self._set_state(ConnectionEvent.FINISH_RECEIVED)
        self._handshake_done_pending = True

    def _complete_handshake(self, result: HandshakeResult, now: float) -> None:
        self.peer_id = result.peer_id
        self._peer_cid = result.peer_cid
        self._peer_params = result.peer_params
        self._on_peer_params()
        self._fec.peer_can_decode = result.peer_params.fec
        self._send_protection = result.keys.send
        self._receive_protection = result.keys.receive
        self._sender = MessageSender(
            max_message_size=self.max_message_size,
            send_buffer=self.config.send_buffer,
            initial_peer_max_data=result.peer_params.receive_window,
        )
        early, self._early_messages = self._early_messages, []
        for data, ordered in early:
            try:
                self._sender.queue_message(data, ordered)
            except MessageTooLarge as exc:
                # Queued before we knew the peer's limits; the peer cannot take it.
                self._fail(
                    ClosedLocally(f"a message queued before the handshake is too large for this peer: {exc}")
                )
                self._begin_closing(now, CloseCode.MESSAGE_TOO_LARGE, "message too large")
                return
        self.channels.bind_default(
            self._sender, self._receiver, self.max_message_size, result.peer_params.receive_window
        )
        self._handshake_timer = None
        self._events.append(HandshakeCompleted(peer_id=result.peer_id))

    def _receive_data(
        self, data: bytes, header: Header, address: Address, now: float, via: Path | None
    ) -> None:
        protection = self._receive_protection
        if protection is None:
            # Sent before the handshake finished here (e.g. CLIENT_FINISH was lost): the sender retransmits.
            self._stats.dropped_packets += 1
            return
        pn = header.packet_number
        if pn < self._replay_floor or pn in self._received:
            self._stats.replayed_packets += 1
            return
        if self.state is ConnectionState.DRAINING:
            self._stats.dropped_packets += 1  # RFC 9000 §10.2.2: a draining endpoint processes nothing
            return
        plaintext = protection.open_untrusted(data, HEADER_SIZE, pn)
        if self.state is ConnectionState.CLOSING:
            self._answer_while_closing(plaintext, pn, now)
            return
        # Authenticated from here on. The decoder raises only BadPacket and then changes nothing.
        if header.packet_type is PacketType.PARITY:
            recovered = self._fec.on_parity(header.fec_group, header.fec_index, plaintext, now)
            self._record_received(pn, now)
            self._last_received = now
            self._stats.parity_received += 1
            self._on_path(address, via, pn, len(data), None)
            # Not ack-eliciting, but counted in flight by the sender: acknowledge it within
            # max_ack_delay so the sender's window does not wait on it (docs/bbr-fec.md).
            self._ack_info_pending = True
            if self._ack_deadline is None:
                self._ack_deadline = now + self.config.max_ack_delay
        else:
            recovered = []
            if header.flags & _FEC_PROTECTED:
                recovered = self._fec.on_data(header.fec_group, header.fec_index, pn, plaintext, now)
            self._process_packet(pn, plaintext, now, address, len(data), via)
        for packet in recovered:
            if self.state not in OPEN:
                return
            rpn = packet.packet_number
            if rpn < self._replay_floor or rpn in self._received:
                continue  # arrived meanwhile (or is a replay): nothing to rebuild
            self._fec.recovered += 1
            self._process_packet(rpn, packet.plaintext, now, None, 0, None)

    def _process_packet(
        self, pn: int, plaintext: bytes, now: float, address: Address | None, size: int, via: Path | None
    ) -> None:
        """An authenticated DATA packet (or one rebuilt by FEC, with no ``address``): its frames."""
        try:
            frames = parse_frames_untrusted(plaintext)
        except BadPacket as exc:
            self._stats.bad_packets += 1
            self._protocol_violation(now, f"malformed frames from an authenticated peer: {exc}")
            return
        self._record_received(pn, now)
        self._last_received = now
        self._stats.packets_received += 1
        path = self._path if address is None else self._on_path(address, via, pn, size, frames)
        if self.state is ConnectionState.CONFIRMING:
            # Only a server that accepted our FINISH has session keys to send DATA with.
            self._set_state(ConnectionEvent.CONFIRMED)
            self._handshake_timer = None
        ack_eliciting = False
        for frame in frames:
            if isinstance(frame, Fragment):
                ack_eliciting = True
                try:
                    if frame.channel:
                        self.channels.on_fragment(frame)
                    else:
                        self._receiver.on_fragment(frame)
                except RemoteProtocolError as exc:
                    self._protocol_violation(now, str(exc), CloseCode.FLOW_CONTROL_ERROR)
                    return
            elif isinstance(frame, AckFrame):
                self._on_ack(frame, now)
                if self.state not in OPEN:
                    return
            elif isinstance(frame, _CHANNEL_FRAMES) and frame.channel:
                ack_eliciting = True
                try:
                    self.channels.on_frame(frame, self.peer_id or b"", self.state in ACCEPTS_NEW_MESSAGES)
                except RemoteProtocolError as exc:
                    self._protocol_violation(now, str(exc))
                    return
            elif isinstance(frame, DatagramFrame):
                ack_eliciting = True
                if len(self._datagrams_in) >= DATAGRAM_QUEUE:
                    self._datagrams_in.popleft()
                    self._stats.unreliable_dropped += 1
                self._datagrams_in.append(frame.data)
                self._stats.unreliable_received += 1
            elif isinstance(frame, MaxDataFrame):
                ack_eliciting = True
                self._sender.update_peer_max_data(frame.max_data)
            elif isinstance(frame, BlockedFrame):
                ack_eliciting = True
                self._receiver.on_peer_blocked(frame.needed_max_data)
                if self._receiver.should_send_max_data():
                    self._max_data_pending = True
            elif isinstance(frame, PathChallengeFrame):
                ack_eliciting = True
                self._on_path_challenge(frame.token, path)
            elif isinstance(frame, PathResponseFrame):
                ack_eliciting = True
                self._on_path_response(frame.token)
            elif isinstance(frame, CloseFrame):
                self._on_peer_close(frame, now)
                return
            elif isinstance(frame, HandshakeDoneFrame):
                ack_eliciting = True
            elif isinstance(frame, FecReportFrame):
                self._fec.on_peer_report(frame.recovered, now)
            else:  # PingFrame
                ack_eliciting = True
        if ack_eliciting:
            self._schedule_ack(pn, now)
        self._maybe_finish_shutdown(now)

    def _emit_path_event(self, address: Address, validated: bool) -> None:
        self._events.append(PathMigrated(address=address, validated=validated))

    def _emit_migration_failed(self, address: Address) -> None:
        self._events.append(PathMigrationFailed(address=address))

    def _on_ack(self, frame: AckFrame, now: float) -> None:
        try:
            outcome = self.recovery.on_ack_received(frame.ranges, frame.ack_delay, now)
        except RemoteProtocolError as exc:
            self._protocol_violation(now, str(exc))
            return
        for packet in outcome.newly_acked:
            self._on_packet_acked(packet)
        for packet in outcome.late_acked:
            self._on_packet_acked(packet)
        self._on_packets_lost(outcome.lost, now)
        self._fec.update(now)

    def _on_peer_close(self, frame: CloseFrame, now: float) -> None:
        if frame.error_code == CloseCode.NO_ERROR:
            error: ConnectionClosed = ClosedByPeer("the peer closed the connection", reason=frame.reason)
        else:
            reason = frame.reason or "no reason"
            error = ClosedByPeer(
                f"the peer closed the connection with error {frame.error_code}: {reason}",
                error_code=frame.error_code,
                reason=frame.reason,
            )
        self._fail(error)
        self._set_state(ConnectionEvent.PEER_CLOSED)
        self._drain_deadline = now + DRAIN_RTOS * self.rtt.rto

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (None: nothing pending)."""
        if self.state is ConnectionState.CLOSED:
            return None
        if self._drain_deadline is not None:
            return self._drain_deadline
        deadlines = [self._last_received + self.config.idle_timeout]
        if self.state in HANDSHAKING:
            deadlines.append(self._created + self.config.handshake_timeout)
        if self._handshake_timer is not None:
            deadlines.append(self._handshake_timer)
        loss = self.recovery.loss_detection_timer()
        if loss is not None:
            deadlines.append(loss)
        # Blocked by anti-amplification, only the peer's next packet can unblock us: no busy timer.
        if self._path.validated or not self._amplification_blocked():
            if self._ack_deadline is not None:
                deadlines.append(self._ack_deadline)
            if self._pacing_deadline is not None:
                deadlines.append(self._pacing_deadline)
        if self._migration_target is not None and (path_timer := self._path_timer()) is not None:
            deadlines.append(path_timer)
        fec_timer = self._fec.get_timer()
        if fec_timer is not None:
            deadlines.append(fec_timer)  # a partial group closes: its parity is due
        if self.state in CAN_SEND_DATA and not self._ping_pending:
            # (A pending PING waits for the window or the pacer, which have their own wake-ups.)
            deadlines.append(self._last_sent + self.config.keepalive_interval)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        """Run whatever timers have expired at ``now``."""
        if self.state is ConnectionState.CLOSED:
            return
        if self._drain_deadline is not None:
            if now >= self._drain_deadline:
                self._set_state(ConnectionEvent.DRAINED)
                self._drain_deadline = None
            return
        if now >= self._last_received + self.config.idle_timeout:
            self._timeout(f"no packet from the peer for {self.config.idle_timeout:g} s (idle timeout)")
            return
        if self.state in HANDSHAKING and now >= self._created + self.config.handshake_timeout:
            self._timeout(
                f"{self._where()} did not complete the handshake within "
                f"{self.config.handshake_timeout:g} s; is a node listening there?"
            )
            return
        if self._handshake_timer is not None and now >= self._handshake_timer:
            self._resend_handshake(now)
        loss = self.recovery.loss_detection_timer()
        if loss is not None and now >= loss:
            outcome = self.recovery.on_loss_detection_timeout(now)
            self._probe_pending = self._probe_pending or outcome.probe
            self._on_packets_lost(outcome.lost, now)
            if outcome.rto_fired and not outcome.lost:
                self._ping_pending = True
        if self._pacing_deadline is not None and now >= self._pacing_deadline:
            self._pacing_deadline = None
        self._fec.poll(now)
        self._handle_path_timer(now)
        if self.state in CAN_SEND_DATA and now >= self._last_sent + self.config.keepalive_interval:
            self._ping_pending = True

    def _queue_handshake(self, packet: bytes, now: float) -> None:
        """Send the first copy of a handshake flight; the retransmission backoff starts afresh."""
        self._handshake_out.append(packet)
        self._handshake_sends += 1
        self._handshake_retries = 0
        self._handshake_timer = now + HANDSHAKE_RETRANSMIT_FACTOR * self.config.initial_rtt

    def _resend_handshake(self, now: float) -> None:
        assert self._client_hs is not None
        if self.state is ConnectionState.INITIAL_SENT:
            packet = self._client_hs.initial_packet()
        elif self.state is ConnectionState.CONFIRMING and self._client_hs.finish_packet is not None:
            packet = self._client_hs.finish_packet
        else:
            self._handshake_timer = None
            return
        self._handshake_out.append(packet)
        self._handshake_sends += 1
        self._handshake_retries += 1
        # Double per retry (RFC 6298 §5.5 in spirit) but never wait more than a second between
        # tries: handshake packets are small, and a lossy path needs several tries in the budget.
        backoff = HANDSHAKE_RETRANSMIT_FACTOR * 2 ** min(self._handshake_retries, 6)
        self._handshake_timer = now + min(self.config.initial_rtt * backoff, HANDSHAKE_MAX_INTERVAL)

    # ------------------------------------------------------------------ closing

    def _check_can_queue(self) -> None:
        if self.state in ACCEPTS_NEW_MESSAGES:
            return
        if self.error is not None and not isinstance(self.error, ClosedLocally):
            raise type(self.error)(
                str(self.error), error_code=self.error.error_code, reason=self.error.reason
            )
        raise ClosedLocally("cannot send: this side already closed the connection")

    def _maybe_finish_shutdown(self, now: float) -> None:
        if (
            self.state is ConnectionState.SHUTTING_DOWN
            and self._sender.all_acked()
            and self.channels.all_acked()
        ):
            self._begin_closing(now, CloseCode.NO_ERROR, "")
            if self.error is None:
                self._fail(ClosedLocally("connection closed by this side"))

    def _answer_while_closing(self, plaintext: bytes, pn: int, now: float) -> None:
        """An authenticated packet reached us after we sent CLOSE: the peer may not have it.

        RFC 9000 §10.2.1: answer with the CLOSE again (one small packet per packet received,
        so never more than the peer sends us). If the peer is closing too, go quiet instead.
        """
        self._record_received(pn, now)
        try:
            frames = parse_frames_untrusted(plaintext)
        except BadPacket:
            frames = []
        for frame in frames:
            if isinstance(frame, CloseFrame):
                self._on_peer_close(frame, now)
                return
        self._close_packet_pending = True

    def _begin_closing(self, now: float, error_code: int, reason: str) -> None:
        event = (
            ConnectionEvent.ALL_DELIVERED
            if self.state is ConnectionState.SHUTTING_DOWN and error_code == CloseCode.NO_ERROR
            else ConnectionEvent.ABORT
        )
        self._set_state(event)
        if self.state is ConnectionState.CLOSING:
            self._close_frame = encode_close(error_code, reason)
            self._close_packet_pending = True
            self._drain_deadline = now + DRAIN_RTOS * self.rtt.rto

    def _protocol_violation(self, now: float, message: str, code: int = CloseCode.PROTOCOL_VIOLATION) -> None:
        self._fail(
            ClosedByProtocolViolation(
                f"the peer broke the protocol: {message}", error_code=code, reason=message
            )
        )
        self._begin_closing(now, code, message)

    def _timeout(self, message: str) -> None:
        self._fail(ConnectionTimeout(message))
        self._set_state(ConnectionEvent.TIMEOUT)

    def _fail(self, error: ConnectionClosed) -> None:
        if self.error is None:
            self.error = error

    def _terminate(self, error: ConnectionClosed) -> None:
        self._fail(error)

    def _set_state(self, event: ConnectionEvent) -> None:
        self.state = transition(self.state, event)
        if self.state is ConnectionState.CLOSED:
            if self.error is None:
                self.error = ClosedLocally("connection closed")
            self._events.append(ConnectionTerminated(error=self.error))

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> ConnectionStatistics:
        """A frozen snapshot of this connection's counters and estimators."""
        return connection_statistics(self)


__all__ = [
    "Address",
    "ConnectionTerminated",
    "Event",
    "HandshakeCompleted",
    "LocalProtocolError",
    "PathMigrated",
    "PathMigrationFailed",
    "QuantumConnection",
]
