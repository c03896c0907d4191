"""The async shell around :class:`EndpointCore`: one UDP socket, many connections.

This is the only Quantum module that reads the clock or touches a socket. It
uses anyio, so it runs under trio (the reference) and under asyncio (Textual,
zeroconf). One background task owns the socket: it drains every readable
datagram into the core, fires expired timers, and sleeps until the next timer
or the next datagram. Application calls (``send``, ``receive`` ...) act on the
core directly and push any resulting packets out at once, so a message leaves
without waiting for the background task to be scheduled.

After each batch, the connections the core reports changed (``take_changed()``)
have their events turned into the endpoint's event stream (``events()``), and a
connection that closed is forgotten: the endpoint holds only live connections.
"""

from __future__ import annotations

import errno
import math
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Final

import anyio
from anyio.abc import TaskGroup

from aetherflow_sdk._errors import ClosedLocally, ConnectionClosed, LocalProtocolError
from aetherflow_sdk._identity import Identity
from aetherflow_sdk._uuid7 import uuid7
from aetherflow_sdk.quantum import _channel_shell, _path_shell
from aetherflow_sdk.quantum._channel_shell import Channel
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._connection import Address, HandshakeCompleted, PathMigrated, QuantumConnection
from aetherflow_sdk.quantum._endpoint_core import EndpointCore, check_address, check_peer_id
from aetherflow_sdk.quantum._events import (
    ConnectionEnded,
    ConnectionEstablished,
    EventHub,
    EventStream,
    PathChanged,
)
from aetherflow_sdk.quantum._path_shell import PathMigration
from aetherflow_sdk.quantum._paths import Path
from aetherflow_sdk.quantum._states import CAN_SEND_DATA, HANDSHAKING, OPEN
from aetherflow_sdk.quantum._stats import ConnectionStatistics, EndpointStatistics

RECEIVE_BATCH: Final = 256  # datagrams drained per wake-up before timers and output get a turn
SOCKET_BUFFER: Final = 4 * 1024 * 1024  # kernel buffers sized for bulk transfers on fast paths
CLOSE_GRACE: Final = 5.0  # how long endpoint shutdown waits for graceful closes to finish

# Linux UDP segmentation offload (linux/udp.h; Python 3.11's socket module lacks the names).
# GSO: one sendmsg() hands the kernel a run of equal-size datagrams for one address (the last
# may be shorter), and it splits them (in the NIC, or in software). GRO: the receiving socket
# gets such runs back as one buffer plus the segment size. One system call then moves dozens
# of packets, where sendto()/recvfrom() cost one each. Either side works without the other.
UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO: Final = getattr(socket, "UDP_GRO", 104)
GSO_MAX_SEGMENTS: Final = 64  # UDP_MAX_SEGMENTS in linux/udp.h
GSO_MAX_BYTES: Final = 65_000  # a UDP payload must fit a 64 KiB IP packet
_GSO_SIZE = struct.Struct("=H")
_GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)  # the kernel reports the segment size as an int
# Errors that mean "this socket or path cannot segment": send one by one from then on.
_GSO_UNSUPPORTED: Final = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
# Send errors that lose a datagram but leave the socket usable: ICMP errors reported on a later
# send, a full device queue (ENOBUFS), a netfilter drop (EPERM), a datagram over the path's MTU
# (EMSGSIZE), a destination this socket cannot send to at all (EINVAL, EADDRNOTAVAIL: a socket
# bound to loopback and a peer's public address, learnt from another peer). Treat them as loss:
# the protocol's own timers recover, the endpoint task carries on.
_LOSS_LIKE_ERRORS: Final = frozenset(
    {
        errno.EINVAL,
        errno.EADDRNOTAVAIL,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENOBUFS,
        errno.EAGAIN,
        errno.EPERM,
        errno.EMSGSIZE,
    }
)


def _normalize(address: tuple[object, ...]) -> Address:
    return (str(address[0]), int(address[1]))  # type: ignore[call-overload]


def _check_bytes(data: object, call: str) -> bytes:
    """``data`` as bytes, or a clear LocalProtocolError (e.g. for text that was not encoded)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    hint = "; encode text first (data.encode())" if isinstance(data, str) else ""
    raise LocalProtocolError(f"{call}() takes bytes, not {type(data).__name__}{hint}")


def _gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a coalesced GRO buffer (0 if the kernel did not coalesce)."""
    for level, kind, value in ancillary:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            return int.from_bytes(value[:4], sys.byteorder)
    return 0


def _enable_offload(sock: socket.socket) -> tuple[bool, bool]:
    """Turn on UDP GSO/GRO where the platform has them; (gso, gro) says which."""
    if not sys.platform.startswith("linux"):
        return False, False
    gso = gro = False
    with suppress(OSError):
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 0)  # probe only: 0 keeps per-call segmenting off
        gso = True
    with suppress(OSError):
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        gro = True
    return gso, gro


class Endpoint:
    """A Quantum endpoint: dials and accepts connections on one UDP socket.

    Create it with :func:`open_endpoint`, never directly.
    """

    def __init__(
        self, sock: socket.socket, core: EndpointCore, *, gso: bool = False, gro: bool = False
    ) -> None:
        self._sock = sock
        self._gso = gso  # send runs of equal-size datagrams with one sendmsg (UDP_SEGMENT)
        self._gro = gro  # the kernel may hand us several datagrams in one buffer (UDP_GRO)
        self._core = core
        self._backlog: list[tuple[bytes, Address]] = []
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleep_until = math.inf  # the core timer the background task sleeps until
        self._closed = False
        # Every connection the application can see (dialled, or established inbound), by local
        # connection ID; dropped when the connection closes.
        self._wrappers: dict[bytes, Connection] = {}
        self._event_hub = EventHub()
        self._membership = anyio.Event()  # set when a connection is established inbound or forgotten

    # -------------------------------------------------------------- public API

    @property
    def local_address(self) -> Address:
        """The (host, port) this endpoint's socket is bound to."""
        return _normalize(self._sock.getsockname())

    @property
    def node_id(self) -> bytes:
        """This endpoint's public identity (its Ed25519 public key)."""
        return self._core.identity.node_id

    @property
    def config(self) -> QuantumConfig:
        return self._core.config

    async def connect(self, address: tuple[str, int], *, peer_id: bytes | None = None) -> Connection:
        """Open a connection to ``address`` and wait for the handshake.

        ``peer_id`` pins the server's node ID: the handshake fails with HandshakeFailed if the
        server proves a different identity. Raises ConnectionTimeout if nobody answers within
        ``config.handshake_timeout``. A malformed ``address`` or ``peer_id`` (it is the 32-byte
        node ID, not its text form) raises LocalProtocolError before anything is sent.
        """
        self._check_open()
        host, port = check_address(address)
        peer_id = check_peer_id(peer_id)
        try:
            resolved = await anyio.getaddrinfo(host, port, family=self._sock.family, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise LocalProtocolError(f"cannot resolve {host!r}: {exc}") from None
        target = _normalize(resolved[0][4])
        return await self._handshake(self._core.connect(target, anyio.current_time(), peer_id=peer_id))

    async def connect_path(self, path: Path, *, peer_id: bytes | None = None) -> Connection:
        """Open a connection whose first path is ``path`` (e.g. a relay's) and wait for the handshake.

        Every packet, the handshake's included, goes through ``path``; the connection may
        :meth:`Connection.migrate` to a direct path later. ``peer_id`` is required (and must
        agree with ``path.peer_id``): the handshake fails with HandshakeFailed if the node that
        answers through the path proves another identity. LocalProtocolError for a missing
        ``peer_id`` or a path too small for the handshake; ConnectionTimeout if nobody answers.
        """
        self._check_open()
        return await self._handshake(self._core.connect_path(path, anyio.current_time(), peer_id=peer_id))

    def accept_paths(self, address: tuple[str, int], path_for: Callable[[bytes], Path | None] | None) -> None:
        """Let connections arrive through framed paths from ``address`` (e.g. a relay's).

        A datagram from ``address`` that no registered path takes is offered to
        ``path_for(datagram) -> Path | None`` (a plain function: it runs in the receive loop);
        the path it returns carries the connection that datagram's INITIAL opens. Such a
        connection comes out of :meth:`accept` as usual, its ``path`` is that path, and a client
        whose proven node ID is not ``path.peer_id`` is refused. ``path_for=None`` stops.
        """
        self._core.accept_paths(address, path_for)

    async def _handshake(self, core_connection: QuantumConnection) -> Connection:
        connection = self._wrap(core_connection)
        self._after_app_action(core_connection)  # sends INITIAL and wakes the task for its timers
        while not core_connection.is_established:
            if core_connection.state not in HANDSHAKING:
                raise connection._error()
            await connection._wait_change()
        return connection

    async def accept(self) -> Connection:
        """Wait for the next incoming connection whose handshake completed."""
        while True:
            self._check_open()
            while self._core.accepted:
                core_connection = self._core.accepted.popleft()
                if core_connection.is_established:
                    wrapper = self._wrappers.get(core_connection.local_cid)
                    if wrapper is None:
                        self._connection_changed(core_connection)  # wraps it, announces it
                        wrapper = self._wrappers[core_connection.local_cid]
                    return wrapper
            await self._wait_membership()

    def connections(self) -> tuple[Connection, ...]:
        """The live connections, in the order they were established.

        A connection is listed from its handshake (inbound ones even before ``accept()``
        returns them) until it closes; closed connections are forgotten.
        """
        return tuple(c for c in self._wrappers.values() if c._listed)

    def events(self) -> EventStream:
        """The events of every connection from this call on, as an async iterator::

            async for event in endpoint.events():
                match event:
                    case quantum.ConnectionEstablished(connection=conn): ...
                    case quantum.PathChanged(old=old, new=new): ...
                    case quantum.ConnectionEnded(reason=reason): ...

        Each call returns a new stream that sees every event; it ends when the endpoint
        closes. A stream nobody reads keeps the last ``EVENT_BUFFER`` events (``dropped``
        counts the rest); drop the stream to stop collecting.
        """
        return self._event_hub.subscribe()

    def set_channel_filter(self, channel_filter: Callable[[bytes, bytes], bool] | None) -> None:
        """Decide which channels peers may open: ``channel_filter(peer_id, name) -> accept?``.

        Called for every CHANNEL_OPEN on any of this endpoint's connections; a refused (or a
        raising) filter makes the opener's ``open_channel`` raise ChannelRefused with a reason.
        None (the default) accepts every name."""
        if channel_filter is not None and not callable(channel_filter):
            raise LocalProtocolError(
                f"the channel filter must be callable, got {type(channel_filter).__name__}"
            )
        self._core.channel_filter = channel_filter

    def set_raw_handler(self, handler: Callable[[bytes, Address], None] | None) -> None:
        """Call ``handler(data, address)`` for every datagram on the socket that is not Quantum.

        The first-byte rule (docs/protocol.md, section 1): a datagram whose first byte is 0x40
        or above is raw. The handler runs inside the endpoint's receive loop, so it must not
        block; one that raises costs only its datagram. None (the default) drops them.
        """
        self._core.set_raw_handler(handler)

    def send_raw(self, data: bytes, address: tuple[str, int]) -> bool:
        """Send one raw datagram (first byte 0x40 or above) from this endpoint's socket.

        To an address that is not the proven path of one of this endpoint's connections, at
        most 1200 bytes plus 3x what that address sent us may go (anti-amplification): past
        that it returns False and sends nothing (``raw_datagrams_refused``).
        """
        self._check_open()
        sent = self._core.send_raw(_check_bytes(data, "send_raw"), address)
        self._flush()
        return sent

    def add_path(self, path: Path) -> None:
        """Receive through a framed ``path`` (e.g. a relay's) that the peer may move a connection to.

        Raw datagrams from ``path.address`` that ``path.unwrap_untrusted`` accepts are then
        Quantum packets; a connection that receives one follows the peer onto ``path``.
        ``Connection.migrate_to_path`` registers its path itself."""
        self._core.add_path(path)

    def remove_path(self, path: Path) -> None:
        """Stop receiving through ``path``."""
        self._core.remove_path(path)

    def statistics(self) -> EndpointStatistics:
        """Counters of the socket and the stateless handshake gate."""
        return self._core.statistics()

    async def aclose(self) -> None:
        """Close every connection gracefully (bounded by CLOSE_GRACE), then stop."""
        if self._closed:
            return
        for connection in list(self._wrappers.values()):
            connection._core.close(anyio.current_time())
            self._core.mark_dirty(connection._core)
        self._flush()
        with anyio.move_on_after(CLOSE_GRACE):
            while any(c._core.state in OPEN for c in self._wrappers.values()):
                await self._wait_membership()
        self._closed = True
        self._event_hub.close()
        for connection in list(self._wrappers.values()):
            connection._notify()
        self._membership_changed()

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedLocally("this endpoint is closed")

    def _wrap(self, core_connection: QuantumConnection) -> Connection:
        wrapper = Connection(self, core_connection)
        self._wrappers[core_connection.local_cid] = wrapper
        return wrapper

    def _dispatch(self) -> None:
        """Pass on what changed in the core's connections: events, and forgetting the closed."""
        for core_connection in self._core.take_changed():
            self._connection_changed(core_connection)

    def _connection_changed(self, core: QuantumConnection) -> None:
        cid = core.local_cid
        connection = self._wrappers.get(cid)
        if connection is None:
            if not core.is_established:  # an inbound handshake, or one that ended before it finished
                if core.state not in HANDSHAKING:
                    while core.next_event() is not None:
                        pass
                return
            connection = self._wrap(core)  # inbound, established: visible before accept()
            self._membership_changed()
        publish = self._event_hub.publish
        while (event := core.next_event()) is not None:
            if isinstance(event, HandshakeCompleted) and not connection._listed and core.state in OPEN:
                connection._listed = True
                connection._address = core.peer_address
                publish(
                    ConnectionEstablished(
                        connection=connection,
                        peer_id=event.peer_id,
                        address=core.peer_address,
                        inbound=not core.is_client,
                    )
                )
            elif (
                isinstance(event, PathMigrated)
                and connection._listed
                and event.address != connection._address
            ):
                old, connection._address = connection._address, event.address
                publish(PathChanged(connection=connection, old=old, new=event.address))
        if core.state not in OPEN:
            if connection._listed:
                connection._listed = False
                error = connection._error()
                publish(ConnectionEnded(connection=connection, reason=str(error), error=error))
            if core.is_closed or cid not in self._core.connections:
                self._wrappers.pop(cid, None)
            self._membership_changed()
        connection._notify()  # only the tasks waiting on this connection wake

    def _membership_changed(self) -> None:
        self._membership.set()
        self._membership = anyio.Event()

    async def _wait_membership(self) -> None:
        """Wait until a connection is established inbound, closes or is forgotten, or the
        endpoint closes."""
        await self._membership.wait()

    def _kick(self) -> None:
        """Wake the background task: an application call may have moved a timer earlier."""
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    def _flush(self) -> None:
        """Send everything the core has ready, without blocking; the rest waits in the backlog."""
        if self._backlog:
            self._drain_backlog()
            if self._backlog:
                self._dispatch()
                return
        now = anyio.current_time()
        while True:
            out = self._core.datagrams_to_send(now)
            if not out:
                break
            sent = self._send_all(out)
            if sent < len(out):
                self._backlog.extend(out[sent:])
                self._kick()
                break
        self._dispatch()

    def _drain_backlog(self) -> None:
        del self._backlog[: self._send_all(self._backlog)]

    def _send_all(self, datagrams: list[tuple[bytes, Address]]) -> int:
        """Send ``datagrams`` in order until the socket would block; return how many left.

        Consecutive datagrams to one address that share a size (the last of a run may be
        shorter) go out as one GSO buffer when the kernel supports it.
        """
        index = 0
        count = len(datagrams)
        while index < count:
            data, address = datagrams[index]
            run = 1
            if self._gso:
                size = len(data)
                total = size
                while index + run < count and run < GSO_MAX_SEGMENTS:
                    next_data, next_address = datagrams[index + run]
                    if (
                        next_address != address
                        or len(next_data) > size
                        or total + len(next_data) > GSO_MAX_BYTES
                    ):
                        break
                    run += 1
                    total += len(next_data)
                    if len(next_data) < size:
                        break  # a shorter datagram ends the run
            try:
                if run == 1:
                    self._sock.sendto(data, address)
                else:
                    buffer = b"".join([d for d, _ in datagrams[index : index + run]])
                    self._sock.sendmsg(
                        [buffer], [(socket.SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(len(data)))], 0, address
                    )
            except BlockingIOError:
                return index
            except OSError as exc:
                if run > 1 and exc.errno in _GSO_UNSUPPORTED:
                    self._gso = False  # e.g. no checksum offload on this route: one by one from now on
                    continue
                if exc.errno not in _LOSS_LIKE_ERRORS:
                    raise
                # Lost like a dropped datagram: the loss shows up in the protocol's own timers
            index += run
        return count

    def _after_app_action(self, core_connection: QuantumConnection) -> None:
        self._core.mark_dirty(core_connection)
        self._flush()
        # Wake the background task only if its sleep now ends too late: a wake-up per send()
        # costs more than asking this connection for its timer (an application call moves
        # only its own connection's timers).
        timer = core_connection.get_timer()
        if timer is not None and timer < self._sleep_until:
            self._kick()

    async def _run(self) -> None:
        """The background task: socket input, timers, output."""
        sock = self._sock
        core = self._core
        while not self._closed:
            now = anyio.current_time()
            activity = False
            received = 0
            while received < RECEIVE_BATCH:
                try:
                    if self._gro:
                        data, ancillary, _, address = sock.recvmsg(65536, _GRO_CMSG_SPACE)
                    else:
                        data, address = sock.recvfrom(65536)
                        ancillary = None
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    received += 1
                    continue  # e.g. ECONNREFUSED surfaced on a later read: ignore, timers handle loss
                peer = _normalize(address)
                activity = True
                if ancillary:
                    segment = _gro_segment_size(ancillary)
                    if segment and segment < len(data):
                        for start in range(0, len(data), segment):
                            core.receive_datagram(data[start : start + segment], peer, now)
                        received += -(-len(data) // segment)
                        continue
                core.receive_datagram(data, peer, now)
                received += 1
            timer = core.get_timer()
            if timer is not None and timer <= now:
                core.handle_timer(now)
                activity = True
            self._flush()  # and wakes the tasks waiting on the connections that changed
            if activity:
                await anyio.lowlevel.checkpoint()
                continue
            timer = core.get_timer()
            delay = None if timer is None else max(0.0, timer - anyio.current_time())
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                self._sleep_until = math.inf if timer is None else timer
                if delay is not None:
                    scope.deadline = anyio.current_time() + delay
                if self._backlog:
                    await anyio.wait_writable(sock)
                    self._drain_backlog()
                else:
                    await anyio.wait_readable(sock)
            self._sleep_scope = None
            if self._closed:
                break


class Connection:
    """One Quantum connection, as the application uses it.

    It satisfies :class:`aetherflow_sdk._channel.MessageChannel`.
    """

    def __init__(self, endpoint: Endpoint, core: QuantumConnection) -> None:
        self._endpoint = endpoint
        self._core = core
        self._listed = False  # between its ConnectionEstablished and ConnectionEnded events
        self._address = core.peer_address  # as last announced (PathChanged's ``old``)
        self._wakeup: anyio.Event | None = None  # made when a task waits; set by _notify()

    async def _wait_change(self) -> None:
        """Wait until the network, a timer or a close changed this connection.

        The one wait hook of a connection: its own calls and its channels' wait here, and the
        endpoint wakes only the connections the core reports changed (``take_changed()``).
        Callers re-check their condition after each wake-up.
        """
        if self._endpoint._closed:
            raise ClosedLocally("this endpoint is closed")
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        await self._wakeup.wait()

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    @property
    def peer_id(self) -> bytes:
        """The peer's node ID, proven by the handshake."""
        assert self._core.peer_id is not None
        return self._core.peer_id

    @property
    def connection_id(self) -> uuid.UUID:
        """Our connection ID (a UUIDv7)."""
        return uuid.UUID(bytes=self._core.local_cid)

    @property
    def peer_address(self) -> Address:
        """Where the peer's packets currently come from."""
        return self._core.peer_address

    @property
    def max_message_size(self) -> int:
        return self._core.max_message_size

    def _error(self) -> ConnectionClosed:
        error = self._core.error or ClosedLocally("connection closed")
        return type(error)(str(error), error_code=error.error_code, reason=error.reason)

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        """Send one reliable message. Waits while the send buffer is full (backpressure).

        Ordered messages arrive in the order sent; unordered ones as soon as each is complete.
        Raises MessageTooLarge past the negotiated limit, ConnectionClosed once closed.
        """
        data = _check_bytes(data, "send")
        core = self._core
        while not core.can_send_message(len(data)):
            if core.state not in CAN_SEND_DATA:
                break  # send_message raises the right error
            await self._wait_change()
        core.send_message(data, ordered=ordered)
        self._endpoint._after_app_action(core)
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        """The next message. After the peer closes, buffered messages come first, then the error."""
        core = self._core
        while True:
            message = core.receive_message()
            if message is not None:
                if core.has_window_update():  # else taking a message changes nothing to send
                    self._endpoint._after_app_action(core)
                await anyio.lowlevel.checkpoint()
                return message
            if core.state not in CAN_SEND_DATA:
                raise self._error()
            await self._wait_change()

    def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram (it may be lost). Never blocks."""
        self._core.send_datagram(_check_bytes(data, "send_datagram"))
        self._endpoint._after_app_action(self._core)

    async def receive_datagram(self) -> bytes:
        """The next unreliable datagram."""
        core = self._core
        while True:
            data = core.receive_datagram_frame()
            if data is not None:
                await anyio.lowlevel.checkpoint()
                return data
            if core.state not in CAN_SEND_DATA:
                raise self._error()
            await self._wait_change()

    def statistics(self) -> ConnectionStatistics:
        """A frozen snapshot of RTT, congestion and counters."""
        return self._core.statistics()

    async def migrate(self, address: tuple[str, int]) -> None:
        """Move this connection to the peer at ``address``, directly, once the path is proven.

        A PATH_CHALLENGE goes to ``address``; until its answer comes back every message keeps
        going on the current path, and after it, all of them take the new one. Keys, messages
        in flight and channels are kept; RTT and congestion start afresh (RFC 9000 §9.4).
        Raises PathValidationFailed if the address never answers (after about 7 s).
        """
        await _path_shell.migrate(self, address)

    def migrate_to_path(self, path: Path) -> PathMigration:
        """Start moving this connection to ``path`` (e.g. a relay's); await the result to wait.

        Like :meth:`migrate`, for any :class:`~aetherflow_sdk.quantum.Path`: a framed one is
        registered on the endpoint, so that what comes back through it reaches this connection.
        """
        return _path_shell.start_migration(self, path)

    @property
    def path(self) -> Path:
        """The path the connection's packets take now."""
        return self._core.path

    async def open_channel(self, name: bytes) -> Channel:
        """Open a channel named ``name`` (1-255 bytes) and wait for the peer to accept it.

        Raises ChannelRefused (with ``.reason``) if the peer's channel filter or channel limit
        refuses it. This connection itself stays channel 0."""
        return await _channel_shell.open_channel(self, name)

    async def accept_channel(self) -> Channel:
        """The next channel the peer opened and this endpoint's channel filter accepted."""
        return await _channel_shell.accept_channel(self)

    async def aclose(self) -> None:
        """Graceful close: waits until everything sent was delivered and the peer was told."""
        core = self._core
        core.close(anyio.current_time())
        self._endpoint._after_app_action(core)
        self._endpoint._connection_changed(core)
        while core.state in CAN_SEND_DATA:
            await self._wait_change()
        await anyio.lowlevel.checkpoint()

    def abort(self, reason: str = "") -> None:
        """Close at once; undelivered messages are discarded and the peer is told."""
        if not isinstance(reason, str):
            raise LocalProtocolError(f"abort() reason must be a str, not {type(reason).__name__}")
        self._core.abort(anyio.current_time(), reason=reason)
        self._endpoint._after_app_action(self._core)
        self._endpoint._connection_changed(self._core)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def open_endpoint(
    local_address: tuple[str, int] = ("127.0.0.1", 0),
    *,
    identity: Identity | None = None,
    config: QuantumConfig | None = None,
    accept: bool = True,
) -> AsyncIterator[Endpoint]:
    """Bind a UDP socket and run a Quantum endpoint on it until the block exits.

    Every endpoint can both dial (``connect``) and, unless ``accept=False``, accept.
    """
    host, _ = check_address(local_address, allow_port_zero=True)
    config = config or QuantumConfig()
    identity = identity or Identity.generate()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            sock.bind(local_address)
        except OSError as exc:
            raise LocalProtocolError(f"cannot bind UDP {host}:{local_address[1]}: {exc.strerror}") from None
        core = EndpointCore(
            identity=identity,
            config=config,
            accept_connections=accept,
            cid_factory=lambda: uuid7().bytes,  # the shell owns the clock: time-ordered IDs
        )
        gso, gro = _enable_offload(sock)
        endpoint = Endpoint(sock, core, gso=gso, gro=gro)
        task_group: TaskGroup
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(endpoint._run)
            try:
                yield endpoint
            finally:
                with anyio.CancelScope(shield=True):
                    await endpoint.aclose()
                task_group.cancel_scope.cancel()
    finally:
        sock.close()
