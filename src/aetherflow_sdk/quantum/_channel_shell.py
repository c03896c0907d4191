"""The application's handle on one channel of a Quantum connection (the async shell).

The state lives in the sans-I/O core (``_channels.py``); this module only waits for it
to change and pushes out what an application call produced, exactly as
:class:`~aetherflow_sdk.quantum.Connection` does for channel 0.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from aetherflow_sdk._errors import ConnectionClosed
from aetherflow_sdk.quantum._channels import ChannelCore, ChannelState
from aetherflow_sdk.quantum._states import CAN_SEND_DATA

if TYPE_CHECKING:
    from aetherflow_sdk.quantum._endpoint import Connection


class Channel:
    """One named message channel on a :class:`~aetherflow_sdk.quantum.Connection`.

    Reliable ordered or unordered messages and unreliable datagrams, independent of the
    connection's other channels: its own numbering, its own flow-control window, fair turns
    on the wire. It satisfies :class:`aetherflow_sdk._channel.MessageChannel`, so sessions and
    replica sync run over it unchanged. Get one from ``Connection.open_channel(name)`` or
    ``Connection.accept_channel()``.
    """

    def __init__(self, connection: Connection, core: ChannelCore) -> None:
        self._connection = connection
        self._core = core

    @property
    def name(self) -> bytes:
        """The name the opener gave the channel (e.g. a document's keyed hash)."""
        return self._core.name

    @property
    def peer_id(self) -> bytes:
        """The peer's node ID, proven by the connection's handshake."""
        return self._connection.peer_id

    @property
    def channel_id(self) -> int:
        """The channel's number on the wire (odd: opened by the client side, even: by the server)."""
        return self._core.channel_id

    @property
    def connection(self) -> Connection:
        """The connection that carries this channel."""
        return self._connection

    def _connection_error(self) -> ConnectionClosed:
        return self._connection._error()

    async def send(self, data: bytes, *, ordered: bool = True) -> None:
        """Send one reliable message on this channel; waits while its send buffer is full.

        Raises MessageTooLarge past the limit, ConnectionClosed (a subclass) once the channel
        or the connection is closed."""
        conn = self._connection._core
        core = self._core
        while not core.sender.can_queue(len(data)):
            if core.state is not ChannelState.OPEN or conn.state not in CAN_SEND_DATA:
                break  # the checks below raise the right error
            await self._connection._wait_change()
        conn._check_can_queue()
        conn.channels.send_message(core, data, ordered)
        self._connection._endpoint._after_app_action(conn)
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        """The next message. After the peer closes the channel, what it sent comes first, then
        ClosedByPeer."""
        conn = self._connection._core
        core = self._core
        while True:
            if core.state is ChannelState.CLOSING or core.state is ChannelState.CLOSED:
                raise conn.channels.error_of(core)  # closed here (or refused): nothing more to take
            message = conn.channels.receive_message(core)
            if message is not None:
                if core.max_data_queued:  # taking it freed window worth announcing
                    self._connection._endpoint._after_app_action(conn)
                await anyio.lowlevel.checkpoint()
                return message
            if core.state is not ChannelState.OPEN:
                raise conn.channels.error_of(core)
            if conn.state not in CAN_SEND_DATA:
                raise self._connection_error()
            await self._connection._wait_change()

    def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram on this channel (it may be lost). Never blocks."""
        conn = self._connection._core
        conn._check_can_queue()
        conn.channels.send_datagram(self._core, data, conn.max_packet_size)  # the active path's size
        self._connection._endpoint._after_app_action(conn)

    async def receive_datagram(self) -> bytes:
        """The next unreliable datagram of this channel."""
        conn = self._connection._core
        core = self._core
        while True:
            if core.datagrams_in:
                await anyio.lowlevel.checkpoint()
                return core.datagrams_in.popleft()
            if core.state is not ChannelState.OPEN:
                raise conn.channels.error_of(core)
            if conn.state not in CAN_SEND_DATA:
                raise self._connection_error()
            await self._connection._wait_change()

    async def aclose(self) -> None:
        """Close this channel only: what was sent on it is delivered first, then the peer is told.

        The connection and its other channels carry on."""
        conn = self._connection._core
        core = self._core
        conn.channels.close(core)
        self._connection._endpoint._after_app_action(conn)
        while core.state is not ChannelState.CLOSED and conn.state in CAN_SEND_DATA:
            await self._connection._wait_change()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<quantum.Channel {self._core.channel_id} {self._core.name!r} {self._core.state.value}>"


async def open_channel(connection: Connection, name: bytes) -> Channel:
    """``Connection.open_channel``: open, then wait for the peer's accept (or raise ChannelRefused)."""
    conn = connection._core
    conn._check_can_queue()
    core = conn.channels.open(name)
    connection._endpoint._after_app_action(conn)
    try:
        while core.state is ChannelState.OPENING:
            if conn.state not in CAN_SEND_DATA:
                raise connection._error()
            await connection._wait_change()
    except BaseException:
        # Cancelled or the connection died: do not leave a half-open channel holding a slot.
        conn.channels.close(core)
        connection._endpoint._after_app_action(conn)
        raise
    if core.state is ChannelState.CLOSED:
        raise conn.channels.error_of(core)
    return Channel(connection, core)


async def accept_channel(connection: Connection) -> Channel:
    """``Connection.accept_channel``: the next channel the peer opened and the filter accepted."""
    conn = connection._core
    while True:
        if conn.channels.accepted:
            return Channel(connection, conn.channels.accepted.popleft())
        if conn.state not in CAN_SEND_DATA:
            raise connection._error()
        await connection._wait_change()
