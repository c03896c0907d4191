"""The simulated peers of ``aetherflow bench relay``: many real nodes, one process, one loop.

Each simulated peer is a node of its own: its own identity, its own UDP socket and its own
Quantum :class:`~aetherflow_sdk.quantum.EndpointCore` with a real connection to the relay, over
which it registers. What it does not have is a task and an event loop of its own: one process
drives a few hundred peers' sans-I/O cores from a single epoll loop (each socket registered once,
one timer heap for all of them), so that the clients cost a few microseconds per packet and the
relay, not the clients, is what the benchmark measures.

The process speaks to the benchmark on stdin/stdout: ``ready`` once every peer is registered,
then it waits for ``go``, sends for the window and answers with one JSON line.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
from typing import Any

from aetherflow_node._relay_wire import (
    DELIVER_OVERHEAD,
    FrameKind,
    Register,
    Registered,
    encode_control,
    encode_send,
    parse_control_untrusted,
)
from aetherflow_sdk import quantum
from aetherflow_sdk._errors import BadPacket
from aetherflow_sdk._identity import Identity

Address = tuple[str, int]
STAMP = struct.Struct("!dI")  # send time (time.monotonic(), shared by the machine's processes), sequence
HANDSHAKES_IN_FLIGHT = 64  # registrations started at once per process
REGISTRATION_TIMEOUT = 120.0
DRAIN = 0.5  # seconds after the window for the last frames in flight


class _Peer:
    """One simulated node: its socket, its endpoint core, its connection to the relay."""

    __slots__ = ("armed", "connection", "core", "node_id", "sock", "tag")

    def __init__(self, relay: Address, relay_id: bytes, config: quantum.QuantumConfig, now: float) -> None:
        identity = Identity.generate()
        self.node_id = identity.node_id
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.core = quantum.EndpointCore(identity=identity, config=config, accept_connections=False)
        self.connection = self.core.connect(relay, now, peer_id=relay_id)
        self.connection.send_message(encode_control(Register(token=None, candidates=())))
        self.tag: bytes | None = None
        self.armed: float | None = None  # the deadline of this peer's entry in the timer heap


class PeerProcess:
    """``count`` simulated peers registered with the relay at ``relay`` and driven by one loop."""

    def __init__(self, relay: Address, relay_id: bytes, count: int, *, rate: float, size: int,
                 duration: float, seed: int) -> None:  # fmt: skip
        self.relay = relay
        self.relay_id = relay_id
        self.count = count
        self.rate = rate
        self.size = size
        self.duration = duration
        self.seed = seed
        self.config = quantum.QuantumConfig()
        self.peers: list[_Peer] = []
        self.selector = selectors.EpollSelector()
        self.timers: list[tuple[float, int]] = []
        self.latencies: list[float] = []
        self.measuring = False
        self.closed = 0  # peers whose relay connection ended

    # ------------------------------------------------------------------ one peer's I/O

    def _on_raw(self, data: bytes, address: Address) -> None:
        if self.measuring and data[0] == FrameKind.DELIVER and len(data) >= DELIVER_OVERHEAD + STAMP.size:
            stamp, _ = STAMP.unpack_from(data, DELIVER_OVERHEAD)
            self.latencies.append((time.monotonic() - stamp) * 1000)

    @staticmethod
    def _send(peer: _Peer, now: float) -> None:
        for data, address in peer.core.datagrams_to_send(now):
            # An error is a datagram lost; the protocol's timers recover.
            with contextlib.suppress(OSError):
                peer.sock.sendto(data, address)

    def _flush(self, index: int, now: float) -> None:
        peer = self.peers[index]
        core = peer.core
        self._send(peer, now)
        for connection in core.take_changed():
            while connection.next_event() is not None:
                pass
            while (message := connection.receive_message()) is not None:
                try:
                    control = parse_control_untrusted(message)
                except BadPacket:
                    continue
                if isinstance(control, Registered):
                    peer.tag = control.tag
            if connection.has_window_update():
                core.mark_dirty(connection)
                self._send(peer, now)
            if connection.is_closed and connection is peer.connection:
                self.closed += 1
        timer = core.get_timer()
        if timer is not None and timer != peer.armed:
            peer.armed = timer
            heapq.heappush(self.timers, (timer, index))

    def _receive(self, index: int) -> None:
        peer = self.peers[index]
        sock, core = peer.sock, peer.core
        now = time.monotonic()
        while True:
            try:
                data, address = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            core.receive_datagram(data, address, now)
        self._flush(index, now)

    def _run_timers(self, now: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            deadline, index = heapq.heappop(timers)
            peer = self.peers[index]
            if peer.armed != deadline:
                continue  # superseded
            peer.armed = None
            peer.core.handle_timer(now)
            self._flush(index, now)

    def _poll(self, until: float) -> None:
        """Serve sockets and timers until ``until`` (or the next timer, if sooner)."""
        now = time.monotonic()
        deadline = min(until, self.timers[0][0]) if self.timers else until
        for key, _ in self.selector.select(max(deadline - now, 0)):
            if key.data is None:
                continue
            self._receive(key.data)
        self._run_timers(time.monotonic())

    # ------------------------------------------------------------------ phases

    def register(self) -> None:
        """Connect and register every peer (at most HANDSHAKES_IN_FLIGHT at once)."""
        give_up = time.monotonic() + REGISTRATION_TIMEOUT
        while True:
            registered = sum(1 for p in self.peers if p.tag is not None)
            if registered == self.count:
                return
            if self.closed:
                raise SystemExit(f"{self.closed} simulated peers lost their relay connection registering")
            if time.monotonic() > give_up:
                raise SystemExit(f"only {registered} of {self.count} simulated peers registered in time")
            while len(self.peers) < self.count and len(self.peers) - registered < HANDSHAKES_IN_FLIGHT:
                now = time.monotonic()
                index = len(self.peers)
                peer = _Peer(self.relay, self.relay_id, self.config, now)
                peer.core.set_raw_handler(self._on_raw)
                self.peers.append(peer)
                self.selector.register(peer.sock, selectors.EVENT_READ, index)
                self._flush(index, now)
            self._poll(time.monotonic() + 0.05)

    def wait_for_go(self) -> None:
        """Keep the connections alive until the benchmark writes a line on stdin."""
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        try:
            while True:
                ready = self.selector.select(0)
                if any(key.data is None for key, _ in ready):
                    os.read(sys.stdin.fileno(), 64)
                    return
                self._poll(time.monotonic() + 0.05)
        finally:
            self.selector.unregister(sys.stdin.fileno())

    def send_window(self) -> dict[str, Any]:
        """Every peer sends ``rate`` frames a second to its neighbour through the relay."""
        rng = random.Random(self.seed)
        interval = 1.0 / self.rate
        start = time.monotonic()
        end = start + self.duration
        schedule = [(start + rng.random() * interval, i) for i in range(self.count)]
        heapq.heapify(schedule)
        partners = [self.peers[i ^ 1].node_id for i in range(self.count)]
        padding = bytes(max(self.size - STAMP.size, 0))
        relay = self.relay
        sent = 0
        cpu_before = time.process_time()
        self.measuring = True
        while schedule and schedule[0][0] < end:
            now = time.monotonic()
            while schedule and schedule[0][0] <= now:
                when, i = heapq.heappop(schedule)
                if when >= end:
                    schedule.clear()
                    break
                peer = self.peers[i]
                assert peer.tag is not None
                frame = encode_send(peer.tag, partners[i], STAMP.pack(time.monotonic(), sent) + padding)
                if peer.core.send_raw(frame, relay):
                    self._flush(i, now)
                    sent += 1
                heapq.heappush(schedule, (when + interval, i))
            self._poll(schedule[0][0] if schedule else now)
        drain_end = time.monotonic() + DRAIN
        while time.monotonic() < drain_end:
            self._poll(drain_end)
        self.measuring = False
        return {
            "sent": sent,
            "latencies_ms": [round(x, 4) for x in self.latencies],
            "cpu_s": time.process_time() - cpu_before,
            "closed": self.closed,
        }

    def close(self) -> None:
        for peer in self.peers:
            self.selector.unregister(peer.sock)
            peer.sock.close()
        self.selector.close()


def run_peer_process(relay: Address, relay_id: bytes, count: int, *, rate: float, size: int,
                     duration: float, seed: int) -> None:  # fmt: skip
    """The body of one client process (see the module's docstring)."""
    process = PeerProcess(relay, relay_id, count, rate=rate, size=size, duration=duration, seed=seed)
    try:
        process.register()
        print("ready", flush=True)
        process.wait_for_go()
        print(json.dumps(process.send_window()), flush=True)
    finally:
        process.close()
