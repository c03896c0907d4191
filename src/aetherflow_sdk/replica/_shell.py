"""The async shell around :class:`SyncProtocol`: runs it over MessageChannels (anyio: trio or asyncio).

All protocol decisions live in ``_sync.py``; this module only moves bytes,
reads the clock, and wakes the per-peer senders when something changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from aetherflow_sdk._channel import MessageChannel
from aetherflow_sdk._errors import ConnectionClosed, LocalProtocolError
from aetherflow_sdk.replica._awareness import DEFAULT_AWARENESS_TIMEOUT
from aetherflow_sdk.replica._replica import Replica
from aetherflow_sdk.replica._sync import DEFAULT_PRESENCE_INTERVAL, PeerKey, PeerPresence, SyncProtocol

# Extra time a clean close spends pushing its last messages (the null presence).
_CLOSE_GRACE = 1.0
# Shortest pause of the timer loop after handling a deadline (avoids spinning).
_TIMER_MIN_PAUSE = 0.005


class ReplicaSync:
    """Keeps one replica in sync with every channel handed to :meth:`serve`.

    ::

        async with ReplicaSync(replica) as sync:
            tg.start_soon(sync.serve, channel)        # one call per peer
            sync.set_presence(name="ada", color="#30bced", anchor=3)

    Leaving the ``async with`` announces our departure (null presence) to every
    peer and stops serving.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        clock: Callable[[], float] = anyio.current_time,
        awareness_timeout: float = DEFAULT_AWARENESS_TIMEOUT,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
        presence_as_datagrams: bool = False,
        on_foreign_history: Literal["adopt", "refuse"] = "adopt",
    ) -> None:
        self._clock = clock
        self.protocol = SyncProtocol(
            replica,
            now=clock(),
            awareness_timeout=awareness_timeout,
            presence_interval=presence_interval,
            presence_as_datagrams=presence_as_datagrams,
            on_foreign_history=on_foreign_history,
        )
        self.replica = replica
        self._channels: dict[PeerKey, MessageChannel] = {}
        self._wakers: dict[PeerKey, anyio.Event] = {}
        self._timer_wake = anyio.Event()
        self._scopes: dict[PeerKey, anyio.CancelScope] = {}
        self._task_group: TaskGroup | None = None
        self._closing = False
        self._activity = anyio.Event()
        self._unsubscribe = replica.subscribe_updates(self._on_update)

    async def __aenter__(self) -> ReplicaSync:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._timer_loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._task_group is not None
        try:
            if exc is None:
                await self.aclose()
        finally:
            self._task_group.cancel_scope.cancel()
            result = await self._task_group.__aexit__(exc_type, exc, tb)
        return result

    async def aclose(self) -> None:
        """Announce that we leave (null presence, sent reliably) and stop serving every peer."""
        if self._closing:
            return
        self._closing = True
        self._unsubscribe()
        self.protocol.close(self._clock())
        with anyio.move_on_after(_CLOSE_GRACE):
            for peer, channel in list(self._channels.items()):
                with contextlib.suppress(ConnectionClosed):
                    await self._send_due(peer, channel)
        for scope in self._scopes.values():
            scope.cancel()

    # -- presence -------------------------------------------------------------------------

    def set_presence(
        self, *, name: str, color: str, anchor: int | None = None, head: int | None = None
    ) -> None:
        """Publish our name, colour and selection (code points)."""
        self.protocol.set_presence(name=name, color=color, anchor=anchor, head=head, now=self._clock())
        self._wake_all()

    def set_local_state(self, state: dict[str, Any] | None) -> None:
        self.protocol.set_local_state(state, self._clock())
        self._wake_all()

    def presence(self) -> dict[int, PeerPresence]:
        """Remote users' presence, cursors resolved to code points now."""
        return self.protocol.presence()

    @property
    def activity(self) -> anyio.Event:
        """An event set the next time something from a peer has been processed (or a timer
        fired, or a peer came or went). Take it *before* checking your condition, then wait
        on it: nothing can slip between the check and the wait."""
        return self._activity

    # -- serving one peer -----------------------------------------------------------------

    async def serve(self, channel: MessageChannel, *, can_write: bool = True) -> None:
        """Sync with the peer at the other end of ``channel`` until it closes (or we do).

        A second channel from the same peer (it reconnected before we noticed the
        old connection die) replaces the first: the old ``serve()`` returns.
        """
        if self._closing:
            raise LocalProtocolError("serve() on a ReplicaSync that is closing")
        peer = channel.peer_id
        if peer in self._channels:
            self._scopes[peer].cancel()
            self._forget(peer)
        self.protocol.add_peer(peer, can_write=can_write)
        self._channels[peer] = channel
        try:
            with anyio.CancelScope() as scope:
                self._scopes[peer] = scope
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._receive_loop, peer, channel, tg.cancel_scope, False)
                    tg.start_soon(self._receive_loop, peer, channel, tg.cancel_scope, True)
                    tg.start_soon(self._send_loop, peer, channel, tg.cancel_scope)
        finally:
            if self._channels.get(peer) is channel:  # not replaced by a newer channel
                self._forget(peer)

    def _forget(self, peer: PeerKey) -> None:
        self._scopes.pop(peer, None)
        self._channels.pop(peer, None)
        self._wakers.pop(peer, None)
        self.protocol.remove_peer(peer)
        self._wake_all()

    async def _receive_loop(
        self, peer: PeerKey, channel: MessageChannel, scope: anyio.CancelScope, datagrams: bool
    ) -> None:
        receive = channel.receive_datagram if datagrams else channel.receive
        try:
            while True:
                data = await receive()
                self.protocol.receive_message(peer, data, self._clock())
                self._wake_all()
        except ConnectionClosed:
            if not datagrams:
                scope.cancel()

    async def _send_loop(self, peer: PeerKey, channel: MessageChannel, scope: anyio.CancelScope) -> None:
        try:
            while True:
                wake = anyio.Event()
                self._wakers[peer] = wake
                if not await self._send_due(peer, channel):
                    await wake.wait()
        except ConnectionClosed:
            scope.cancel()

    async def _send_due(self, peer: PeerKey, channel: MessageChannel) -> bool:
        out = self.protocol.messages_for(peer, self._clock())
        for message in out:
            if message.kind == "datagram":
                channel.send_datagram(message.data)
            else:
                await channel.send(message.data, ordered=message.kind == "ordered")
        return bool(out)

    # -- timers and wake-ups --------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake = anyio.Event()
            deadline = self.protocol.get_timer()
            if deadline is None:
                await self._timer_wake.wait()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._timer_wake.wait()
                if self._clock() < deadline:
                    continue
            self.protocol.handle_timer(self._clock())
            self._wake_senders()
            self._activity.set()
            self._activity = anyio.Event()
            # The protocol may still report a due deadline (a paced presence whose
            # sender is blocked on backpressure): pause briefly rather than spin.
            with anyio.move_on_after(_TIMER_MIN_PAUSE):
                await self._timer_wake.wait()

    def _on_update(self, update: bytes, origin: object, local: bool) -> None:
        self._wake_senders()

    def _wake_senders(self) -> None:
        # Called after every local edit: cheap when the senders are already awake.
        for event in self._wakers.values():
            if not event.is_set():
                event.set()

    def _wake_all(self) -> None:
        self._wake_senders()
        self._timer_wake.set()
        self._activity.set()
        self._activity = anyio.Event()
