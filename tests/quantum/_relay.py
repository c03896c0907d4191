"""A relay for tests: 60 bytes of framing in front of each Quantum packet.

:class:`RelayPath` is the framed :class:`~aetherflow_sdk.quantum.Path` a node would use;
:class:`InMemoryRelay` forwards on the virtual network (``_vnet.py``), :class:`UdpRelay` over
real UDP on loopback. Nodes register with a REGISTER frame (or directly, in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio

from aetherflow_sdk._errors import BadPacket
from aetherflow_sdk.quantum import Path

Address = tuple[str, int]

RELAY_FRAME = 60  # bytes of relay framing in front of each packet
RELAY_MAGIC = 0xAF  # a raw first byte (>= 0x40)
TO_PEER, FROM_PEER, REGISTER = 1, 2, 3


class RelayPath(Path):
    """A path through the in-memory relay: a 60-byte frame naming the peer, then the packet.

    frame = magic (1) | kind (1) | reserved (2) | node ID of the peer (32) | reserved (24)
    """

    def __init__(self, relay: Address, peer_id: bytes, relay_mtu: int) -> None:
        self._relay, self._peer_id, self._mtu = relay, peer_id, relay_mtu

    @property
    def address(self) -> Address:
        return self._relay

    @property
    def overhead(self) -> int:
        return RELAY_FRAME

    @property
    def max_datagram_size(self) -> int:
        return self._mtu

    @property
    def peer_id(self) -> bytes:
        return self._peer_id

    def wrap(self, packet: bytes) -> bytes:
        return bytes((RELAY_MAGIC, TO_PEER, 0, 0)) + self._peer_id + bytes(24) + packet

    def unwrap_untrusted(self, datagram: bytes) -> bytes:
        if (
            len(datagram) <= RELAY_FRAME
            or datagram[0] != RELAY_MAGIC
            or datagram[1] != FROM_PEER
            or datagram[4:36] != self._peer_id
        ):
            raise BadPacket("not a relay frame from this path's peer")
        return datagram[RELAY_FRAME:]


class InMemoryRelay:
    """Forwards framed datagrams between registered nodes, rewriting the frame's node ID to the
    sender's; it drops anything larger than its MTU (as a relay would)."""

    def __init__(self, net: Any, address: Address, mtu: int) -> None:
        self.address, self.mtu = address, mtu
        self._address_of: dict[bytes, Address] = {}
        self._node_at: dict[Address, bytes] = {}
        self._out: list[tuple[bytes, Address]] = []
        self.forwarded = 0
        self.oversized = 0
        net.endpoints[address] = self

    def register(self, node_id: bytes, address: Address) -> None:
        self._address_of[node_id] = address
        self._node_at[address] = node_id

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if len(data) > self.mtu:
            self.oversized += 1
            return
        if len(data) <= RELAY_FRAME or data[0] != RELAY_MAGIC or data[1] != TO_PEER:
            return
        destination = self._address_of.get(data[4:36])
        sender = self._node_at.get(source)
        if destination is None or sender is None:
            return
        self.forwarded += 1
        self._out.append((bytes((RELAY_MAGIC, FROM_PEER, 0, 0)) + sender + data[36:], destination))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def relay_path_for(relay: Address, relay_mtu: int) -> Callable[[bytes], RelayPath | None]:
    """An ``accept_paths`` factory: a path back to the sender of each frame from the relay."""

    def path_for(datagram: bytes) -> RelayPath | None:
        if len(datagram) <= RELAY_FRAME or datagram[0] != RELAY_MAGIC or datagram[1] != FROM_PEER:
            return None
        return RelayPath(relay, datagram[4:36], relay_mtu)

    return path_for


def register_frame(node_id: bytes) -> bytes:
    """What a node sends the relay (as a raw datagram) to be reachable through it."""
    return bytes((RELAY_MAGIC, REGISTER, 0, 0)) + node_id + bytes(24)


class UdpRelay:
    """The same relay over a real UDP socket on loopback (run it in a nursery)."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.forwarded = 0
        self.oversized = 0
        self._address_of: dict[bytes, Address] = {}
        self._node_at: dict[Address, bytes] = {}
        self._sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.registered = trio.Event()

    @property
    def address(self) -> Address:
        host, port = self._sock.getsockname()
        return (str(host), int(port))

    async def run(self, *, task_status: trio.TaskStatus[UdpRelay] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._sock.bind(("127.0.0.1", 0))
            task_status.started(self)
            with suppress(trio.ClosedResourceError):
                while True:
                    data, source = await self._sock.recvfrom(65536)
                    source = (str(source[0]), int(source[1]))
                    if len(data) > self.mtu:
                        self.oversized += 1
                    elif len(data) == RELAY_FRAME and data[0] == RELAY_MAGIC and data[1] == REGISTER:
                        self._address_of[data[4:36]] = source
                        self._node_at[source] = data[4:36]
                        if len(self._address_of) >= 2:
                            self.registered.set()
                    elif len(data) > RELAY_FRAME and data[0] == RELAY_MAGIC and data[1] == TO_PEER:
                        destination = self._address_of.get(data[4:36])
                        sender = self._node_at.get(source)
                        if destination is not None and sender is not None:
                            self.forwarded += 1
                            frame = bytes((RELAY_MAGIC, FROM_PEER, 0, 0)) + sender + data[36:]
                            await self._sock.sendto(frame, destination)
        finally:
            self._sock.close()
