"""The relay's sans-I/O core: registrations, forwarding by node ID, quotas, hole-punch timing.

Rules (everything that changes a client's state is in this module):

1. **A client is a Quantum connection.** The shell calls :meth:`RelayCore.connected` with the
   connection's *authenticated* peer ID. That ID is the only name the relay files the client
   under; no message carries it, so nobody registers for a node ID whose key it lacks. A new
   connection with the same node ID replaces the old one (a restarted node).
2. **States are a table** (:data:`TRANSITIONS`): PENDING (connected, no REGISTER yet) ->
   REGISTERED -> CLOSED. PENDING clients are bounded (``max_pending``, oldest closed first)
   and timed out (``registration_timeout``); REGISTERED ones are bounded by ``max_clients``.
   So memory stays bounded whatever a flood of connections does.
3. **Forwarding** takes a raw SEND frame: its tag must be a live registration's and its
   source address that registration's connection's current address (else it is spoofed);
   the destination must be registered. The packet inside is forwarded unread: it is the two
   nodes' end-to-end ciphertext. The relay only ever sends to registered clients' validated
   connection addresses, and never more bytes than it got: no amplification.
4. **Quotas**: each client has a byte token bucket (``rate``, ``burst``); a frame beyond it waits
   in that client's queue (``queue_packets`` at most; then it is dropped and counted) until
   the bucket allows it. Control messages have their own small bucket.
5. **Hole punching** (DCUtR's coordinated simultaneous open): on CONNECT from A to B, each gets
   PUNCH with the other's candidates and a delay, chosen from the RTTs of their connections so
   that both send their probes at the same moment: ``delay = max(rtt_a, rtt_b)/2 - rtt_self/2
   + margin``.
6. **Every drop is counted** by reason (:class:`RelayStatistics`); nothing raises on bad input.
7. **Hosting documents** is the persistence peer's (``_serve.py``): the core only passes a
   registered client's SERVE on (:meth:`RelayCore.serve_requests`) and sends the answer it is
   given (:meth:`RelayCore.answer_serve`); with no persistence peer it answers NOT_HOSTING itself.
"""

from __future__ import annotations

import enum
import math
import os
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from aetherflow_node._limits import TokenBucket
from aetherflow_node._relay_wire import (
    MAX_CANDIDATES,
    NO_SUBJECT,
    TAG_SIZE,
    Address,
    Connect,
    ControlMessage,
    Observed,
    Punch,
    PunchResult,
    RefusalCode,
    Refused,
    Register,
    Registered,
    SendFrame,
    Serve,
    ServeCode,
    Served,
    encode_control,
    encode_deliver,
    parse_control_untrusted,
    parse_frame_untrusted,
)
from aetherflow_sdk._errors import AuthError, BadPacket, LocalProtocolError
from aetherflow_sdk.session import TokenVerifier

RELAY_DOCUMENT: Final = "relay"
"""The ``doc`` claim of a relay token (``*`` is accepted too); its ``nid`` must be the node's ID."""
DEFAULT_RTT: Final = 0.1  # before a connection has measured one (RFC 9002 §6.2.2's 333 ms is for loss)
MAX_RECENT_PUNCHES: Final = 4096  # punch IDs remembered for PUNCH_RESULT accounting

DROP_REASONS: Final = (
    "malformed",  # a raw datagram that is no relay frame
    "unregistered",  # a SEND whose tag is no live registration
    "spoofed",  # a SEND with a live tag from another address than its connection's
    "too_large",  # a packet over max_packet_size
    "unknown_destination",  # a SEND to a node ID not registered here
    "queue_full",  # over quota with a full queue
    "unexpected",  # a DELIVER or PROBE sent to the relay
    "bad_control",  # a control message that does not parse, or not in this state
    "control_rate",  # control messages over their bucket
)


class ClientState(enum.Enum):
    """Where a relay client is: connected, registered, or gone."""

    PENDING = "pending"
    REGISTERED = "registered"
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves a relay client between states (see TRANSITIONS)."""

    REGISTER = "register"
    REFUSE = "refuse"
    TIMEOUT = "timeout"
    EVICT = "evict"  # pushed out by the pending bound
    REPLACE = "replace"  # a newer connection with the same node ID
    DISCONNECT = "disconnect"


TRANSITIONS: Final[Mapping[tuple[ClientState, Trigger], ClientState]] = MappingProxyType(
    {
        (ClientState.PENDING, Trigger.REGISTER): ClientState.REGISTERED,
        (ClientState.PENDING, Trigger.REFUSE): ClientState.CLOSED,
        (ClientState.PENDING, Trigger.TIMEOUT): ClientState.CLOSED,
        (ClientState.PENDING, Trigger.EVICT): ClientState.CLOSED,
        (ClientState.PENDING, Trigger.REPLACE): ClientState.CLOSED,
        (ClientState.PENDING, Trigger.DISCONNECT): ClientState.CLOSED,
        (ClientState.REGISTERED, Trigger.REPLACE): ClientState.CLOSED,
        (ClientState.REGISTERED, Trigger.DISCONNECT): ClientState.CLOSED,
    }
)


class InvalidRelayTransition(LocalProtocolError):
    """A client state change the table does not allow (a bug in the caller)."""


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise LocalProtocolError(f"RelayConfig.{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class RelayConfig:
    """The relay's limits."""

    max_clients: int = attrs.field(default=10_000, validator=_positive)
    """Registered clients at most; more are refused (FULL)."""
    max_pending: int = attrs.field(default=1_000, validator=_positive)
    """Connected but not yet registered clients at most; the oldest is closed past this."""
    registration_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds a connection may stay unregistered."""
    rate: float = attrs.field(default=2_000_000.0, validator=_positive)
    """Bytes per second one client may have forwarded (its token bucket's rate)."""
    burst: float = attrs.field(default=256_000.0, validator=_positive)
    """Bytes a client may send at once above its rate (the bucket's size)."""
    queue_packets: int = attrs.field(default=64, validator=_positive)
    """Frames held per client while it is over its rate; more are dropped (queue_full)."""
    max_packet_size: int = attrs.field(default=1400, validator=_positive)
    """The largest Quantum packet forwarded (a SEND's payload)."""
    control_rate: float = attrs.field(default=20.0, validator=_positive)
    """Control messages per second per client."""
    control_burst: float = attrs.field(default=40.0, validator=_positive)
    punch_margin: float = attrs.field(default=0.02, validator=_positive)
    """Seconds added to every PUNCH delay, so both sides have the message before the go."""
    require_token: bool = False
    """Refuse a REGISTER without a token from a trusted issuer."""

    def __attrs_post_init__(self) -> None:
        if self.burst < self.max_packet_size:
            raise LocalProtocolError(
                f"RelayConfig.burst ({self.burst:g} bytes) must hold at least one packet of "
                f"max_packet_size ({self.max_packet_size} bytes)"
            )


def _counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


@attrs.frozen(kw_only=True)
class RelayStatistics:
    """What the relay has done; metrics read only this."""

    clients: int
    """Registered clients now."""
    pending: int
    """Connected, not yet registered."""
    registrations: int
    refused: Mapping[str, int] = attrs.field(converter=_counts)
    """Registrations and requests refused, by :class:`RefusalCode` name."""
    forwarded_packets: int
    forwarded_bytes: int
    queued: int
    """Frames waiting in clients' queues now."""
    drops: Mapping[str, int] = attrs.field(converter=_counts)
    """Datagrams and messages dropped, by reason (:data:`DROP_REASONS`)."""
    punch_requests: int
    punch_successes: int
    punch_failures: int
    address_changes: int


@attrs.define(slots=True, eq=False, kw_only=True)
class _Client:
    node_id: bytes
    address: Address
    state: ClientState
    deadline: float
    bucket: TokenBucket
    control: TokenBucket
    rtt: float = DEFAULT_RTT
    tag: bytes = b""
    candidates: tuple[Address, ...] = ()
    queue: deque[tuple[bytes, bytes]] = attrs.field(factory=deque)  # (destination, packet)
    forwarded_packets: int = 0
    forwarded_bytes: int = 0


@attrs.frozen(kw_only=True)
class ServeRequest:
    """A registered client asks the relay to host a document (its SERVE message)."""

    node_id: bytes
    """The authenticated node that sent it (where the answer goes)."""
    ticket: str
    """The ticket, unread: the persistence peer checks it."""


@attrs.frozen(kw_only=True)
class CloseRequest:
    """The shell should close this client's connection (the reason goes in the close)."""

    node_id: bytes
    reason: str


class RelayCore:
    """The relay's state, driven by the shell (see the module's rules)."""

    def __init__(
        self,
        config: RelayConfig | None = None,
        *,
        verifier: TokenVerifier | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or RelayConfig()
        if self.config.require_token and verifier is None:
            raise LocalProtocolError("require_token needs a TokenVerifier that trusts at least one issuer")
        self._verifier = verifier
        self._random: Callable[[int], bytes] = (
            (lambda n: rng.getrandbits(8 * n).to_bytes(n, "big")) if rng is not None else os.urandom
        )
        self._clients: dict[bytes, _Client] = {}  # node ID -> client (pending or registered)
        self._pending: OrderedDict[bytes, _Client] = OrderedDict()  # in arrival order (deadlines rise)
        self._by_tag: dict[bytes, _Client] = {}
        self._backlogged: set[bytes] = set()  # node IDs with a non-empty queue
        self._control_out: list[tuple[bytes, bytes]] = []
        self._datagrams_out: list[tuple[bytes, Address]] = []
        self._closes: list[CloseRequest] = []
        self._serve_requests: list[ServeRequest] = []
        self.serve_address: Address | None = None
        """The persistence peer's address, told in REGISTERED (None: this relay hosts no documents)."""
        self._punches: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        self._next_punch = 1
        self._registered_count = 0
        self._registrations = 0
        self._refused = dict.fromkeys((c.name for c in RefusalCode), 0)
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._forwarded_packets = 0
        self._forwarded_bytes = 0
        self._punch_requests = 0
        self._punch_successes = 0
        self._punch_failures = 0
        self._address_changes = 0

    # ------------------------------------------------------------------ connections

    def connected(self, node_id: bytes, address: Address, now: float, *, rtt: float | None = None) -> None:
        """A Quantum connection from ``node_id`` (its authenticated peer ID) at ``address``."""
        old = self._clients.get(node_id)
        if old is not None:
            # The shell closes the old connection itself: a request by node ID would name both.
            self._close(old, Trigger.REPLACE, "", request=False)
        while len(self._pending) >= self.config.max_pending:
            _, oldest = next(iter(self._pending.items()))
            self._close(oldest, Trigger.EVICT, "too many unregistered connections; register sooner")
        config = self.config
        client = _Client(
            node_id=node_id,
            address=address,
            state=ClientState.PENDING,
            deadline=now + config.registration_timeout,
            bucket=TokenBucket(config.rate, config.burst, now),
            control=TokenBucket(config.control_rate, config.control_burst, now),
            rtt=rtt if rtt is not None and rtt > 0 else DEFAULT_RTT,
        )
        self._clients[node_id] = client
        self._pending[node_id] = client

    def disconnected(self, node_id: bytes) -> None:
        """The connection of ``node_id`` is gone."""
        client = self._clients.get(node_id)
        if client is not None:
            self._close(client, Trigger.DISCONNECT, "", request=False)

    def path_changed(self, node_id: bytes, address: Address, now: float) -> None:
        """The connection of ``node_id`` now comes from ``address`` (NAT rebinding, migration)."""
        client = self._clients.get(node_id)
        if client is None or client.address == address:
            return
        client.address = address
        self._address_changes += 1
        if client.state is ClientState.REGISTERED:
            self._control(client, Observed(observed=address))

    def rtt_measured(self, node_id: bytes, rtt: float) -> None:
        """The smoothed RTT of ``node_id``'s connection (punch timing uses it)."""
        client = self._clients.get(node_id)
        if client is not None and rtt > 0 and math.isfinite(rtt):
            client.rtt = rtt

    def state_of(self, node_id: bytes) -> ClientState:
        client = self._clients.get(node_id)
        return ClientState.CLOSED if client is None else client.state

    def address_of(self, node_id: bytes) -> Address | None:
        """A registered client's current address (None if not registered)."""
        client = self._clients.get(node_id)
        return client.address if client is not None and client.state is ClientState.REGISTERED else None

    def _transition(self, client: _Client, trigger: Trigger) -> None:
        try:
            client.state = TRANSITIONS[client.state, trigger]
        except KeyError:
            raise InvalidRelayTransition(
                f"relay client state {client.state.value} has no transition on {trigger.value}"
            ) from None

    def _close(self, client: _Client, trigger: Trigger, reason: str, *, request: bool = True) -> None:
        was_registered = client.state is ClientState.REGISTERED
        self._transition(client, trigger)
        if self._clients.get(client.node_id) is client:
            del self._clients[client.node_id]
        if was_registered:
            self._registered_count -= 1
            self._by_tag.pop(client.tag, None)
        else:
            self._pending.pop(client.node_id, None)
        if client.queue:
            client.queue.clear()
            self._backlogged.discard(client.node_id)
        if request:
            self._closes.append(CloseRequest(node_id=client.node_id, reason=reason))

    # ------------------------------------------------------------------ control messages

    def receive_control(self, node_id: bytes, data: bytes, now: float, *, unix_time: float) -> None:
        """One reliable message from ``node_id``'s connection. ``unix_time`` checks tokens."""
        client = self._clients.get(node_id)
        if client is None:
            self._drops["bad_control"] += 1
            return
        if not client.control.try_take(1, now):
            self._drops["control_rate"] += 1
            self._refuse(client, RefusalCode.RATE_LIMITED, "too many control messages; slow down")
            return
        try:
            message = parse_control_untrusted(data)
        except BadPacket:
            self._drops["bad_control"] += 1
            return
        if client.state is ClientState.PENDING:
            if isinstance(message, Register):
                self._on_register(client, message, now, unix_time)
            else:
                self._drops["bad_control"] += 1
                self._refuse(client, RefusalCode.NOT_REGISTERED, "register first")
            return
        match message:
            case Connect():
                self._on_connect(client, message)
            case PunchResult():
                self._on_punch_result(client, message)
            case Serve(ticket=ticket):
                if self.serve_address is None:
                    self.answer_serve(
                        node_id,
                        Served(document="", code=ServeCode.NOT_HOSTING,
                               reason="this relay hosts no documents (it runs without --data-dir)"),
                    )  # fmt: skip
                else:
                    self._serve_requests.append(ServeRequest(node_id=node_id, ticket=ticket))
            case _:
                self._drops["bad_control"] += 1
                self._refuse(client, RefusalCode.PROTOCOL, f"unexpected {type(message).__name__}")

    def _refuse(self, client: _Client, code: RefusalCode, reason: str, subject: bytes = NO_SUBJECT) -> None:
        self._refused[code.name] += 1
        self._control(client, Refused(code=code, subject=subject, reason=reason))

    def _control(self, client: _Client, message: ControlMessage) -> None:
        self._control_out.append((client.node_id, encode_control(message)))

    def _on_register(self, client: _Client, message: Register, now: float, unix_time: float) -> None:
        if self.config.require_token or (message.token is not None and self._verifier is not None):
            refusal = self._check_token(client, message.token, unix_time)
            if refusal is not None:
                self._refuse(client, RefusalCode.AUTH, refusal)
                self._close(client, Trigger.REFUSE, refusal)
                return
        if self._registered_count >= self.config.max_clients:
            self._refuse(client, RefusalCode.FULL, "this relay has its maximum number of clients")
            self._close(client, Trigger.REFUSE, "relay full")
            return
        self._transition(client, Trigger.REGISTER)
        del self._pending[client.node_id]
        self._registered_count += 1
        self._registrations += 1
        tag = self._random(TAG_SIZE)
        while tag in self._by_tag:
            tag = self._random(TAG_SIZE)
        client.tag = tag
        client.candidates = message.candidates
        self._by_tag[tag] = client
        self._control(
            client,
            Registered(
                tag=tag,
                max_packet_size=self.config.max_packet_size,
                observed=client.address,
                serve=self.serve_address,
            ),
        )

    def _check_token(self, client: _Client, token: str | None, unix_time: float) -> str | None:
        if token is None:
            return "this relay requires a token from a trusted issuer (--require-token)"
        if self._verifier is None:
            return "this relay trusts no token issuer"
        try:
            claims = self._verifier.verify(
                token, document=RELAY_DOCUMENT, now=unix_time, holder=client.node_id
            )
        except AuthError as exc:
            return f"token refused ({exc.reason}): {exc}"
        if claims.holder != client.node_id:
            return "a relay token must name the node it is for (claim nid)"
        return None

    def _candidates_of(self, client: _Client) -> tuple[Address, ...]:
        found = [client.address]
        for candidate in client.candidates:
            if candidate not in found:
                found.append(candidate)
        return tuple(found[:MAX_CANDIDATES])

    def _on_connect(self, client: _Client, message: Connect) -> None:
        peer = self._clients.get(message.peer)
        if message.candidates:
            client.candidates = message.candidates
        if peer is None or peer.state is not ClientState.REGISTERED or peer is client:
            self._refuse(client, RefusalCode.UNKNOWN_PEER, "that node is not registered here", message.peer)
            return
        self._punch_requests += 1
        punch_id = self._next_punch
        self._next_punch = self._next_punch % 0xFFFFFFFF + 1
        self._punches[punch_id] = (client.node_id, peer.node_id)
        if len(self._punches) > MAX_RECENT_PUNCHES:
            self._punches.popitem(last=False)
        # Both PUNCH messages leave now; each arrives one one-way delay (rtt/2) later. Waiting
        # until the slower one has arrived, plus a margin, lines up both sides' probes.
        go = max(client.rtt, peer.rtt) / 2 + self.config.punch_margin
        for me, other in ((client, peer), (peer, client)):
            self._control(
                me,
                Punch(
                    peer=other.node_id,
                    punch_id=punch_id,
                    delay=go - me.rtt / 2,
                    candidates=self._candidates_of(other),
                ),
            )

    def _on_punch_result(self, client: _Client, message: PunchResult) -> None:
        pair = self._punches.get(message.punch_id)
        if pair is None or client.node_id not in pair:
            self._drops["bad_control"] += 1
            return
        del self._punches[message.punch_id]  # counted once, whichever side reports first
        if message.direct:
            self._punch_successes += 1
        else:
            self._punch_failures += 1

    # ------------------------------------------------------------------ forwarding

    def receive_frame(self, data: bytes, address: Address, now: float) -> None:
        """One raw datagram from ``address`` on the relay's socket."""
        try:
            frame = parse_frame_untrusted(data)
        except BadPacket:
            self._drops["malformed"] += 1
            return
        if not isinstance(frame, SendFrame):
            self._drops["unexpected"] += 1
            return
        sender = self._by_tag.get(frame.tag)
        if sender is None:
            self._drops["unregistered"] += 1
            return
        if sender.address != address:
            self._drops["spoofed"] += 1
            return
        if len(frame.packet) > self.config.max_packet_size:
            self._drops["too_large"] += 1
            return
        destination = self._clients.get(frame.destination)
        if destination is None or destination.state is not ClientState.REGISTERED:
            self._drops["unknown_destination"] += 1
            return
        if not sender.queue and sender.bucket.try_take(len(frame.packet), now):
            self._deliver(sender, destination, frame.packet)
            return
        if len(sender.queue) >= self.config.queue_packets:
            self._drops["queue_full"] += 1
            return
        sender.queue.append((frame.destination, frame.packet))
        self._backlogged.add(sender.node_id)

    def _deliver(self, sender: _Client, destination: _Client, packet: bytes) -> None:
        self._datagrams_out.append((encode_deliver(sender.node_id, packet), destination.address))
        sender.forwarded_packets += 1
        sender.forwarded_bytes += len(packet)
        self._forwarded_packets += 1
        self._forwarded_bytes += len(packet)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has work: a queue to drain or a registration to time out."""
        times = []
        if self._pending:
            times.append(next(iter(self._pending.values())).deadline)
        for node_id in self._backlogged:
            client = self._clients[node_id]
            times.append(client.bucket.ready_time(len(client.queue[0][1])))
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        while self._pending:
            client = next(iter(self._pending.values()))
            if client.deadline > now:
                break
            self._close(client, Trigger.TIMEOUT, "no REGISTER in time")
        for node_id in list(self._backlogged):
            client = self._clients[node_id]
            while client.queue:
                destination_id, packet = client.queue[0]
                if not client.bucket.try_take(len(packet), now):
                    break
                client.queue.popleft()
                destination = self._clients.get(destination_id)
                if destination is None or destination.state is not ClientState.REGISTERED:
                    self._drops["unknown_destination"] += 1
                    continue
                self._deliver(client, destination, packet)
            if not client.queue:
                self._backlogged.discard(node_id)

    # ------------------------------------------------------------------ output

    def control_to_send(self) -> list[tuple[bytes, bytes]]:
        """Control messages to send, as (node ID, bytes), in order."""
        out, self._control_out = self._control_out, []
        return out

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Raw datagrams to send, as (bytes, address): DELIVER frames to registered clients."""
        out, self._datagrams_out = self._datagrams_out, []
        return out

    def serve_requests(self) -> list[ServeRequest]:
        """SERVE requests for the persistence peer, in order."""
        out, self._serve_requests = self._serve_requests, []
        return out

    def answer_serve(self, node_id: bytes, answer: Served) -> None:
        """Send the answer to a SERVE (if the client is still registered)."""
        client = self._clients.get(node_id)
        if client is not None and client.state is ClientState.REGISTERED:
            self._control(client, answer)

    def closes(self) -> list[CloseRequest]:
        """Connections the shell should close."""
        out, self._closes = self._closes, []
        return out

    def client_counters(self, node_id: bytes) -> tuple[int, int]:
        """(packets, bytes) forwarded from ``node_id`` since it connected."""
        client = self._clients.get(node_id)
        return (0, 0) if client is None else (client.forwarded_packets, client.forwarded_bytes)

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            clients=self._registered_count,
            pending=len(self._pending),
            registrations=self._registrations,
            refused=self._refused,
            forwarded_packets=self._forwarded_packets,
            forwarded_bytes=self._forwarded_bytes,
            queued=sum(len(self._clients[n].queue) for n in self._backlogged),
            drops=self._drops,
            punch_requests=self._punch_requests,
            punch_successes=self._punch_successes,
            punch_failures=self._punch_failures,
            address_changes=self._address_changes,
        )
