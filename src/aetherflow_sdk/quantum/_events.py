"""What an endpoint tells its application about its connections.

The sans-I/O core queues its own events per connection (``HandshakeCompleted``,
``PathMigrated``, ``ConnectionTerminated``, read with ``next_event()``). The async
endpoint turns them into the three records below, one stream for all its
connections (:meth:`Endpoint.events`). A connection is listed by
:meth:`Endpoint.connections` from its :class:`ConnectionEstablished` until its
:class:`ConnectionEnded`; both come exactly once per established connection.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from aetherflow_sdk import _errors

if TYPE_CHECKING:
    from aetherflow_sdk.quantum._connection import Address
    from aetherflow_sdk.quantum._endpoint import Connection

EVENT_BUFFER: Final = 10_000  # events held per unread stream; the oldest are dropped past this


@attrs.frozen(kw_only=True)
class ConnectionEstablished:
    """A connection finished its handshake (either side dialled)."""

    connection: Connection
    """The connection, as :meth:`Endpoint.connect` or :meth:`Endpoint.accept` return it."""
    peer_id: bytes
    """The peer's node ID, proven by the handshake."""
    address: Address
    """The peer's address when the handshake completed."""
    inbound: bool
    """True when the peer dialled this endpoint (the connection is, or will be, accepted)."""


@attrs.frozen(kw_only=True)
class PathChanged:
    """The peer's packets now come from a new address (NAT rebinding or migration)."""

    connection: Connection
    old: Address
    """Where the peer's packets came from before."""
    new: Address
    """Where they come from now; what is sent goes there (after path validation)."""


@attrs.frozen(kw_only=True)
class ConnectionEnded:
    """A connection closed: by either side, an idle timeout, or a failure inside it."""

    connection: Connection
    reason: str
    """One line saying why, e.g. "the peer closed the connection" or the idle timeout."""
    error: _errors.ConnectionClosed
    """The error the connection's calls raise from now on (its type tells who closed it)."""


EndpointEvent = ConnectionEstablished | PathChanged | ConnectionEnded


class EventStream(AsyncIterator[EndpointEvent]):
    """One reader's view of an endpoint's events, from the moment it was created.

    Each stream gets every event; a stream that falls more than ``EVENT_BUFFER`` events
    behind loses the oldest (counted in ``dropped``). It ends when the endpoint closes.
    """

    def __init__(self) -> None:
        self._queue: deque[EndpointEvent] = deque()
        self._wakeup: anyio.Event | None = None
        self._ended = False
        self.dropped = 0
        """Events this stream lost because it fell behind."""

    def _push(self, event: EndpointEvent) -> None:
        if len(self._queue) >= EVENT_BUFFER:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> EndpointEvent:
        while True:
            if self._queue:
                await anyio.lowlevel.checkpoint()  # a checkpoint, but the event is taken after it
                if self._queue:
                    return self._queue.popleft()
                continue
            if self._ended:
                raise StopAsyncIteration
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()


class EventHub:
    """The endpoint's side: publishes each event to every live stream (held weakly)."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._closed = False

    def subscribe(self) -> EventStream:
        stream = EventStream()
        if self._closed:
            stream._end()
        else:
            self._streams.add(stream)
        return stream

    def publish(self, event: EndpointEvent) -> None:
        for stream in self._streams:
            stream._push(event)

    def close(self) -> None:
        self._closed = True
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()


__all__ = ["ConnectionEnded", "ConnectionEstablished", "EndpointEvent", "EventStream", "PathChanged"]
