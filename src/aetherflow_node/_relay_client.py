"""The node's side of its home relay: register, learn the public address, punch, relay.

:class:`RelayClient` runs over the node's own Quantum endpoint: a Quantum connection to the
relay carries the control messages, and raw datagrams on the same socket carry PROBE frames
(hole punching). :class:`RelayPath` is the relayed path a Quantum connection can move to
(``conn.migrate_to_path``) or begin on (:meth:`HomeRelay.connect_relayed`): it wraps each
packet in a SEND frame and accepts only DELIVER frames whose source is the connection's pinned
peer. While registered, the client lets relayed connections arrive (``endpoint.accept_paths``
for the relay's address): a DELIVER that carries an INITIAL from a node with no path here opens
a :class:`RelayPath` back to it, so the new connection comes out of ``endpoint.accept()`` pinned
to that node. The wire format is in docs/protocol.md ("The relay protocol").
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import attrs

from aetherflow_node._limits import Backoff
from aetherflow_node._relay_wire import (
    DELIVER_OVERHEAD,
    MAX_CANDIDATES,
    SEND_OVERHEAD,
    Address,
    Connect,
    DeliverFrame,
    FrameKind,
    Observed,
    ProbeFrame,
    Punch,
    PunchResult,
    Refused,
    Register,
    Registered,
    Serve,
    ServeCode,
    Served,
    encode_control,
    encode_probe,
    encode_send,
    parse_control_untrusted,
    parse_frame_untrusted,
)
from aetherflow_sdk import quantum
from aetherflow_sdk._errors import AetherFlowError, BadPacket, ConnectionTimeout

logger = logging.getLogger("aetherflow.node.relay")

PROBE_INTERVAL: Final = 0.02  # seconds between probe rounds at the go
PROBE_DURATION: Final = 1.5  # seconds of probing before a punch gives up
PUNCH_TIMEOUT: Final = 5.0  # seconds to wait for the relay's PUNCH after CONNECT
SERVE_TIMEOUT: Final = 15.0  # seconds to wait for the relay's SERVED (it opens the document first)
RELAYED_CONNECT_TIMEOUT: Final = 10.0  # seconds for a handshake through the relay
MAX_NEW_RELAYED_PATHS: Final = 20  # relayed paths opened for new senders per second (and burst)
_INITIAL_TYPE: Final = 1  # a Quantum header's second byte for an INITIAL (docs/protocol.md section 1)


class RelayRefused(AetherFlowError):
    """The relay refused a request (``code`` and the relay's reason in the message)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class ServeRefused(RelayRefused):
    """The relay will not host the document (``code`` is a :class:`ServeCode`)."""


def _persistence_peer(registration: Registered | None, relay: Address) -> Address | None:
    if registration is None or registration.serve is None:
        return None
    host, port = registration.serve
    # Bound to every interface: it is on the host the node reached the relay at.
    return (relay[0], port) if host in ("0.0.0.0", "::") else (host, port)


class RelayPath(quantum.Path):
    """A Quantum path through a relay to ``peer`` (see the module)."""

    def __init__(
        self, relay: Address, *, tag: bytes | Callable[[], bytes], peer: bytes, max_packet_size: int
    ) -> None:
        self._relay = relay
        # A callable follows re-registrations (a restarted relay hands out a new tag).
        self._tag: Callable[[], bytes] = tag if callable(tag) else (lambda: tag)
        self._peer = peer
        self._max_packet_size = max_packet_size

    @property
    def address(self) -> Address:
        return self._relay

    @property
    def overhead(self) -> int:
        return SEND_OVERHEAD

    @property
    def max_datagram_size(self) -> int:
        return self._max_packet_size + SEND_OVERHEAD

    @property
    def peer(self) -> bytes:
        return self._peer

    @property
    def peer_id(self) -> bytes:
        """The node this path leads to: a connection through it pins this node ID."""
        return self._peer

    def wrap(self, packet: bytes) -> bytes:
        return encode_send(self._tag(), self._peer, packet)

    def unwrap_untrusted(self, datagram: bytes) -> bytes:
        if not datagram or datagram[0] != FrameKind.DELIVER or len(datagram) <= DELIVER_OVERHEAD:
            raise BadPacket("not a DELIVER frame")
        if datagram[1:DELIVER_OVERHEAD] != self._peer:
            raise BadPacket("a DELIVER frame from another node than this path's peer")
        return datagram[DELIVER_OVERHEAD:]

    def __eq__(self, other: object) -> bool:
        # Two paths to the same node through the same relay are one path (whichever was made first
        # unwraps a DELIVER, the connection on the other recognises it).
        return isinstance(other, RelayPath) and (other._relay, other._peer) == (self._relay, self._peer)

    def __hash__(self) -> int:
        return hash((self._relay, self._peer))

    def __repr__(self) -> str:
        return f"RelayPath(relay={self._relay!r}, peer={self._peer.hex()[:12]}…)"


@attrs.frozen(kw_only=True)
class PunchOutcome:
    """How one hole punch ended."""

    peer: bytes
    address: Address | None
    """The peer's address a probe of its own came from: a proven direct route; None if none came."""
    punch_id: int


@attrs.define(eq=False)
class _Punch:
    punch: Punch
    received_at: float
    found: Address | None = None
    done: anyio.Event = attrs.field(factory=anyio.Event)


class RelayClient:
    """A node's registration with its home relay (see :func:`open_relay_client`)."""

    def __init__(
        self,
        endpoint: quantum.Endpoint,
        connection: quantum.Connection,
        *,
        path_tag: Callable[[], bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.connection = connection
        # The tag of the paths accepted relayed connections use (HomeRelay's follows re-registrations).
        self._path_tag = path_tag or self._tag
        self.relayed_paths_opened = 0
        """Relayed paths offered for INITIALs no path took (``accept_paths``; the endpoint keeps
        those that open a connection: a first INITIAL gets a RETRY, its retry with the cookie a path)."""
        self.relayed_dropped: dict[str, int] = {"not_initial": 0, "rate": 0}
        """DELIVERs no path took that opened none: from a node with no connection here and not an
        INITIAL, or over the rate."""
        self._path_tokens = float(MAX_NEW_RELAYED_PATHS)
        self._path_tokens_at = time.monotonic()
        self.registration: Registered | None = None
        self.observed: Address | None = None
        self.refusals: list[Refused] = []
        self.on_observed: Callable[[], None] | None = None
        """Called when the relay reports a new public address for this node."""
        self._registered = anyio.Event()
        self.closed = anyio.Event()
        """Set when the connection to the relay is over."""
        self._punches: dict[int, _Punch] = {}
        self._punch_waiters: dict[bytes, anyio.Event] = {}
        self._probes_received = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._serve_lock = anyio.Lock()
        self._served: Served | None = None
        self._serve_answered = anyio.Event()

    @property
    def relay_address(self) -> Address:
        return self.connection.peer_address

    @property
    def persistence_peer(self) -> Address | None:
        """Where the relay hosts documents (its node, with the relay's node ID), or None."""
        return _persistence_peer(self.registration, self.relay_address)

    async def serve(self, ticket: str) -> None:
        """Ask the relay to host the ticket's document (SERVE); :class:`ServeRefused` if it will not."""
        async with self._serve_lock:
            self._served, self._serve_answered = None, anyio.Event()
            await self.connection.send(encode_control(Serve(ticket=ticket)))
            with anyio.fail_after(SERVE_TIMEOUT):
                await self._serve_answered.wait()
            answer = self._served
            if answer is None:
                raise AetherFlowError("the connection to the relay ended before it answered SERVE")
            if answer.code is not ServeCode.ACCEPTED:
                raise ServeRefused(
                    f"the relay will not host the document ({answer.code.name.lower()}): {answer.reason}",
                    code=answer.code,
                )

    def _tag(self) -> bytes:
        return self.registration.tag if self.registration is not None else bytes(8)

    def _path_for(self, datagram: bytes) -> RelayPath | None:
        """``accept_paths``: a path back to the sender of a DELIVER that carries an INITIAL (or
        that comes from a node a connection here leads to: the peer moved it onto the relay).

        Called by the endpoint for each datagram from the relay that no registered path took
        (a DELIVER from a node with no connection here, or a non-relay frame: PROBE, which
        goes on to the raw handler). At most ``MAX_NEW_RELAYED_PATHS`` per second.
        """
        if len(datagram) < DELIVER_OVERHEAD + 2 or datagram[0] != FrameKind.DELIVER:
            return None
        source = bytes(datagram[1:DELIVER_OVERHEAD])
        if datagram[DELIVER_OVERHEAD + 1] != _INITIAL_TYPE and not self._has_connection_to(source):
            self.relayed_dropped["not_initial"] += 1
            return None
        now = time.monotonic()
        self._path_tokens = min(
            float(MAX_NEW_RELAYED_PATHS),
            self._path_tokens + (now - self._path_tokens_at) * MAX_NEW_RELAYED_PATHS,
        )
        self._path_tokens_at = now
        if self._path_tokens < 1:
            self.relayed_dropped["rate"] += 1
            return None
        self._path_tokens -= 1
        self.relayed_paths_opened += 1
        size = self.registration.max_packet_size if self.registration is not None else 1400
        return RelayPath(self.relay_address, tag=self._path_tag, peer=source, max_packet_size=size)

    def _has_connection_to(self, node: bytes) -> bool:
        """A live connection here leads to ``node`` (it may be moving that connection onto the relay).

        A scan of this node's connections, run only for a DELIVER that no path took and that is
        not an INITIAL: rare (a peer's move onto the relay, or a stray), and each is one compare.
        """
        return any(c.peer_id == node for c in self.endpoint.connections())

    async def connect_relayed(
        self, peer_id: bytes, *, timeout: float = RELAYED_CONNECT_TIMEOUT
    ) -> quantum.Connection:
        """A Quantum connection to ``peer_id`` whose handshake and packets go through this relay."""
        return await _connect_relayed(self.endpoint, self.relayed_path(peer_id), self.relay_address, timeout)

    def relayed_path(self, peer: bytes) -> RelayPath:
        """The path to ``peer`` through this relay (for ``conn.migrate_to_path`` / ``endpoint.add_path``)."""
        if self.registration is None:
            raise AetherFlowError("not registered with the relay yet")
        return RelayPath(
            self.relay_address, tag=self.registration.tag, peer=peer,
            max_packet_size=self.registration.max_packet_size,
        )  # fmt: skip

    async def _register(self, token: str | None, candidates: tuple[Address, ...], timeout: float) -> None:
        await self.connection.send(
            encode_control(Register(token=token, candidates=candidates[:MAX_CANDIDATES]))
        )
        with anyio.fail_after(timeout):
            await self._registered.wait()
        if self.registration is None:
            refusal = self.refusals[-1]
            raise RelayRefused(f"the relay refused the registration: {refusal.reason}", code=refusal.code)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.connection.receive()
                try:
                    message = parse_control_untrusted(data)
                except BadPacket:
                    logger.warning("a malformed message from the relay was dropped")
                    continue
                self._on_control(message)
        except AetherFlowError:
            self._registered.set()
        finally:
            self._serve_answered.set()
            self.closed.set()

    def _on_control(self, message: object) -> None:
        match message:
            case Registered():
                self.registration = message
                self.observed = message.observed
                self._registered.set()
            case Observed(observed=observed):
                self.observed = observed
                logger.info("the relay sees a new public address", extra={"observed": observed})
                if self.on_observed is not None:
                    self.on_observed()
            case Punch():
                state = _Punch(punch=message, received_at=time.monotonic())
                self._punches[message.punch_id] = state
                waiter = self._punch_waiters.pop(message.peer, None)
                if waiter is not None:
                    waiter.set()
                assert self._task_group is not None
                self._task_group.start_soon(self._run_punch, state)
            case Served():
                self._served = message
                self._serve_answered.set()
            case Refused():
                self.refusals.append(message)
                if self.registration is None:
                    self._registered.set()
                waiter = self._punch_waiters.pop(message.subject, None)
                if waiter is not None:
                    waiter.set()

    def _on_raw(self, data: bytes, address: Address) -> None:
        try:
            frame = parse_frame_untrusted(data)
        except BadPacket:
            return
        if isinstance(frame, ProbeFrame):
            state = self._punches.get(frame.punch_id)
            if state is not None and frame.sender == state.punch.peer and state.found is None:
                self._probes_received += 1
                state.found = address
                # Answer at once: the peer's NAT now has the mapping our probe proves.
                self.endpoint.send_raw(encode_probe(frame.punch_id, self.endpoint.node_id), address)
        elif isinstance(frame, DeliverFrame):
            pass  # a DELIVER no registered RelayPath took: no connection of ours is relayed to it

    async def _watch(self, liveness_timeout: float) -> None:
        """Abort the relay connection when nothing came from the relay for ``liveness_timeout`` s.

        The relay answers our keepalives, so silence means it is gone (a restarted relay has
        forgotten our connection and drops its packets): better to register again now than
        after the whole idle timeout.
        """
        last, heard = self.connection.statistics().packets_received, time.monotonic()
        while not self.closed.is_set():
            await anyio.sleep(min(liveness_timeout / 4, 1.0))
            received = self.connection.statistics().packets_received
            if received != last:
                last, heard = received, time.monotonic()
            elif time.monotonic() - heard > liveness_timeout:
                logger.info(
                    "the relay went silent; reconnecting", extra={"silent_s": round(liveness_timeout, 1)}
                )
                self.connection.abort("the relay stopped answering")
                return

    async def _run_punch(self, state: _Punch) -> None:
        """At the go, probe every candidate of the peer until one of its probes arrives."""
        punch = state.punch
        await anyio.sleep(max(state.received_at + punch.delay - time.monotonic(), 0))
        probe = encode_probe(punch.punch_id, self.endpoint.node_id)
        deadline = time.monotonic() + PROBE_DURATION
        while state.found is None and time.monotonic() < deadline:
            for candidate in punch.candidates:
                self.endpoint.send_raw(probe, candidate)
            await anyio.sleep(PROBE_INTERVAL)
        if state.found is not None:
            # A few more, so the peer hears us even if our first ones hit its closed NAT.
            for _ in range(3):
                self.endpoint.send_raw(probe, state.found)
                await anyio.sleep(PROBE_INTERVAL)
        state.done.set()
        with contextlib.suppress(AetherFlowError):
            await self.connection.send(
                encode_control(PunchResult(punch_id=punch.punch_id, direct=state.found is not None))
            )

    async def punch(self, peer: bytes, candidates: tuple[Address, ...] = ()) -> PunchOutcome:
        """Ask the relay to coordinate a hole punch to ``peer``; wait until it ends."""
        waiter = self._punch_waiters[peer] = anyio.Event()
        await self.connection.send(encode_control(Connect(peer=peer, candidates=candidates[:MAX_CANDIDATES])))
        with anyio.fail_after(PUNCH_TIMEOUT):
            await waiter.wait()
        state = next((s for s in reversed(self._punches.values()) if s.punch.peer == peer), None)
        if state is None:
            refusal = next(r for r in reversed(self.refusals) if r.subject == peer)
            raise RelayRefused(f"the relay refused the punch: {refusal.reason}", code=refusal.code)
        await state.done.wait()
        return PunchOutcome(peer=peer, address=state.found, punch_id=state.punch.punch_id)


@contextlib.asynccontextmanager
async def open_relay_client(
    endpoint: quantum.Endpoint,
    relay: Address,
    *,
    relay_id: bytes | None = None,
    token: str | None = None,
    candidates: tuple[Address, ...] = (),
    timeout: float = 10.0,
    liveness_timeout: float | None = None,
    path_tag: Callable[[], bytes] | None = None,
) -> AsyncIterator[RelayClient]:
    """Connect to the relay at ``relay`` (pinning ``relay_id`` if given) and register.

    The client takes the endpoint's raw handler (PROBE frames) for as long as the block runs,
    and, once registered, the relay's address for ``endpoint.accept_paths`` (relayed
    connections from other nodes; ``path_tag`` gives their paths' tag, default this
    registration's).
    """
    with anyio.fail_after(timeout):
        connection = await endpoint.connect(relay, peer_id=relay_id)
    client = RelayClient(endpoint, connection, path_tag=path_tag)
    refused: RelayRefused | None = None
    async with anyio.create_task_group() as tg:
        client._task_group = tg
        endpoint.set_raw_handler(client._on_raw)
        tg.start_soon(client._read_loop)
        if liveness_timeout is not None:
            tg.start_soon(client._watch, liveness_timeout)
        try:
            await client._register(token, candidates, timeout)
        except RelayRefused as exc:
            refused = exc  # raised below, outside the task group: one plain exception
        try:
            if refused is None:
                endpoint.accept_paths(client.relay_address, client._path_for)
                yield client
        finally:
            endpoint.accept_paths(client.relay_address, None)
            endpoint.set_raw_handler(None)
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(AetherFlowError):
                await connection.aclose()
    if refused is not None:
        raise refused


async def _connect_relayed(
    endpoint: quantum.Endpoint, path: RelayPath, relay: Address, timeout: float
) -> quantum.Connection:
    try:
        with anyio.fail_after(timeout):
            return await endpoint.connect_path(path, peer_id=path.peer_id)
    except (TimeoutError, ConnectionTimeout):
        raise ConnectionTimeout(
            f"node {path.peer_id.hex()[:16]}... did not answer through the relay at {relay[0]}:{relay[1]} "
            f"within {timeout:g} s: is it registered with this relay and online?"
        ) from None


RECONNECT_MIN: Final = 0.2  # seconds before the first reconnection attempt
RECONNECT_MAX: Final = 10.0  # the backoff's ceiling


class HomeRelay:
    """A registration with one relay that is kept: lost, it is made again with backoff.

    Use :func:`open_home_relay`. :attr:`client` is the live :class:`RelayClient` (None while
    reconnecting); :meth:`relayed_path` gives paths that follow re-registrations.
    """

    def __init__(self, endpoint: quantum.Endpoint, relay: Address, relay_id: bytes | None) -> None:
        self.endpoint = endpoint
        self.relay_address = relay
        self.relay_id = relay_id
        self.client: RelayClient | None = None
        self.registrations = 0
        """How many times this node registered (1 + reconnections)."""
        self._changed = anyio.Event()

    @property
    def observed(self) -> Address | None:
        return self.client.observed if self.client is not None else None

    @property
    def persistence_peer(self) -> Address | None:
        """Where the relay hosts documents, while registered with one that does; else None."""
        client = self.client
        return client.persistence_peer if client is not None else None

    def _tag(self) -> bytes:
        client = self.client
        if client is None or client.registration is None:
            return bytes(8)  # not registered right now: the relay drops it as unregistered
        return client.registration.tag

    async def wait_registered(self) -> RelayClient:
        """The live client, once registered (waits through reconnections)."""
        while self.client is None or self.client.registration is None:
            await self._changed.wait()
        return self.client

    def relayed_path(self, peer: bytes) -> RelayPath:
        """The path to ``peer`` through this relay; its tag follows re-registrations.

        Its address is the one the live connection to the relay uses (the relay as resolved:
        DELIVERs are matched by their source address), else the relay's address as given.
        """
        client = self.client
        size = client.registration.max_packet_size if client and client.registration else 1400
        address = client.relay_address if client is not None else self.relay_address
        return RelayPath(address, tag=self._tag, peer=peer, max_packet_size=size)

    async def punch(self, peer: bytes, candidates: tuple[Address, ...] = ()) -> PunchOutcome:
        return await (await self.wait_registered()).punch(peer, candidates)

    async def connect_relayed(
        self, peer_id: bytes, *, timeout: float = RELAYED_CONNECT_TIMEOUT
    ) -> quantum.Connection:
        """A Quantum connection to ``peer_id`` through the relay (its handshake too), pinned to it.

        For a peer with no direct route (both behind symmetric NATs); :meth:`upgrade` may move
        it to a direct path later. Waits for the registration first (within ``timeout``).
        ConnectionTimeout, saying so, if the peer does not answer through the relay in time (it
        is not registered there, or offline); HandshakeFailed if another node answers.
        """
        try:
            with anyio.fail_after(timeout):
                await self.wait_registered()
        except TimeoutError:
            host, port = self.relay_address
            raise ConnectionTimeout(
                f"not registered with the relay at {host}:{port} within {timeout:g} s: cannot reach "
                "anyone through it"
            ) from None
        return await _connect_relayed(self.endpoint, self.relayed_path(peer_id), self.relay_address, timeout)

    async def upgrade(self, connection: quantum.Connection) -> bool:
        """Try to move a relayed ``connection`` to a direct path: punch, then migrate.

        True if it is direct afterwards; False (and still relayed, sessions and channels
        untouched) if the punch found no route or the new path never answered.
        """
        if not isinstance(connection.path, RelayPath):
            return True
        outcome = await self.punch(connection.peer_id)
        if outcome.address is None:
            return False
        try:
            await connection.migrate(outcome.address)
        except AetherFlowError:
            return False
        return True

    async def wait_changed(self) -> None:
        """Until the registration changes (lost, or made again) or the relay reports a new
        public address for this node: its punch candidates may have changed."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _set(self, client: RelayClient | None) -> None:
        self.client = client
        if client is not None:
            client.on_observed = self._notify
        self._notify()

    async def _keep(
        self, token: str | None, candidates: tuple[Address, ...], timeout: float, liveness_timeout: float
    ) -> None:
        backoff = Backoff(random.Random(), base=RECONNECT_MIN, cap=RECONNECT_MAX)
        while True:
            try:
                async with open_relay_client(
                    self.endpoint, self.relay_address, relay_id=self.relay_id, token=token,
                    candidates=candidates, timeout=timeout, liveness_timeout=liveness_timeout,
                    path_tag=self._tag,
                ) as client:  # fmt: skip
                    self.registrations += 1
                    backoff.reset()
                    self._set(client)
                    logger.info("registered with the relay", extra={"observed": client.observed})
                    await client.closed.wait()
            except (AetherFlowError, TimeoutError) as exc:
                error: str | None = str(exc)
            else:
                error = None
            self._set(None)
            delay = backoff.next_delay()
            if error is not None:
                logger.info("relay unreachable, retrying", extra={"error": error, "in_s": round(delay, 2)})
            await anyio.sleep(delay)


@contextlib.asynccontextmanager
async def open_home_relay(
    endpoint: quantum.Endpoint,
    relay: Address,
    *,
    relay_id: bytes | None = None,
    token: str | None = None,
    candidates: tuple[Address, ...] = (),
    timeout: float = 10.0,
    liveness_timeout: float = 15.0,
) -> AsyncIterator[HomeRelay]:
    """Keep ``endpoint``'s node registered with the relay at ``relay`` until the block ends.

    ``liveness_timeout`` should be a few of the endpoint's ``keepalive_interval``s.
    """
    home = HomeRelay(endpoint, relay, relay_id)
    async with anyio.create_task_group() as tg:
        tg.start_soon(home._keep, token, candidates, timeout, liveness_timeout)
        try:
            yield home
        finally:
            tg.cancel_scope.cancel()
