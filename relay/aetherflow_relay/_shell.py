"""The relay's async shell: one Quantum endpoint around :class:`RelayCore` (anyio; trio or asyncio).

Control messages travel on each client's Quantum connection; data frames are raw datagrams on
the same socket (``endpoint.set_raw_handler`` / ``endpoint.send_raw``). The shell reads the
clock, feeds the core, and carries out what it asks: messages to send, datagrams to send,
connections to close. Nothing here decides anything.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aetherflow_node._relay_wire import Address
from aetherflow_relay._core import RelayConfig, RelayCore, RelayStatistics, ServeRequest
from aetherflow_sdk import quantum
from aetherflow_sdk._errors import AetherFlowError
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session import TokenVerifier

if TYPE_CHECKING:
    from aetherflow_relay._serve import DocumentHost

logger = logging.getLogger("aetherflow.relay")

OUTBOX_SIZE: Final = 64  # control messages queued per client before the client is closed as stuck
RTT_REFRESH: Final = 1.0  # seconds between reading each connection's smoothed RTT into the core
# The refresh is spread over the second: one slice of the connections at a time, so that 1,000
# statistics() snapshots (~10 us each) do not stall the forwarding of every packet behind them.
RTT_SLICES: Final = 20


class Relay:
    """A running relay (see :func:`serve_relay`)."""

    def __init__(
        self,
        endpoint: quantum.Endpoint,
        core: RelayCore,
        task_group: TaskGroup,
        host: DocumentHost | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.core = core
        self.host = host
        """The persistence peer beside the relay (``--data-dir``), or None."""
        self._task_group = task_group
        self._connections: dict[bytes, quantum.Connection] = {}
        self._outboxes: dict[bytes, MemoryObjectSendStream[bytes | None]] = {}
        self._wake = anyio.Event()
        self._armed: float | None = None  # the core timer the timer loop sleeps toward
        self._rtt_due: deque[bytes] = deque()  # connections whose RTT this second's slices still read
        self.started = time.monotonic()

    @property
    def address(self) -> Address:
        """The relay's bound UDP address."""
        return self.endpoint.local_address

    @property
    def node_id(self) -> bytes:
        return self.endpoint.node_id

    def statistics(self) -> RelayStatistics:
        return self.core.statistics()

    # ------------------------------------------------------------------ input

    def _on_raw(self, data: bytes, address: Address) -> None:
        self.core.receive_frame(data, address, time.monotonic())
        self._flush()

    async def _accept_loop(self) -> None:
        while True:
            connection = await self.endpoint.accept()
            self._task_group.start_soon(self._serve_client, connection)

    async def _serve_client(self, connection: quantum.Connection) -> None:
        node_id = connection.peer_id
        previous = self._connections.get(node_id)
        send, receive = anyio.create_memory_object_stream[bytes | None](OUTBOX_SIZE)
        self._connections[node_id] = connection
        self._outboxes[node_id] = send
        self.core.connected(
            node_id, connection.peer_address, time.monotonic(), rtt=connection.statistics().smoothed_rtt
        )
        logger.info(
            "client connected", extra={"node": format_node_id(node_id), "address": connection.peer_address}
        )
        if previous is not None and previous is not connection:
            previous.abort("replaced by a newer connection from the same node")
        self._flush()
        self._task_group.start_soon(self._send_loop, connection, receive)
        try:
            while True:
                data = await connection.receive()
                self.core.rtt_measured(node_id, connection.statistics().smoothed_rtt)
                self.core.receive_control(node_id, data, time.monotonic(), unix_time=time.time())
                self._flush()
        except AetherFlowError:
            pass  # the connection is over; below tells the core
        finally:
            if self._connections.get(node_id) is connection:
                del self._connections[node_id]
                self._outboxes.pop(node_id, None)
                self.core.disconnected(node_id)
                self._flush()
                logger.info("client disconnected", extra={"node": format_node_id(node_id)})
            send.close()

    async def _send_loop(
        self, connection: quantum.Connection, receive: MemoryObjectReceiveStream[bytes | None]
    ) -> None:
        with contextlib.suppress(AetherFlowError):
            async with receive:
                async for data in receive:
                    if data is None:  # close, after what was queued before
                        await connection.aclose()
                        return
                    await connection.send(data)

    async def _event_loop(self) -> None:
        async for event in self.endpoint.events():
            if isinstance(event, quantum.PathChanged):
                node_id = event.connection.peer_id
                if self._connections.get(node_id) is event.connection:
                    self.core.path_changed(node_id, event.new, time.monotonic())
                    logger.info(
                        "client address changed",
                        extra={"node": format_node_id(node_id), "old": event.old, "new": event.new},
                    )
                    self._flush()

    def _refresh_rtts(self) -> None:
        """Read the smoothed RTT of the next slice of the connections into the core."""
        due = self._rtt_due
        if not due:
            due.extend(self._connections)
        for _ in range(min(len(due), max(1, -(-len(self._connections) // RTT_SLICES)))):
            node_id = due.popleft()
            connection = self._connections.get(node_id)
            if connection is not None:
                self.core.rtt_measured(node_id, connection.statistics().smoothed_rtt)

    async def _timer_loop(self) -> None:
        next_rtt = time.monotonic() + RTT_REFRESH / RTT_SLICES
        while True:
            timer = self.core.get_timer()
            self._armed = timer
            deadline = min(timer if timer is not None else math.inf, next_rtt)
            with anyio.move_on_after(max(deadline - time.monotonic(), 0)):
                await self._wake.wait()
            self._wake = anyio.Event()
            now = time.monotonic()
            if now >= next_rtt:
                self._refresh_rtts()
                next_rtt = now + RTT_REFRESH / RTT_SLICES
            self.core.handle_timer(now)
            self._flush()

    async def _serve(self, request: ServeRequest) -> None:
        assert self.host is not None
        answer = await self.host.handle(request.ticket)
        self.core.answer_serve(request.node_id, answer)
        self._flush()

    # ------------------------------------------------------------------ output

    def _flush(self) -> None:
        core = self.core
        for data, address in core.datagrams_to_send():
            self.endpoint.send_raw(data, address)
        for node_id, data in core.control_to_send():
            outbox = self._outboxes.get(node_id)
            if outbox is None:
                continue
            try:
                outbox.send_nowait(data)
            except anyio.WouldBlock:
                connection = self._connections.get(node_id)
                if connection is not None:
                    connection.abort("the relay's control messages to this node are not being read")
        for serve in core.serve_requests():
            self._task_group.start_soon(self._serve, serve)
        for request in core.closes():
            connection = self._connections.get(request.node_id)
            if connection is not None:
                logger.info(
                    "closing client",
                    extra={"node": format_node_id(request.node_id), "reason": request.reason},
                )
                outbox = self._outboxes.get(request.node_id)
                try:
                    if outbox is None:
                        raise anyio.WouldBlock
                    outbox.send_nowait(None)  # a REFUSED queued before it still goes out
                except anyio.WouldBlock:
                    connection.abort(request.reason)
        # Wake the timer loop only when the core's timer moved: not once per forwarded packet.
        if core.get_timer() != self._armed:
            self._wake.set()


@contextlib.asynccontextmanager
async def serve_relay(
    listen: Address = ("0.0.0.0", 3340),
    *,
    identity: Identity | None = None,
    config: RelayConfig | None = None,
    verifier: TokenVerifier | None = None,
    quantum_config: quantum.QuantumConfig | None = None,
    host: DocumentHost | None = None,
) -> AsyncIterator[Relay]:
    """Run a relay on UDP ``listen`` until the block ends.

    With ``host`` (:func:`~aetherflow_relay._serve.open_document_host`, opened first, with the
    same identity), the relay is also a persistence peer: REGISTERED tells every node where the
    host's node listens, and SERVE requests go to it.
    """
    core = RelayCore(config, verifier=verifier)
    if host is not None:
        if identity is None or identity.node_id != host.node.identity.node_id:
            raise AetherFlowError("the relay and its persistence peer must share one identity")
        core.serve_address = host.address
    async with (
        quantum.open_endpoint(listen, identity=identity, config=quantum_config) as endpoint,
        anyio.create_task_group() as task_group,
    ):
        relay = Relay(endpoint, core, task_group, host)
        endpoint.set_raw_handler(relay._on_raw)
        task_group.start_soon(relay._accept_loop)
        task_group.start_soon(relay._event_loop)
        task_group.start_soon(relay._timer_loop)
        try:
            yield relay
        finally:
            endpoint.set_raw_handler(None)
            task_group.cancel_scope.cancel()
