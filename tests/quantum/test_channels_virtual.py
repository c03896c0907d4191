"""Channels on the virtual network and clock: fair turns under loss, and the core's rules.

The headline test is the two-documents case: one channel streams a 2 MB message (a
document's sync step 2) while another carries 50 small messages a second (another
document's edits), at 5 % loss. The edits' p99 one-way latency must stay within one RTT
+ 10 ms of the same edit stream alone. Everything is seeded and runs on virtual time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import pytest

from aetherflow_sdk import quantum
from aetherflow_sdk.quantum import QuantumConfig, QuantumConnection
from aetherflow_sdk.quantum._channels import ChannelCore, ChannelState
from tests.quantum._vnet import LinkProfile, VirtualNetwork

A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 5000)
Pair = tuple[quantum.EndpointCore, quantum.EndpointCore, QuantumConnection, QuantumConnection]

ONE_WAY = 0.020  # 40 ms RTT
RATE = 20e6 / 8  # 20 Mbit/s
EDIT_INTERVAL = 0.020  # 50 edits/s
EDITS = 150  # 3 s of edits: the 2 MB transfer takes ~1 s of it at 20 Mbit/s
BULK = 2 * 1024 * 1024


def _pair(net: VirtualNetwork, config: QuantumConfig | None = None) -> Pair:
    client_ep = net.add_endpoint(A, config=config)
    server_ep = net.add_endpoint(B, config=config)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    return client_ep, server_ep, client, server_ep.accepted.popleft()


def _open(net: VirtualNetwork, pair: Pair, name: bytes) -> tuple[ChannelCore, ChannelCore]:
    """Open channel ``name`` client -> server; (client end, server end)."""
    client_ep, _, client, server = pair
    near = client.channels.open(name)
    client_ep.mark_dirty(client)
    net.run_until(lambda: near.state is ChannelState.OPEN and bool(server.channels.accepted), max_time=10)
    return near, server.channels.accepted.popleft()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def _run(
    net: VirtualNetwork,
    actions: list[tuple[float, int, Callable[[], None]]],
    after_step: Callable[[], None],
    done: Callable[[], bool],
    max_time: float,
) -> None:
    """Step the network, running each ``action`` at its virtual time (the application's clock)."""
    deadline = net.now + max_time
    heapq.heapify(actions)
    while not done():
        assert net.now < deadline, f"not done by t={net.now - 1000:.3f}s (seed={net.seed})"
        net.flush()
        timers = [t for e in net.endpoints.values() if (t := e.get_timer()) is not None]
        next_event = min(timers + ([net._queue[0][0]] if net._queue else []), default=None)
        if actions and (next_event is None or actions[0][0] <= next_event):
            at, _, action = heapq.heappop(actions)
            net.now = max(net.now, at)
            action()
            continue
        if not net.step():
            break
        after_step()


def _edit_latencies(seed: int, *, with_bulk: bool) -> tuple[list[float], float, dict[str, int]]:
    """One-way latencies of the edit stream; the RTT; channel statistics of the sender."""
    net = VirtualNetwork(seed, LinkProfile(delay=ONE_WAY, loss=0.05, rate_bytes_per_s=RATE))
    pair = _pair(net)
    client_ep, server_ep, client, server = pair
    edits_near, edits_far = _open(net, pair, b"doc-edits")
    bulk_near, bulk_far = _open(net, pair, b"doc-bulk")
    start = net.now + 0.1
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    bulk_done: list[float] = []

    def edit(index: int) -> Callable[[], None]:
        def send() -> None:
            sent_at[index] = net.now
            client.channels.send_message(edits_near, index.to_bytes(4, "big") + b"e" * 96, True)
            client_ep.mark_dirty(client)

        return send

    def start_bulk() -> None:
        client.channels.send_message(bulk_near, b"B" * BULK, True)
        client_ep.mark_dirty(client)

    actions: list[tuple[float, int, Callable[[], None]]] = [
        (start + i * EDIT_INTERVAL, i + 1, edit(i)) for i in range(EDITS)
    ]
    if with_bulk:
        actions.append((start, 0, start_bulk))  # the step 2 leaves first; the edits start with it

    def collect() -> None:
        while (message := server.channels.receive_message(edits_far)) is not None:
            latencies.append(net.now - sent_at[int.from_bytes(message[:4], "big")])
            server_ep.mark_dirty(server)
        if (message := server.channels.receive_message(bulk_far)) is not None:
            assert message == b"B" * BULK
            bulk_done.append(net.now - start)
            server_ep.mark_dirty(server)

    _run(
        net,
        actions,
        collect,
        lambda: len(latencies) == EDITS and (bulk_done or not with_bulk),
        max_time=60,
    )
    if with_bulk:
        # The transfer really overlapped the edits: it ended while they were still being sent.
        assert bulk_done[0] < EDITS * EDIT_INTERVAL, f"seed={seed}"
    stats = client.statistics()
    return (
        latencies,
        stats.smoothed_rtt,
        {"lost": stats.packets_lost, "dropped": stats.channel_frames_dropped},
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_2mb_message_on_one_channel_delays_small_ones_on_another_by_at_most_an_rtt(seed: int) -> None:
    alone, _, _ = _edit_latencies(seed, with_bulk=False)
    shared, rtt, stats = _edit_latencies(seed, with_bulk=True)
    assert stats["lost"] > 0, "5 % loss must have hit some packets"
    p99_alone, p99_shared = _percentile(alone, 0.99), _percentile(shared, 0.99)
    bound = p99_alone + 2 * ONE_WAY + 0.010
    assert p99_shared <= bound, (
        f"seed={seed}: edits p99 {p99_shared * 1000:.1f} ms with a 2 MB transfer on another channel, "
        f"{p99_alone * 1000:.1f} ms alone (bound {bound * 1000:.1f} ms; srtt {rtt * 1000:.1f} ms)"
    )
