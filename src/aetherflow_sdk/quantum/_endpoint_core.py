"""The sans-I/O endpoint: one UDP socket's worth of connections.

It demultiplexes datagrams by destination connection ID (never by address, so a
peer whose NAT rebinding changed its port keeps its connection), answers new
clients statelessly with a RETRY cookie, and creates a server-side connection
only for an INITIAL that carries a valid cookie. Before that, nothing about a
client is stored, and every answer is smaller than the padded INITIAL that
caused it (well under the 3x amplification limit of RFC 9000 §8.1).

Arguments are checked where they enter (:func:`check_peer_id`, :func:`check_address`), and
each connection's processing runs behind one boundary (:meth:`EndpointCore._on_fault`): an
exception inside one connection closes that connection, with a reason, and is counted; the
endpoint and every other connection carry on.

Raw datagrams share the socket (the first-byte rule, docs/protocol.md section 1): one whose
first byte is 0x40 or above is not Quantum. If a framed path (a relay's) was registered for
its source address and unwraps it, the packet inside is routed like any other, through that
path (an INITIAL too: a handshake may run through a relay, see :meth:`EndpointCore.connect_path`);
else a factory set with :meth:`EndpointCore.accept_paths` for that address may offer a new path
for it (a relay's path back to the sender); else it goes to the raw handler. ``send_raw``
sends one: without limit to a *validated* address (the proven active path of a live connection
here: a peer, or the relay a path goes through; an index kept in step with the connections'
paths answers that in O(1)); to any other address at most ``RAW_UNSOLICITED_ALLOWANCE`` bytes
plus 3x what that address sent us (RFC 9000 §8.1's factor).
"""

from __future__ import annotations

import heapq
import inspect
import logging
import math
import os
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import suppress
from typing import Final

from aetherflow_sdk._errors import BadPacket, ClosedLocally, LocalProtocolError
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._connection import Address, QuantumConnection
from aetherflow_sdk.quantum._crypto import check_cookie, make_cookie
from aetherflow_sdk.quantum._handshake import InitialMessage, build_retry, parse_initial_untrusted
from aetherflow_sdk.quantum._paths import AMPLIFICATION_FACTOR, Path
from aetherflow_sdk.quantum._stats import EndpointStatistics
from aetherflow_sdk.quantum._wire import (
    MIN_INITIAL_SIZE,
    RAW_FIRST_BYTE,
    CloseCode,
    Header,
    PacketType,
    parse_header_untrusted,
)

logger = logging.getLogger(__name__)

MAX_STATELESS_QUEUE: Final = 1024  # RETRY answers waiting for the socket; more are dropped (flood)
MAX_CONNECTIONS: Final = 10_000  # a safety cap on live connections per endpoint
RAW_UNSOLICITED_ALLOWANCE: Final = 1200  # raw bytes to an unheard address: one INITIAL's worth
MAX_RAW_ADDRESSES: Final = 4096  # unvalidated addresses whose raw byte counts are remembered (LRU)
MAX_RAW_SIZE: Final = 65_507  # the largest UDP payload over IPv4

RawHandler = Callable[[bytes, Address], None]
PathFactory = Callable[[bytes], "Path | None"]


CID_LENGTH: Final = 16  # a connection ID is 16 bytes (docs/protocol.md)
PEER_ID_LENGTH: Final = 32  # a node ID is an Ed25519 public key


def check_peer_id(peer_id: object) -> bytes | None:
    """``peer_id`` as bytes if it is a 32-byte node ID (or None); else a clear LocalProtocolError."""
    if peer_id is None:
        return None
    if isinstance(peer_id, str):
        raise LocalProtocolError(
            f"peer_id must be the {PEER_ID_LENGTH}-byte node ID, not text ({peer_id[:16]!r}...); "
            "convert a hex node ID with bytes.fromhex()"
        )
    if not isinstance(peer_id, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(
            f"peer_id must be the {PEER_ID_LENGTH}-byte node ID, not {type(peer_id).__name__}"
        )
    raw = bytes(peer_id)
    if len(raw) != PEER_ID_LENGTH:
        raise LocalProtocolError(f"peer_id must be {PEER_ID_LENGTH} bytes (a node ID), got {len(raw)}")
    return raw


def check_address(address: object, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``address`` as ``(host, port)``; a clear LocalProtocolError for anything else.

    The host is a non-empty name or IP literal; the port an int in 1..65535 (0 too when
    ``allow_port_zero``, for binding to any free port).
    """
    if not isinstance(address, tuple) or len(address) != 2:
        raise LocalProtocolError(f"an address is a (host, port) tuple, got {address!r}")
    host, port = address
    if not isinstance(host, str) or not host or "\x00" in host:
        raise LocalProtocolError(f"the host of an address must be a non-empty string, got {host!r}")
    lowest = 0 if allow_port_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not lowest <= port <= 65535:
        raise LocalProtocolError(f"the port of an address must be an int in {lowest}..65535, got {port!r}")
    return host, port


class EndpointCore:
    """All connections of one endpoint, plus the stateless handshake gate.

    ``cid_factory`` makes each new connection's 16-byte ID. The core reads no clock, so its
    default is 16 random bytes: from ``rng`` when given (a seeded virtual run replays exactly),
    else from ``os.urandom``. The async shell injects time-ordered UUIDv7 IDs
    (``uuid7().bytes``), which it may, since it owns the clock. ``rng`` also seeds each
    connection's own random choices (BBR's phase, path-challenge tokens).
    """

    def __init__(
        self,
        *,
        identity: Identity,
        config: QuantumConfig,
        accept_connections: bool = True,
        cookie_secret: bytes | None = None,
        cid_factory: Callable[[], bytes] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.accept_connections = accept_connections
        self._cookie_secret = cookie_secret or os.urandom(32)
        self._cid_factory = cid_factory or self._random_cid
        self._max_connections = max_connections
        # Randomness for the connections' choices (BBR's phase); seeded in virtual-network tests.
        self._rng = rng
        self.connections: dict[bytes, QuantumConnection] = {}
        self.channel_filter: Callable[[bytes, bytes], bool] | None = None
        """``(peer_id, name) -> accept?`` for channels peers open (None: accept every name)."""
        self._by_client_cid: dict[bytes, QuantumConnection] = {}  # server side: duplicate INITIALs
        self._client_cid_of: dict[bytes, bytes] = {}  # server connection's CID -> its client's CID
        self._stateless_out: deque[tuple[bytes, Address]] = deque()
        self.accepted: deque[QuantumConnection] = deque()
        self._awaiting_accept: set[bytes] = set()
        self._dirty: set[bytes] = set()
        # Connections whose state the network or a timer changed since take_changed(): the shell
        # wakes only the tasks waiting on these and reads their events.
        self._changed: dict[bytes, QuantumConnection] = {}
        self._datagrams_received = 0
        self._datagrams_sent = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._bad = 0
        self._unknown = 0
        self._retries = 0
        self._invalid_cookies = 0
        self._accepted_total = 0
        self._refused = 0
        self._internal_errors = 0
        self._faulted: set[bytes] = set()  # connections aborted after a fault; a second one forgets
        self._raw_handler: RawHandler | None = None
        self._raw_out: deque[tuple[bytes, Address]] = deque()
        # address -> [bytes received, bytes sent] for raw traffic to unvalidated addresses
        self._raw_budget: OrderedDict[Address, list[int]] = OrderedDict()
        self._framed_paths: dict[Address, list[Path]] = {}
        # The validated-address index (send_raw's check in O(1)): address -> the live connections
        # whose validated active path goes there, and each indexed connection's address. Kept in
        # step by _reindex after every input, timer, output, migration and close.
        self._validated: dict[Address, dict[bytes, QuantumConnection]] = {}
        self._validated_at: dict[bytes, Address] = {}
        self._paths_of: dict[bytes, list[Path]] = {}  # connection ID -> framed paths it uses
        self._path_users: dict[int, int] = {}  # id(path) -> how many connections list it there
        self._path_factories: dict[Address, PathFactory] = {}  # accept_paths: address -> path_for
        self._pinned_by_path: dict[bytes, bytes] = {}  # server CID -> the node ID its path leads to
        self._framed_dropped = 0
        self._peer_id_mismatches = 0
        self._raw_received = 0
        self._raw_sent = 0
        self._raw_dropped = 0
        self._raw_refused = 0
        self._framed_received = 0
        # Timers: a heap of (deadline, connection ID) and, per connection, its earliest entry. An
        # entry is a promise to look at that connection no later than its deadline; a connection's
        # timer that moved later leaves an early entry behind (looked at, then rescheduled), one
        # that moved earlier gets a new entry. get_timer()/handle_timer() cost O(log n) per due
        # connection instead of a scan of all. Rescheduled after each connection's output.
        self._timer_heap: list[tuple[float, bytes]] = []
        self._timer_at: dict[bytes, float] = {}

    def connect(self, address: Address, now: float, *, peer_id: bytes | None = None) -> QuantumConnection:
        """Start a client connection to ``address`` (``peer_id`` pins the server's identity).

        ``address`` is an IP literal and port; LocalProtocolError for a bad address or peer_id.
        """
        address = check_address(address)
        connection = self._new_connection(address, now, pinned_peer_id=check_peer_id(peer_id))
        cid = connection.local_cid
        self.connections[cid] = connection
        self._dirty.add(cid)
        self._reindex(connection)
        return connection

    def connect_path(self, path: Path, now: float, *, peer_id: bytes | None = None) -> QuantumConnection:
        """Start a client connection whose first path is ``path`` (e.g. a relay's to the peer).

        Every packet, the handshake's included, goes through ``path`` (wrapped by it), sized to
        its limit; its datagrams are received through it until the connection is forgotten.
        ``peer_id`` is required, and must agree with ``path.peer_id`` when the path knows it: a
        connection through a middlebox pins the node it means to reach.
        """
        if not isinstance(path, Path):
            raise LocalProtocolError(f"connect_path takes a quantum.Path, got {type(path).__name__}")
        pinned = check_peer_id(peer_id)
        if pinned is None:
            raise LocalProtocolError(
                "connect_path needs peer_id: a connection through a framed path pins the node it "
                "leads to (anyone could answer through a relay)"
            )
        if path.peer_id is not None and path.peer_id != pinned:
            raise LocalProtocolError(
                f"peer_id {pinned.hex()[:16]}... is not the node {path!r} leads to "
                f"({path.peer_id.hex()[:16]}...)"
            )
        if path.is_direct:
            return self.connect(path.address, now, peer_id=pinned)
        address = check_address(path.address)
        limit = self.config.max_datagram_size
        if path.max_datagram_size is not None:
            limit = min(limit, path.max_datagram_size)
        if limit - path.overhead < MIN_INITIAL_SIZE:
            raise LocalProtocolError(
                f"{path!r} carries Quantum packets of at most {limit - path.overhead} bytes; the "
                f"handshake needs {MIN_INITIAL_SIZE}"
            )
        connection = self._new_connection(address, now, pinned_peer_id=pinned, path=path)
        cid = connection.local_cid
        self.connections[cid] = connection
        self._attach_path(cid, path)
        self._dirty.add(cid)
        self._reindex(connection)
        return connection

    def accept_paths(self, address: Address, path_for: PathFactory | None) -> None:
        """Let new connections arrive through paths from ``address`` (e.g. a relay's).

        A raw datagram from ``address`` that no registered path unwraps is offered to
        ``path_for(datagram)``; if it returns a path that unwraps it, the packet inside is
        routed through that path: an INITIAL is answered as a direct one is (its RETRY cookie
        sent through the path), and a connection it opens keeps the path as its active one. A
        path that opens (or reaches) no connection is not kept. After the handshake, a client
        whose proven node ID is not ``path.peer_id`` (when set) is refused. ``path_for`` must
        not block and may return None (then the raw handler gets the datagram). None stops.
        """
        address = check_address(address)
        if path_for is None:
            self._path_factories.pop(address, None)
            return
        if not callable(path_for) or inspect.iscoroutinefunction(path_for):
            raise LocalProtocolError(
                "path_for must be a plain function (it is called per datagram and must not "
                f"block), got {path_for!r}"
            )
        self._path_factories[address] = path_for

    def receive_datagram(self, data: bytes, address: Address, now: float) -> QuantumConnection | None:
        """Route one datagram. Returns the connection it reached, if any. Never raises."""
        self._datagrams_received += 1
        self._bytes_received += len(data)
        if data and data[0] >= RAW_FIRST_BYTE:
            return self._receive_raw(data, address, now)
        try:
            header = parse_header_untrusted(data)
        except BadPacket:
            self._bad += 1
            return None
        connection = self.connections.get(header.destination_cid)
        if connection is None and header.packet_type is PacketType.INITIAL:
            connection = self._by_client_cid.get(header.destination_cid)
            if connection is None:
                connection = self._on_new_initial(data, header, address, now)
                if connection is None:
                    return None
        if connection is None:
            self._unknown += 1
            return None
        self._changed[connection.local_cid] = connection
        try:
            connection.receive_datagram(data, address, now, header)
        except Exception as exc:  # one connection's bug must not stop the endpoint
            self._on_fault(connection, exc, now)
            return connection
        self._after_input(connection, now)
        return connection

    def _receive_raw(self, data: bytes, address: Address, now: float) -> QuantumConnection | None:
        for path in self._framed_paths.get(address, ()):
            unwrapped = _unwrap(path, data)
            if unwrapped is not None:
                return self._receive_framed(*unwrapped, address, now, path, kept=True)
        path_for = self._path_factories.get(address)
        if path_for is not None:
            try:
                offered = path_for(data)
            except Exception:  # the application's bug must not stop the endpoint
                logger.exception("path_for raised; the datagram from %s is dropped", address)
                self._framed_dropped += 1
                return None
            if offered is not None:
                unwrapped = _unwrap(offered, data) if isinstance(offered, Path) else None
                if unwrapped is None:
                    self._framed_dropped += 1  # a path that does not take its own datagram
                    return None
                return self._receive_framed(*unwrapped, address, now, offered, kept=False)
        budget = self._raw_budget.get(address)
        if budget is None:
            budget = self._raw_budget[address] = [0, 0]
            if len(self._raw_budget) > MAX_RAW_ADDRESSES:
                self._raw_budget.popitem(last=False)
        else:
            self._raw_budget.move_to_end(address)
        budget[0] += len(data)
        handler = self._raw_handler
        if handler is None:
            self._raw_dropped += 1
            return None
        self._raw_received += 1
        try:
            handler(data, address)
        except Exception:  # the application's bug must not stop the endpoint
            self._raw_dropped += 1
            logger.exception("the raw datagram handler raised; the datagram from %s is dropped", address)
        return None

    def _receive_framed(
        self, packet: bytes, header: Header, address: Address, now: float, path: Path, *, kept: bool
    ) -> QuantumConnection | None:
        """A Quantum packet that came through ``path`` (``kept``: a registered one)."""
        connection = self.connections.get(header.destination_cid)
        if connection is None and header.packet_type is PacketType.INITIAL:
            connection = self._by_client_cid.get(header.destination_cid)
            if connection is None:
                self._framed_received += 1
                self._on_new_initial(packet, header, address, now, path)
                return None
        if connection is None:
            self._unknown += 1
            self._framed_dropped += 1
            return None
        self._framed_received += 1
        cid = connection.local_cid
        self._changed[cid] = connection
        try:
            connection.receive_datagram(packet, address, now, header, via=path)
        except Exception as exc:  # one connection's bug must not stop the endpoint
            self._on_fault(connection, exc, now)
            return connection
        if not kept and connection.knows_path(path):  # authenticated: the peer came through it
            self._attach_path(cid, path)
        self._after_input(connection, now)
        return connection

    # ------------------------------------------------------------------ raw datagrams and paths

    def set_raw_handler(self, handler: RawHandler | None) -> None:
        """Call ``handler(data, address)`` for each datagram that is not Quantum (None: drop them)."""
        if handler is not None and not callable(handler):
            raise LocalProtocolError(f"the raw handler must be callable, got {handler!r}")
        if inspect.iscoroutinefunction(handler):
            raise LocalProtocolError(
                "the raw handler is called for each datagram and must not block: pass a plain "
                "function (hand the datagram to a task, e.g. through a memory channel's send_nowait)"
            )
        self._raw_handler = handler

    def send_raw(self, data: bytes, address: Address) -> bool:
        """Queue one raw datagram; False (and counted) if the anti-amplification limit refuses it.

        Its first byte must be 0x40 or above, so that no receiver takes it for Quantum.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)) or not 0 < len(data) <= MAX_RAW_SIZE:
            raise LocalProtocolError(f"a raw datagram is 1 to {MAX_RAW_SIZE} bytes, got {data!r:.60}")
        data = bytes(data)
        address = check_address(address)
        if data[0] < RAW_FIRST_BYTE:
            raise LocalProtocolError(
                f"a raw datagram must start with a byte of {RAW_FIRST_BYTE:#x} or above (the first-byte "
                f"rule: lower bytes are Quantum's), got {data[0]:#04x}"
            )
        if not self._validated_address(address):
            budget = self._raw_budget.get(address)
            received, sent = (0, 0) if budget is None else budget
            if sent + len(data) > RAW_UNSOLICITED_ALLOWANCE + AMPLIFICATION_FACTOR * received:
                self._raw_refused += 1
                return False
            if budget is None:
                budget = self._raw_budget[address] = [0, 0]
                if len(self._raw_budget) > MAX_RAW_ADDRESSES:
                    self._raw_budget.popitem(last=False)
            budget[1] += len(data)
        self._raw_out.append((data, address))
        self._raw_sent += 1
        return True

    def _validated_address(self, address: Address) -> bool:
        """A live connection's validated active path goes to ``address`` (O(1), not a scan)."""
        indexed = self._validated.get(address)
        if not indexed:
            return False
        for connection in list(indexed.values()):  # one, or a few behind one relay
            if connection.path_validated and connection.peer_address == address and not connection.is_closed:
                return True
            self._reindex(connection)  # changed without our noticing: a safety net, not the rule
        return False

    def _reindex(self, connection: QuantumConnection) -> None:
        """Bring ``connection``'s entry in the validated-address index up to date."""
        cid = connection.local_cid
        address: Address | None = None
        if cid in self.connections and connection.path_validated and not connection.is_closed:
            address = connection.peer_address
        old = self._validated_at.get(cid)
        if old == address:
            return
        if old is not None:
            del self._validated_at[cid]
            indexed = self._validated[old]
            indexed.pop(cid, None)
            if not indexed:
                del self._validated[old]
        if address is not None:
            self._validated_at[cid] = address
            self._validated.setdefault(address, {})[cid] = connection

    def add_path(self, path: Path) -> None:
        """Receive through a framed path: raw datagrams from ``path.address`` that it unwraps are
        Quantum packets, routed by connection ID and marked as having come through ``path``."""
        if path.is_direct:
            return
        paths = self._framed_paths.setdefault(path.address, [])
        if not any(p is path for p in paths):
            paths.append(path)

    def remove_path(self, path: Path) -> None:
        """Stop receiving through ``path``."""
        paths = self._framed_paths.get(path.address)
        if paths is None:
            return
        paths[:] = [p for p in paths if p is not path]
        if not paths:
            del self._framed_paths[path.address]

    def migrate(self, connection: QuantumConnection, path: Path | Address, now: float) -> None:
        """Validate ``path`` and move ``connection`` to it (see ``QuantumConnection.migrate``);
        a framed path is registered for receiving until the connection is forgotten."""
        if not isinstance(path, Path):
            path = check_address(path)
        elif not path.is_direct:
            connection.migrate(path, now)
            self._attach_path(connection.local_cid, path)
            self._dirty.add(connection.local_cid)
            return
        connection.migrate(path, now)
        self._dirty.add(connection.local_cid)

    def _on_new_initial(
        self, data: bytes, header: Header, address: Address, now: float, path: Path | None = None
    ) -> QuantumConnection | None:
        """A client's INITIAL (through ``path`` if framed): RETRY, or a new server connection."""
        try:
            initial = parse_initial_untrusted(data, header)
        except BadPacket:
            self._bad += 1
            if path is not None:
                self._framed_dropped += 1
            return None
        if not self.accept_connections or len(self.connections) >= self._max_connections:
            self._refused += 1
            return None
        # Through a framed path the cookie proves the path: the relay's address and the node behind it.
        binding = initial.binding if path is None else initial.binding + (path.peer_id or b"")
        if not initial.cookie:
            retry = build_retry(initial.client_cid, make_cookie(self._cookie_secret, address, binding, now))
            if path is not None:
                try:
                    retry = path.wrap(retry)
                except Exception:  # a Path subclass's bug: no answer, then
                    logger.exception("%r.wrap raised; the RETRY to %s is dropped", path, address)
                    return None
            self._send_stateless(retry, address)
            self._retries += 1
            return None
        if not check_cookie(self._cookie_secret, initial.cookie, address, binding, now):
            self._invalid_cookies += 1
            return None
        try:
            connection = self._new_connection(address, now, initial=initial, path=path)
        except BadPacket:  # e.g. a low-order ephemeral key
            self._bad += 1
            return None
        except Exception:  # a bug in building the connection: refuse this client, keep the endpoint
            self._internal_errors += 1
            logger.exception("building a server connection for %s:%d failed; INITIAL dropped", *address)
            return None
        cid = connection.local_cid
        self.connections[cid] = connection
        self._by_client_cid[initial.client_cid] = connection
        self._client_cid_of[cid] = initial.client_cid
        self._awaiting_accept.add(cid)
        self._accepted_total += 1
        if path is not None:
            self._attach_path(cid, path)
            if path.peer_id is not None:
                self._pinned_by_path[cid] = path.peer_id
        self._reindex(connection)  # the cookie proved the client's address (or path)
        # The INITIAL itself is consumed by the handshake object; do not feed it again.
        self._dirty.add(cid)
        return None

    def _new_connection(
        self,
        address: Address,
        now: float,
        *,
        pinned_peer_id: bytes | None = None,
        initial: InitialMessage | None = None,
        path: Path | None = None,
    ) -> QuantumConnection:
        """A client connection (``initial`` None) or a server one; raises BadPacket only."""
        cid = self._cid_factory()
        rng = None if self._rng is None else random.Random(self._rng.getrandbits(64))
        return QuantumConnection(
            config=self.config,
            identity=self.identity,
            local_cid=cid,
            peer_address=address,
            now=now,
            pinned_peer_id=pinned_peer_id,
            initial=initial,
            rng=rng,
            random_bytes=None if rng is None else rng.randbytes,
            channel_filter=self._filter_channel,
            path=path,
        )

    def _filter_channel(self, peer_id: bytes, name: bytes) -> bool:
        return self.channel_filter is None or self.channel_filter(peer_id, name)

    def _random_cid(self) -> bytes:
        return os.urandom(CID_LENGTH) if self._rng is None else self._rng.randbytes(CID_LENGTH)

    def _send_stateless(self, packet: bytes, address: Address) -> None:
        if len(self._stateless_out) < MAX_STATELESS_QUEUE:
            self._stateless_out.append((packet, address))

    def _after_input(self, connection: QuantumConnection, now: float) -> None:
        cid = connection.local_cid
        self._dirty.add(cid)
        if cid in self._awaiting_accept and connection.is_established:
            self._awaiting_accept.discard(cid)
            expected = self._pinned_by_path.pop(cid, None)
            if expected is not None and connection.peer_id != expected:
                self._refuse_forged(connection, expected, now)
            else:
                self.accepted.append(connection)
        self._reindex(connection)

    def _refuse_forged(self, connection: QuantumConnection, expected: bytes, now: float) -> None:
        """The client proved another node ID than the one its path leads to: close, count."""
        self._peer_id_mismatches += 1
        proven = (connection.peer_id or b"").hex()[:16]
        reason = (
            f"refused: the handshake proved node {proven}..., but {connection.path!r} leads to "
            f"node {expected.hex()[:16]}..."
        )
        logger.warning("Quantum connection %s %s", connection.local_cid.hex(), reason)
        connection.abort(now, error_code=CloseCode.PROTOCOL_VIOLATION, reason=reason)

    def _attach_path(self, cid: bytes, path: Path) -> None:
        """Receive through ``path`` for the connection ``cid`` until it is forgotten."""
        self.add_path(path)
        self._paths_of.setdefault(cid, []).append(path)
        self._path_users[id(path)] = self._path_users.get(id(path), 0) + 1

    def mark_dirty(self, connection: QuantumConnection) -> None:
        """The application queued something on ``connection``: it has output to build."""
        self._dirty.add(connection.local_cid)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (None: no connection has a timer).

        Exact once :meth:`datagrams_to_send` ran after the last input or application call; it
        may be earlier than needed (a connection whose timer moved later), never later.
        """
        heap = self._timer_heap
        timer_at = self._timer_at
        while heap:
            deadline, cid = heap[0]
            if timer_at.get(cid) == deadline:
                return deadline
            heapq.heappop(heap)  # superseded by an earlier entry, or the connection is gone
        return None

    def handle_timer(self, now: float) -> None:
        """Run the expired timers of the connections that have one (only those are touched)."""
        heap = self._timer_heap
        timer_at = self._timer_at
        due: list[QuantumConnection] = []
        while heap and heap[0][0] <= now:
            deadline, cid = heapq.heappop(heap)
            if timer_at.get(cid) != deadline:
                continue
            del timer_at[cid]
            connection = self.connections.get(cid)
            if connection is not None:
                due.append(connection)
        for connection in due:  # after the loop: a timer still due at ``now`` must not spin it
            cid = connection.local_cid
            try:
                timer = connection.get_timer()
                if timer is not None and now >= timer:
                    self._changed[cid] = connection
                    connection.handle_timer(now)
                    self._dirty.add(cid)
                    self._after_input(connection, now)
            except Exception as exc:
                self._on_fault(connection, exc, now)
            self._schedule(connection, now)

    def _schedule(self, connection: QuantumConnection, now: float) -> None:
        """Make sure the heap looks at ``connection`` no later than its current timer."""
        cid = connection.local_cid
        if cid not in self.connections:
            return
        try:
            timer = connection.get_timer()
        except Exception as exc:
            self._on_fault(connection, exc, now)
            return
        if timer is None or timer >= self._timer_at.get(cid, math.inf):
            return
        self._timer_at[cid] = timer
        heap = self._timer_heap
        heapq.heappush(heap, (timer, cid))
        if len(heap) > 2 * len(self._timer_at) + 64:  # mostly superseded entries: rebuild
            self._timer_heap = [(deadline, c) for c, deadline in self._timer_at.items()]
            heapq.heapify(self._timer_heap)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything to send now: stateless answers, then each busy connection's packets."""
        out: list[tuple[bytes, Address]] = list(self._stateless_out)
        self._stateless_out.clear()
        if self._raw_out:
            out.extend(self._raw_out)
            self._raw_out.clear()
        dirty = self._dirty
        self._dirty = set()
        for cid in dirty:
            connection = self.connections.get(cid)
            if connection is None:
                continue
            state = connection.state
            try:
                batch = connection.datagrams_to_send(now)
            except Exception as exc:
                self._on_fault(connection, exc, now)
                continue
            if batch:
                out.extend(batch)
                self._dirty.add(cid)  # it may have more once the socket drains
            if connection.state is not state:
                self._changed[cid] = connection
            if connection.is_closed:
                self._forget(connection)
            else:
                self._reindex(connection)
                self._schedule(connection, now)
        self._datagrams_sent += len(out)
        self._bytes_sent += sum(len(d) for d, _ in out)
        return out

    def _on_fault(self, connection: QuantumConnection, exc: Exception, now: float) -> None:
        """An exception escaped one connection's processing: close that connection, count it.

        The first fault aborts the connection (the peer is told INTERNAL_ERROR with a reason);
        if the connection fails again while closing, it is forgotten at once. Either way the
        application's calls on it then raise ConnectionClosed, and the endpoint carries on.
        """
        self._internal_errors += 1
        cid = connection.local_cid
        self._changed[cid] = connection
        reason = f"internal error: {type(exc).__name__}: {exc}"
        logger.error(
            "Quantum connection %s failed inside the endpoint and is closed: %s",
            cid.hex(),
            reason,
            exc_info=exc,
        )
        if cid not in self._faulted and cid in self.connections:
            self._faulted.add(cid)
            try:
                connection.abort(now, error_code=CloseCode.INTERNAL_ERROR, reason=reason)
            except Exception:  # its state is too broken even to close: drop it below
                logger.debug("aborting the failed connection %s failed too", cid.hex(), exc_info=True)
            else:
                self._dirty.add(cid)  # the CLOSE goes out with the next output
                return
        with suppress(Exception):  # forgotten below either way
            connection.fail(
                ClosedLocally(
                    f"connection closed after a failure inside this endpoint: {reason}",
                    error_code=CloseCode.INTERNAL_ERROR,
                    reason=reason,
                )
            )
        self._forget(connection)

    def take_changed(self) -> list[QuantumConnection]:
        """The connections that input, timers or output changed since the last call.

        Each may have messages to take, room to send, new events (``next_event()``) or a new
        state. A shell calls this once per loop turn (the list holds connections until then).
        """
        if not self._changed:
            return []
        changed = list(self._changed.values())
        self._changed = {}
        return changed

    def _forget(self, connection: QuantumConnection) -> None:
        self.connections.pop(connection.local_cid, None)
        self._reindex(connection)  # (no longer in connections: its entry goes)
        self._faulted.discard(connection.local_cid)
        self._timer_at.pop(connection.local_cid, None)  # its heap entries are skipped from now on
        self._dirty.discard(connection.local_cid)
        self._awaiting_accept.discard(connection.local_cid)
        self._pinned_by_path.pop(connection.local_cid, None)
        for path in self._paths_of.pop(connection.local_cid, ()):
            users = self._path_users.pop(id(path), 1) - 1
            if users > 0:  # another connection still goes through it
                self._path_users[id(path)] = users
            else:
                self.remove_path(path)
        client_cid = self._client_cid_of.pop(connection.local_cid, None)
        if client_cid is not None:
            self._by_client_cid.pop(client_cid, None)
            if self.accepted:  # closed before the application took it: not kept for accept()
                with suppress(ValueError):
                    self.accepted.remove(connection)

    def collect_closed(self) -> None:
        """Drop connections that reached CLOSED."""
        for connection in [c for c in self.connections.values() if c.is_closed]:
            self._forget(connection)

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            datagrams_received=self._datagrams_received,
            datagrams_sent=self._datagrams_sent,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            bad_packets=self._bad,
            unknown_connection=self._unknown,
            retries_sent=self._retries,
            invalid_cookies=self._invalid_cookies,
            connections_accepted=self._accepted_total,
            connections_refused=self._refused,
            active_connections=len(self.connections),
            internal_errors=self._internal_errors,
            raw_datagrams_received=self._raw_received,
            raw_datagrams_sent=self._raw_sent,
            raw_datagrams_dropped=self._raw_dropped,
            raw_datagrams_refused=self._raw_refused,
            framed_datagrams_received=self._framed_received,
            framed_datagrams_dropped=self._framed_dropped,
            peer_id_mismatches=self._peer_id_mismatches,
        )


def _unwrap(path: Path, datagram: bytes) -> tuple[bytes, Header] | None:
    """The Quantum packet ``path`` finds in ``datagram``, and its header; None if none."""
    try:
        packet = path.unwrap_untrusted(datagram)
        return packet, parse_header_untrusted(packet)
    except BadPacket:
        return None
    except Exception:  # a Path subclass broke its contract: not our datagram, then
        logger.exception("%r.unwrap_untrusted raised something other than BadPacket", path)
        return None
