"""The message-channel contract that upper layers (sessions, replica sync) run over.

A :class:`quantum.Connection` satisfies it, and so does a session-wrapped
connection. Upper layers depend on this Protocol, never on how the peer was
found (LAN, direct, relayed) or on the transport's internals.

:func:`memory_channel_pair` joins two channels in memory. It exists for unit
tests of upper layers; real-transport tests use Quantum on loopback.
"""

from __future__ import annotations

import contextlib
import math
from typing import Protocol

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aetherflow_sdk._errors import ClosedByPeer, ClosedLocally


class MessageChannel(Protocol):
    """Reliable messages plus unreliable datagrams to one peer."""

    @property
    def peer_id(self) -> bytes:
        """The authenticated Ed25519 public key of the peer (32 bytes)."""

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        """Send one reliable message; waits while the send buffer is full (backpressure)."""

    async def receive(self) -> bytes:
        """The next message; raises ConnectionClosed (a subclass) once the channel is over."""

    def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram; it may be dropped. Never blocks."""

    async def receive_datagram(self) -> bytes:
        """The next datagram; raises ConnectionClosed once the channel is over."""

    async def aclose(self) -> None:
        """Close gracefully: what was sent is delivered first."""


@attrs.define(eq=False)
class MemoryChannel:
    """One end of an in-memory :class:`MessageChannel` pair (tests only)."""

    peer_id: bytes
    _send_messages: MemoryObjectSendStream[bytes]
    _receive_messages: MemoryObjectReceiveStream[bytes]
    _send_datagrams: MemoryObjectSendStream[bytes]
    _receive_datagrams: MemoryObjectReceiveStream[bytes]
    _closed: bool = False

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        if self._closed:
            raise ClosedLocally("send() on a channel this side closed")
        try:
            await self._send_messages.send(bytes(data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ClosedByPeer("the peer closed the channel") from exc

    async def receive(self) -> bytes:
        if self._closed:
            raise ClosedLocally("receive() on a channel this side closed")
        try:
            return await self._receive_messages.receive()
        except anyio.EndOfStream as exc:
            raise ClosedByPeer("the peer closed the channel") from exc

    def send_datagram(self, data: bytes) -> None:
        if self._closed:
            raise ClosedLocally("send_datagram() on a channel this side closed")
        # Datagrams are unreliable: a full or closed queue drops them.
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send_datagrams.send_nowait(bytes(data))

    async def receive_datagram(self) -> bytes:
        if self._closed:
            raise ClosedLocally("receive_datagram() on a channel this side closed")
        try:
            return await self._receive_datagrams.receive()
        except anyio.EndOfStream as exc:
            raise ClosedByPeer("the peer closed the channel") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._send_messages.aclose()
            await self._send_datagrams.aclose()


def memory_channel_pair(
    peer_ids: tuple[bytes, bytes] = (b"\x01" * 32, b"\x02" * 32), datagram_queue: int = 64
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two joined in-memory channels; ``a.peer_id`` is ``peer_ids[1]`` and vice versa."""
    a_to_b_send, a_to_b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_to_a_send, b_to_a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    a_dg_send, a_dg_receive = anyio.create_memory_object_stream[bytes](datagram_queue)
    b_dg_send, b_dg_receive = anyio.create_memory_object_stream[bytes](datagram_queue)
    a = MemoryChannel(peer_ids[1], a_to_b_send, b_to_a_receive, a_dg_send, b_dg_receive)
    b = MemoryChannel(peer_ids[0], b_to_a_send, a_to_b_receive, b_dg_send, a_dg_receive)
    return a, b
