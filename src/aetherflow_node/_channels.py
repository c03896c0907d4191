"""Named channels over one Quantum connection: one channel per shared document.

The node puts every document it shares with a peer on one connection to that peer, each
document on its own channel. This module is the only place that knows how channels are
made; it offers the Quantum channel contract (``open_channel(name)``, ``accept_channel()``,
a filter on incoming names, ``Channel`` being a MessageChannel whose ``aclose`` closes
only itself) as a small multiplexer over a connection's messages and datagrams, until
Quantum carries channels natively.

Wire (inside the connection's encrypted messages)::

    message  = kind (1 byte) || channel id (4 bytes, big-endian) || body
    datagram = channel id (4 bytes) || payload

=====  ======  ==========================================================
kind   name    body
=====  ======  ==========================================================
0x01   OPEN    the channel's name (1..64 bytes)
0x02   ACCEPT  empty
0x03   REFUSE  UTF-8 reason
0x04   DATA    one application message
0x05   CLOSE   empty: the sender is done with the channel
=====  ======  ==========================================================

The opener picks the id: even when it dialed the connection, odd when it accepted it, so
both sides may open channels at once without colliding. An unknown kind or a malformed
frame is a protocol violation: counted, and the connection is closed.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Protocol

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aetherflow_sdk import AetherFlowError, BadPacket, ClosedByPeer, ClosedLocally, ConnectionClosed

_HEADER = struct.Struct(">BI")
_DATAGRAM = struct.Struct(">I")
OPEN, ACCEPT, REFUSE, DATA, CLOSE = 1, 2, 3, 4, 5
MAX_NAME = 64
RECEIVE_BUFFER = 64
"""Messages queued per channel before the connection's reader waits (backpressure)."""
DATAGRAM_BUFFER = 64
"""Datagrams queued per channel; more are dropped (they are unreliable anyway)."""
DEFAULT_MAX_CHANNELS = 256


class ChannelRefused(AetherFlowError):
    """The peer refused to open the channel (it does not hold that document, or is full)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Transport(Protocol):
    """What a mux needs from a connection (a ``quantum.Connection``)."""

    @property
    def peer_id(self) -> bytes: ...

    async def send(self, data: bytes, *, ordered: bool = True) -> None: ...

    async def receive(self) -> bytes: ...

    def send_datagram(self, data: bytes) -> None: ...

    async def receive_datagram(self) -> bytes: ...

    async def aclose(self) -> None: ...


def parse_frame_untrusted(data: bytes) -> tuple[int, int, bytes]:
    """(kind, channel id, body) of one mux message; raises only BadPacket."""
    if len(data) < _HEADER.size:
        raise BadPacket(f"channel frame of {len(data)} bytes is shorter than its header")
    kind, channel_id = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if kind not in (OPEN, ACCEPT, REFUSE, DATA, CLOSE):
        raise BadPacket(f"unknown channel frame kind {kind}")
    if kind == OPEN and not 0 < len(body) <= MAX_NAME:
        raise BadPacket(f"a channel name is 1 to {MAX_NAME} bytes, got {len(body)}")
    return kind, channel_id, body


@attrs.frozen(kw_only=True)
class MuxStatistics:
    channels_open: int
    opened: int
    accepted: int
    refused: int
    bad_frames: int


class Channel:
    """One named channel on a connection; a MessageChannel of its own."""

    def __init__(self, mux: Mux, channel_id: int, name: bytes) -> None:
        self._mux = mux
        self.channel_id = channel_id
        self.name = name
        self._messages: tuple[MemoryObjectSendStream[bytes], MemoryObjectReceiveStream[bytes]]
        self._messages = anyio.create_memory_object_stream[bytes](RECEIVE_BUFFER)
        self._datagrams: tuple[MemoryObjectSendStream[bytes], MemoryObjectReceiveStream[bytes]]
        self._datagrams = anyio.create_memory_object_stream[bytes](DATAGRAM_BUFFER)
        self._ended: ConnectionClosed | None = None
        self._closed_locally = False

    @property
    def peer_id(self) -> bytes:
        return self._mux.peer_id

    def _error(self) -> ConnectionClosed:
        if self._closed_locally:
            return ClosedLocally("this side closed the channel")
        ended = self._ended or ClosedLocally("the channel is closed")
        return type(ended)(str(ended), error_code=ended.error_code, reason=ended.reason)

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        if self._closed_locally or self._ended is not None:
            raise self._error()
        await self._mux._send(DATA, self.channel_id, data, ordered=ordered)

    async def receive(self) -> bytes:
        try:
            return await self._messages[1].receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._error() from None

    def send_datagram(self, data: bytes) -> None:
        if self._closed_locally or self._ended is not None:
            raise self._error()
        self._mux._transport.send_datagram(_DATAGRAM.pack(self.channel_id) + data)

    async def receive_datagram(self) -> bytes:
        try:
            return await self._datagrams[1].receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._error() from None

    async def aclose(self) -> None:
        """Close this channel only; the connection and its other channels go on."""
        if self._closed_locally:
            return
        self._closed_locally = True
        self._mux._forget(self.channel_id)
        self._end_streams()
        if self._ended is None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1.0),
                contextlib.suppress(ConnectionClosed),
            ):
                await self._mux._send(CLOSE, self.channel_id, b"", ordered=True)

    def _end(self, error: ConnectionClosed) -> None:
        if self._ended is None:
            self._ended = error
        self._end_streams()

    def _end_streams(self) -> None:
        self._messages[0].close()
        self._datagrams[0].close()


class Mux:
    """The channels of one connection. Run :meth:`run` in a task group while it is in use."""

    def __init__(
        self,
        transport: Transport,
        *,
        dialer: bool,
        accept_filter: Callable[[bytes, bytes], bool] = lambda peer, name: True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
    ) -> None:
        self._transport = transport
        self.peer_id = transport.peer_id
        self._filter = accept_filter
        self._max_channels = max_channels
        self._next_id = 0 if dialer else 1
        self._channels: dict[int, Channel] = {}
        self._pending: dict[int, tuple[anyio.Event, list[str | None]]] = {}
        self._incoming: tuple[MemoryObjectSendStream[Channel], MemoryObjectReceiveStream[Channel]]
        self._incoming = anyio.create_memory_object_stream[Channel](RECEIVE_BUFFER)
        self._ended: ConnectionClosed | None = None
        self._counts = dict.fromkeys(("opened", "accepted", "refused", "bad_frames"), 0)

    def statistics(self) -> MuxStatistics:
        return MuxStatistics(channels_open=len(self._channels), **self._counts)

    @property
    def transport(self) -> Transport:
        return self._transport

    async def _send(self, kind: int, channel_id: int, body: bytes, *, ordered: bool) -> None:
        await self._transport.send(_HEADER.pack(kind, channel_id) + body, ordered=ordered)

    def _forget(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)

    async def open_channel(self, name: bytes) -> Channel:
        """Open a channel named ``name``; waits for the peer's answer. Raises ChannelRefused."""
        if not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"a channel name is 1 to {MAX_NAME} bytes")
        if self._ended is not None:
            raise self._ended
        channel_id = self._next_id
        self._next_id += 2
        answered, answer = anyio.Event(), list[str | None]([None])
        self._pending[channel_id] = (answered, answer)
        channel = Channel(self, channel_id, name)
        self._channels[channel_id] = channel
        try:
            await self._send(OPEN, channel_id, name, ordered=True)
            await answered.wait()
        finally:
            self._pending.pop(channel_id, None)
        if self._ended is not None:
            self._forget(channel_id)
            raise self._ended
        if answer[0] is not None:
            self._forget(channel_id)
            raise ChannelRefused(f"the peer refused channel {name!r}: {answer[0]}", reason=answer[0])
        self._counts["opened"] += 1
        return channel

    async def accept_channel(self) -> Channel:
        """The next channel the peer opened and the filter accepted."""
        try:
            return await self._incoming[1].receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._ended or ClosedLocally("the connection is closed") from None

    async def run(self) -> None:
        """Read the connection and route frames until it ends; then end every channel."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._datagram_loop)
                try:
                    await self._message_loop()
                except ConnectionClosed as exc:
                    self._shutdown(exc)
                except BadPacket as exc:
                    self._counts["bad_frames"] += 1
                    self._shutdown(ClosedLocally(f"the peer broke the channel protocol ({exc})"))
                    with (
                        anyio.CancelScope(shield=True),
                        anyio.move_on_after(1.0),
                        contextlib.suppress(ConnectionClosed),
                    ):
                        await self._transport.aclose()
                tg.cancel_scope.cancel()
        finally:
            self._shutdown(ClosedLocally("the connection is closed"))

    def _shutdown(self, error: ConnectionClosed) -> None:
        if self._ended is None:
            self._ended = error
        for channel in list(self._channels.values()):
            channel._end(error)
        self._channels.clear()
        for answered, _ in self._pending.values():
            answered.set()
        self._incoming[0].close()

    async def _datagram_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await self._transport.receive_datagram()
                if len(data) < _DATAGRAM.size:
                    self._counts["bad_frames"] += 1
                    continue
                channel = self._channels.get(_DATAGRAM.unpack_from(data)[0])
                if channel is not None:
                    with contextlib.suppress(
                        anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
                    ):
                        channel._datagrams[0].send_nowait(data[_DATAGRAM.size :])

    async def _message_loop(self) -> None:
        while True:
            kind, channel_id, body = parse_frame_untrusted(await self._transport.receive())
            channel = self._channels.get(channel_id)
            if kind == DATA:
                if channel is not None:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await channel._messages[0].send(body)
            elif kind == OPEN:
                await self._on_open(channel_id, body)
            elif kind in (ACCEPT, REFUSE):
                pending = self._pending.get(channel_id)
                if pending is not None:
                    pending[1][0] = None if kind == ACCEPT else body.decode("utf-8", "replace")[:200]
                    pending[0].set()
            elif kind == CLOSE and channel is not None:
                self._forget(channel_id)
                channel._end(ClosedByPeer("the peer closed the channel", reason="channel closed"))

    async def _on_open(self, channel_id: int, name: bytes) -> None:
        if channel_id % 2 == self._next_id % 2 or channel_id in self._channels:
            raise BadPacket(f"the peer opened channel {channel_id}, which is not its to open")
        reason = None
        if len(self._channels) >= self._max_channels:
            reason = "too many channels"
        elif not self._filter(self.peer_id, name):
            reason = "not held here"
        if reason is not None:
            self._counts["refused"] += 1
            await self._send(REFUSE, channel_id, reason.encode(), ordered=True)
            return
        channel = Channel(self, channel_id, name)
        self._channels[channel_id] = channel
        self._counts["accepted"] += 1
        await self._send(ACCEPT, channel_id, b"", ordered=True)
        try:
            self._incoming[0].send_nowait(channel)
        except anyio.WouldBlock:
            self._forget(channel_id)
            await self._send(CLOSE, channel_id, b"", ordered=True)
