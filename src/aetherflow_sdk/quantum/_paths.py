"""Paths: where a connection's packets go, how they are framed, how large they may be, and
how a new one is proven before traffic moves to it.

:class:`PathControl` is a mixin of :class:`~aetherflow_sdk.quantum._connection.QuantumConnection`
(like ``_output.PacketOutput``); the rules it keeps (RFC 9000 §8.2, §9):

1. A connection sends on one **active** path. A :class:`Path` owns the address datagrams go
   to, the framing around each packet (``wrap``/``unwrap_untrusted``: none for a
   :class:`DirectPath`, a relay's header for a relayed one) and its own size limit. A path's
   packet size is the smaller of our and the peer's ``max_datagram_size`` (the peer's comes
   in its transport parameters) and the path's own limit, less the framing.
2. **Active migration** (:meth:`PathControl.migrate`): the new path becomes a *candidate*. We
   send it a PATH_CHALLENGE padded to the path's packet size (which also proves that size
   fits), again after ``PATH_CHALLENGE_TIMEOUT`` doubling (but at most a second apart), at
   most ``MAX_PATH_CHALLENGES`` times. The peer answers on the path the challenge came from.
   On the answer the candidate becomes the active path; until then every packet keeps going
   on the old one. Keys, message state and channels are the connection's, not the path's:
   nothing else changes. The path left behind is kept as a proven candidate; the peer's late
   packets on it do not pull us back.
3. **Probing packets** (only PATH_CHALLENGE, PATH_RESPONSE, PADDING) never move the path. An
   authenticated non-probing packet that arrives on another path and carries the largest
   packet number so far moves the active path there (NAT rebinding, or the peer's migration).
   The new path is challenged unless it was validated already.
4. **Anti-amplification** (RFC 9000 §8.1): on an unvalidated path we send at most 3x the bytes
   received on it. Control frames (ACK, PATH_CHALLENGE, PATH_RESPONSE) always go, in a packet
   cut to fit the allowance; data waits for validation. A path we chose ourselves may be
   probed without a limit: nobody asked us to send there.
5. **A new path starts fresh** (RFC 9000 §9.4): a new RTT estimator, congestion controller and
   pacer, unless only the port of a direct path changed (a NAT rebinding: same route).
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

from aetherflow_sdk._errors import AetherFlowError, LocalProtocolError
from aetherflow_sdk.quantum import _congestion
from aetherflow_sdk.quantum._config import QuantumConfig
from aetherflow_sdk.quantum._congestion import CongestionController
from aetherflow_sdk.quantum._handshake import TransportParameters
from aetherflow_sdk.quantum._pacer import Pacer
from aetherflow_sdk.quantum._recovery import LossRecovery
from aetherflow_sdk.quantum._rtt import RttEstimator
from aetherflow_sdk.quantum._states import CAN_SEND_DATA, ConnectionState
from aetherflow_sdk.quantum._stats import ConnectionCounters
from aetherflow_sdk.quantum._wire import (
    AEAD_TAG_SIZE,
    HEADER_SIZE,
    PATH_TOKEN_SIZE,
    Frame,
    PacketType,
    PathChallengeFrame,
    PathResponseFrame,
    encode_path_challenge,
    encode_path_response,
)

Address = tuple[str, int]

AMPLIFICATION_FACTOR: Final = 3  # RFC 9000 §8: at most 3x the bytes received on an unvalidated path
PATH_CHALLENGE_TIMEOUT: Final = 0.3  # first resend of a migration probe (3x the default initial RTT)
PATH_CHALLENGE_MAX_INTERVAL: Final = 1.0  # probes double their interval up to this
MAX_PATH_CHALLENGES: Final = 8  # probes before a migration gives up (after about 6.9 s)
MAX_CANDIDATE_PATHS: Final = 4  # paths probed or probing at once; the oldest is forgotten past this
MAX_PENDING_RESPONSES: Final = 4  # PATH_RESPONSE tokens held per path (the newest are kept)
PATH_FRAME_SIZE: Final = 1 + PATH_TOKEN_SIZE  # a PATH_CHALLENGE or PATH_RESPONSE frame
PADDING_BYTE: Final = b"\x00"  # PADDING: the rest of the packet is ignored


class PathValidationFailed(AetherFlowError):
    """The new path never answered its PATH_CHALLENGE; the connection stays on its old path."""


class Path(abc.ABC):
    """One way to reach the peer: the address datagrams go to, their framing, its size limit.

    Subclass it for a path that frames each packet, e.g. a relay that puts its own header in
    front of each datagram: ``wrap`` adds the header, ``unwrap_untrusted`` checks and removes it
    (raising only :class:`BadPacket`), ``overhead`` says how many bytes it adds and
    ``max_datagram_size`` what the relay carries at most. Framed datagrams arrive as raw
    datagrams (see the endpoint's first-byte rule), so a framed path's first byte must not be
    a Quantum one. Paths are compared by identity, except direct paths, which are equal when
    their addresses are.
    """

    @property
    @abc.abstractmethod
    def address(self) -> Address:
        """The UDP address datagrams on this path are sent to and arrive from."""

    @property
    def overhead(self) -> int:
        """Bytes of framing ``wrap`` adds to each packet."""
        return 0

    @property
    def max_datagram_size(self) -> int | None:
        """This path's own limit on a whole (framed) datagram, or None for no limit of its own."""
        return None

    @property
    def is_direct(self) -> bool:
        """True for a path that sends Quantum packets as they are."""
        return False

    @property
    def peer_id(self) -> bytes | None:
        """The node this path leads to, if the path knows it (a relay's path does; it is pinned:
        a connection made or accepted through the path must prove this node ID)."""
        return None

    def wrap(self, packet: bytes) -> bytes:
        """The datagram that carries ``packet`` on this path."""
        return packet

    def unwrap_untrusted(self, datagram: bytes) -> bytes:
        """The Quantum packet inside a datagram of this path; BadPacket if it is not one."""
        return datagram


class DirectPath(Path):
    """Quantum packets sent as they are to ``address``."""

    __slots__ = ("_address",)

    def __init__(self, address: Address) -> None:
        self._address = address

    @property
    def address(self) -> Address:
        return self._address

    @property
    def is_direct(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DirectPath) and other._address == self._address

    def __hash__(self) -> int:
        return hash(self._address)

    def __repr__(self) -> str:
        return f"DirectPath({self._address!r})"


@attrs.define(slots=True, eq=False, kw_only=True)
class PathState:
    """What a connection knows about one path (internal; the active one or a candidate)."""

    path: Path
    validated: bool
    initiated: bool = False  # we chose this path (migrate): probing it needs no allowance
    packet_size: int = 0  # the largest Quantum packet (before framing) on this path
    bytes_received: int = 0
    bytes_sent: int = 0
    challenge: bytes | None = None  # our outstanding PATH_CHALLENGE token
    challenge_pending: bool = False
    challenge_deadline: float | None = None  # when to probe again (candidates we chose)
    challenges_sent: int = 0
    responses: list[bytes] = attrs.field(factory=list)  # tokens to echo on this path
    failed: bool = False
    retired: bool = False  # we migrated away from it: the peer's late packets on it do not pull us back
    # The path's fixed facts, read per packet: plain fields, not property calls.
    address: Address = attrs.field(init=False)
    direct: bool = attrs.field(init=False)
    overhead: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.address = self.path.address
        self.direct = self.path.is_direct
        self.overhead = self.path.overhead

    def allowance(self) -> float:
        """Bytes this path may still carry before it is validated (RFC 9000 §8.1)."""
        if self.validated:
            return math.inf
        return AMPLIFICATION_FACTOR * self.bytes_received - self.bytes_sent

    def matches(self, address: Address, via: Path | None) -> bool:
        if via is None:
            return self.direct and self.address == address
        return self.path is via or self.path == via


_PROBING_FRAMES: Final = (PathChallengeFrame, PathResponseFrame)


def is_probing(frames: list[Frame]) -> bool:
    """A packet of only PATH_CHALLENGE/PATH_RESPONSE (and PADDING) frames (RFC 9000 §9.1)."""
    return bool(frames) and all(isinstance(frame, _PROBING_FRAMES) for frame in frames)


@attrs.frozen(kw_only=True)
class PathMigrationFailed:
    """An active migration gave up: ``address`` never answered; the old path stays active."""

    address: Address


class PathControl:
    """Path validation and migration for a connection (a mixin; see the module)."""

    config: QuantumConfig
    state: ConnectionState
    rtt: RttEstimator
    congestion: CongestionController
    recovery: LossRecovery
    pacer: Pacer
    _rng: random.Random | None
    _random_bytes: Callable[[int], bytes]
    _stats: ConnectionCounters
    _peer_params: TransportParameters | None
    _largest_received: int
    _path: PathState
    _candidates: list[PathState]
    _migration_target: PathState | None
    _pacing_deadline: float | None

    _next_packet_number: int

    if TYPE_CHECKING:  # provided by the connection and its output half

        def _emit_path_event(self, address: Address, validated: bool) -> None: ...
        def _emit_migration_failed(self, address: Address) -> None: ...
        def _seal(
            self,
            payload: bytes,
            packet_type: PacketType = PacketType.DATA,
            flags: int = 0,
            fec_group: int = 0,
            fec_index: int = 0,
        ) -> bytes: ...

    # ------------------------------------------------------------------ public

    @property
    def peer_address(self) -> Address:
        """Where packets go now: the peer's address, or a relay's for a relayed path."""
        return self._path.address

    @property
    def path(self) -> Path:
        """The active path."""
        return self._path.path

    def _where(self) -> str:
        """The peer, as an error message names it: its address, or the node through a relay."""
        path = self._path.path
        host, port = path.address
        if path.is_direct:
            return f"the peer at {host}:{port}"
        peer = "the peer" if path.peer_id is None else f"node {path.peer_id.hex()[:16]}"
        return f"{peer} through {type(path).__name__} at {host}:{port}"

    @property
    def path_validated(self) -> bool:
        """The active path answered a PATH_CHALLENGE (or needed none)."""
        return self._path.validated

    @property
    def max_packet_size(self) -> int:
        """The largest Quantum packet on the active path (framing excluded)."""
        return self._path.packet_size

    def knows_path(self, path: Path) -> bool:
        """``path`` is the active path or a candidate (an authenticated packet came through it)."""
        return self._state_for(path.address, None if path.is_direct else path) is not None

    @property
    def migration_target(self) -> Path | None:
        """The path :meth:`migrate` is validating, or None."""
        target = self._migration_target
        return None if target is None else target.path

    @property
    def migrating(self) -> bool:
        """A migration asked for by :meth:`migrate` is still being validated."""
        return self._migration_target is not None

    def migrate(self, path: Path | Address, now: float) -> None:
        """Validate ``path`` and move the connection to it once it answers (rule 2).

        A plain address means a :class:`DirectPath`. Raises LocalProtocolError before the
        handshake completed or after the connection closed. Watch :attr:`migrating`; the
        ``PathMigrated(validated=True)`` event says it moved, ``PathMigrationFailed`` that it
        gave up.
        """
        if self.state not in CAN_SEND_DATA or self._peer_params is None:
            raise LocalProtocolError(
                f"cannot migrate a connection in state {self.state.value}: wait for the handshake "
                "to complete, and migrate only an open connection"
            )
        if not isinstance(path, Path):
            path = DirectPath(_check_address(path))
        if self._path.path is path or self._path.path == path:
            self._migration_target = None
            return
        state = self._candidate_for(path)
        if state is None:
            state = self._add_candidate(path, validated=False)
        state.initiated = True
        state.failed = False
        state.challenges_sent = 0
        state.challenge = self._random_bytes(PATH_TOKEN_SIZE)
        state.challenge_pending = True
        state.challenge_deadline = now
        self._migration_target = state

    # ------------------------------------------------------------------ state

    def _init_paths(self, address: Address, path: Path | None) -> None:
        """The first active path: ``path`` (framed: a relay's), else direct to ``address``. It
        counts as validated: the client chose it, the server's RETRY cookie proved it."""
        self._path = PathState(path=path or DirectPath(address), validated=True)
        self._path.packet_size = self._packet_size_of(self._path.path)
        self._candidates = []
        self._migration_target = None

    def _packet_size_of(self, path: Path) -> int:
        size = self.config.max_datagram_size
        if self._peer_params is not None:
            size = min(size, self._peer_params.max_datagram_size)
        if path.max_datagram_size is not None:
            size = min(size, path.max_datagram_size)
        return size - path.overhead

    def _on_peer_params(self) -> None:
        """The handshake told us the peer's limits: size the active path and its controllers."""
        size = self._packet_size_of(self._path.path)
        if size != self._path.packet_size:
            self._path.packet_size = size
            self._new_path_controllers(size, reset_rtt=False)  # nothing is in flight yet

    def _new_path_controllers(self, packet_size: int, *, reset_rtt: bool) -> None:
        """Fresh congestion state for a new path (RFC 9000 §9.4), sized to its packets."""
        config = self.config
        if reset_rtt:
            self.rtt = RttEstimator(
                initial_rtt=config.initial_rtt, min_rto=config.min_rto, max_rto=config.max_rto
            )
            self.recovery.rtt = self.rtt
            self.recovery.rtt_sample_floor = self._next_packet_number
        self.congestion = _congestion.create(
            config.congestion_control, packet_size, config.initial_window_packets
        )
        use_rng = getattr(self.congestion, "use_rng", None)
        if self._rng is not None and use_rng is not None:
            use_rng(random.Random(self._rng.getrandbits(64)))
        self.recovery.congestion = self.congestion
        self.pacer = Pacer(max_datagram_size=packet_size)
        self._pacing_deadline = None

    def _candidate_for(self, path: Path) -> PathState | None:
        for state in self._candidates:
            if state.path is path or state.path == path:
                return state
        return None

    def _add_candidate(self, path: Path, *, validated: bool) -> PathState:
        state = PathState(path=path, validated=validated, packet_size=self._packet_size_of(path))
        if len(self._candidates) >= MAX_CANDIDATE_PATHS:
            # Forget the oldest one that is not the migration we were asked for.
            for index, old in enumerate(self._candidates):
                if old is not self._migration_target:
                    del self._candidates[index]
                    break
        self._candidates.append(state)
        return state

    def _state_for(self, address: Address, via: Path | None) -> PathState | None:
        if self._path.matches(address, via):
            return self._path
        for state in self._candidates:
            if state.matches(address, via):
                return state
        return None

    # ------------------------------------------------------------------ input

    def _on_path(
        self, address: Address, via: Path | None, pn: int, size: int, frames: list[Frame] | None
    ) -> PathState:
        """An authenticated packet arrived on (address, via): account it, maybe move (rule 3)."""
        active = self._path
        if via is None and active.direct and address == active.address:
            active.bytes_received += size
            return active
        state = self._state_for(address, via)
        if state is active:
            active.bytes_received += size
            return active
        if state is None:
            state = self._add_candidate(via if via is not None else DirectPath(address), validated=False)
        state.bytes_received += size
        if (frames is not None and is_probing(frames)) or pn != self._largest_received or state.retired:
            # A probe, a packet reordered from an old path, or one the peer sent on the path
            # we left before it saw us leave: none of them moves us (§9.3).
            return state
        self._switch_to(state, retire_old=False)
        if not state.validated:
            if state.challenge is None:
                state.challenge = self._random_bytes(PATH_TOKEN_SIZE)
            state.challenge_pending = True  # (again, if a probe's answer carried it and was lost)
        self._emit_path_event(state.address, state.validated)
        return state

    def _on_path_challenge(self, token: bytes, state: PathState) -> None:
        state.retired = False  # the peer probes it: it may mean to move there
        responses = state.responses
        responses.append(token)
        if len(responses) > MAX_PENDING_RESPONSES:
            del responses[0]
        if state is not self._path and not state.validated and state.challenge is None:
            # The peer probes a path we have not proven: challenge it back, so that a later
            # move there needs no second round trip (and no amplification limit).
            state.challenge = self._random_bytes(PATH_TOKEN_SIZE)
            state.challenge_pending = True

    def _on_path_response(self, token: bytes) -> None:
        """A PATH_RESPONSE on any path validates the path its challenge went out on (§8.2.2)."""
        if self._path.challenge == token:
            self._path.challenge = None
            self._path.challenge_pending = False
            self._path.validated = True
            self._emit_path_event(self._path.address, True)
            return
        for state in self._candidates:
            if state.challenge == token:
                state.challenge = None
                state.challenge_pending = False
                state.challenge_deadline = None
                state.validated = True
                if state is self._migration_target:
                    self._migration_target = None
                    self._switch_to(state, retire_old=True)
                    self._emit_path_event(state.address, True)
                return

    def _switch_to(self, state: PathState, *, retire_old: bool) -> None:
        old = self._path
        state.retired = False
        if state in self._candidates:
            self._candidates.remove(state)
        self._path = state
        state.challenge_deadline = None
        self._stats.path_migrations += 1
        if old.validated and len(self._candidates) < MAX_CANDIDATE_PATHS:
            # Keep the old path as a proven candidate: moving back to it needs no new proof.
            old.challenge = None
            old.challenge_pending = False
            old.initiated = False
            old.retired = retire_old
            self._candidates.append(old)
        same_route = state.direct and old.direct and state.address[0] == old.address[0]
        if not same_route or state.packet_size != old.packet_size:
            self._new_path_controllers(state.packet_size, reset_rtt=not same_route)

    # ------------------------------------------------------------------ timers and output

    def _path_timer(self) -> float | None:
        target = self._migration_target
        return None if target is None else target.challenge_deadline

    def _handle_path_timer(self, now: float) -> None:
        target = self._migration_target
        if target is None or target.challenge_deadline is None or now < target.challenge_deadline:
            return
        if target.challenges_sent >= MAX_PATH_CHALLENGES:
            target.failed = True
            target.challenge = None
            target.challenge_pending = False
            target.challenge_deadline = None
            self._migration_target = None
            if target in self._candidates:
                self._candidates.remove(target)
            self._emit_migration_failed(target.address)
            return
        target.challenge_pending = True
        target.challenge_deadline = None  # set again when the probe goes out

    def _probe_datagrams(self, now: float) -> list[tuple[bytes, Address]]:
        """Probing packets for candidate paths: PATH_RESPONSEs owed there, our PATH_CHALLENGE."""
        out: list[tuple[bytes, Address]] = []
        for state in self._candidates:
            if not state.responses and not state.challenge_pending:
                continue
            limit = state.packet_size + state.overhead
            room = float(limit) if state.initiated else min(float(limit), state.allowance())
            parts: list[bytes] = []
            size = HEADER_SIZE + AEAD_TAG_SIZE + state.overhead
            while state.responses and size + PATH_FRAME_SIZE <= room:
                parts.append(encode_path_response(state.responses.pop(0)))
                size += PATH_FRAME_SIZE
            state.responses.clear()  # whatever did not fit: the peer probes again
            if state.challenge_pending and state.challenge is not None and size + PATH_FRAME_SIZE <= room:
                parts.append(encode_path_challenge(state.challenge))
                size += PATH_FRAME_SIZE
                state.challenge_pending = False
                if state.initiated:
                    state.challenges_sent += 1
                    interval = PATH_CHALLENGE_TIMEOUT * 2 ** (state.challenges_sent - 1)
                    state.challenge_deadline = now + min(interval, PATH_CHALLENGE_MAX_INTERVAL)
            if not parts:
                continue
            # Pad to the path's full size when allowed: the answer proves that size gets through.
            padding = int(min(room, limit)) - size
            if padding > 0:
                parts.append(PADDING_BYTE * padding)
            packet = state.path.wrap(self._seal(b"".join(parts)))
            # Not in flight: a probe's loss is no congestion signal on the active path; its
            # number is recorded so that the peer's ACK of it is not taken for a forgery.
            self.recovery.largest_sent = self._next_packet_number - 1
            state.bytes_sent += len(packet)
            self._stats.datagrams_sent += 1
            self._stats.bytes_sent += len(packet)
            self._stats.packets_sent += 1
            out.append((packet, state.address))
        return out


def _check_address(address: object) -> Address:
    if (
        not isinstance(address, tuple)
        or len(address) != 2
        or not isinstance(address[0], str)
        or not isinstance(address[1], int)
        or isinstance(address[1], bool)
        or not 0 < address[1] < 65536
    ):
        raise LocalProtocolError(
            f"an address is a (host, port) tuple with a port in 1..65535, got {address!r}"
        )
    return (address[0], address[1])


__all__ = [
    "AMPLIFICATION_FACTOR",
    "DirectPath",
    "Path",
    "PathControl",
    "PathMigrationFailed",
    "PathState",
    "PathValidationFailed",
    "is_probing",
]
