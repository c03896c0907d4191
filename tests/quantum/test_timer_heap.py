"""The endpoint core's timer heap, on the virtual clock: a loop turn touches only the
connections whose timer is due, and no timer fires late or is lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._connection import QuantumConnection
from aetherflow_sdk.quantum._endpoint_core import EndpointCore
from tests.quantum._vnet import LinkProfile, VirtualNetwork

CLIENT = ("10.0.0.1", 4000)
SERVER = ("10.0.0.2", 5000)


def _many(
    count: int, *, seed: int = 7, config: QuantumConfig | None = None, profile: LinkProfile | None = None
) -> tuple[VirtualNetwork, EndpointCore, EndpointCore, list[QuantumConnection]]:
    """``count`` established connections from one client endpoint to one server endpoint."""
    net = VirtualNetwork(seed, profile)
    client_ep = net.add_endpoint(CLIENT, config=config)
    server_ep = net.add_endpoint(SERVER, config=config)
    conns = []
    for _ in range(count):
        conns.append(client_ep.connect(SERVER, net.now))
        net.run_until(lambda: conns[-1].is_established and bool(server_ep.accepted), max_time=5)
        server_ep.accepted.clear()
        net.now += 0.137  # spread the connections' timers apart
    net.run_until(lambda: len(server_ep.connections) == count and all(c.is_established for c in conns))
    return net, client_ep, server_ep, conns


def _count_get_timer(connections: list[QuantumConnection]) -> tuple[Callable[[], int], list[bool]]:
    """Count calls to each connection's get_timer (the per-connection work of a timer turn).

    Counting is on while the returned flag list holds True.
    """
    calls = [0]
    counting = [True]
    for conn in connections:
        original = conn.get_timer

        def counted(original: Callable[[], float | None] = original) -> float | None:
            calls[0] += counting[0]
            return original()

        conn.get_timer = counted  # type: ignore[method-assign]
    return (lambda: calls[0]), counting


def _true_earliest(endpoint: EndpointCore) -> float | None:
    timers = [t for c in endpoint.connections.values() if (t := c.get_timer()) is not None]
    return min(timers) if timers else None


@pytest.mark.parametrize("count", [10, 200])
def test_a_timer_turn_touches_only_the_due_connections(count: int) -> None:
    net, client_ep, _, conns = _many(count)
    calls, counting = _count_get_timer(conns)
    worst = 0.0
    for _ in range(50):  # fifty timer turns (keepalives, ACK delays ...) of an idle endpoint
        net.flush()
        timer = client_ep.get_timer()
        assert timer is not None
        net.now = max(net.now, timer)
        counting[0] = False
        due = sum(1 for c in conns if (t := c.get_timer()) is not None and t <= net.now)
        promises = sum(1 for deadline, _ in client_ep._timer_heap if deadline <= net.now)
        touched = max(due, promises) + len(client_ep._dirty)  # a promise may be early: looked at
        counting[0] = True
        before = calls()
        client_ep.handle_timer(net.now)
        client_ep.datagrams_to_send(net.now)  # reschedules what it touched
        # Work in proportion to the connections that were due (or had output), not to all.
        spent = calls() - before
        assert spent <= 3 * touched + 1, f"{spent} get_timer calls for {touched} busy connections"
        worst = max(worst, spent)
        while net._queue and net._queue[0][0] <= net.now:
            net.step()
    assert worst < 3 * 10  # a scan of every connection would cost 2 x count per turn


def test_the_heap_never_promises_a_timer_later_than_the_earliest_one() -> None:
    """Under loss, with messages moving timers earlier and later, for every step of a run."""
    net, client_ep, server_ep, conns = _many(30, profile=LinkProfile(loss=0.05, jitter=0.004))
    servers = list(server_ep.connections.values())
    for step in range(4000):
        if step % 50 == 0:  # application sends now and then, on a few connections
            conn = conns[step % len(conns)]
            conn.send_message(b"m%d" % step)
            client_ep.mark_dirty(conn)
        net.flush()
        for endpoint in (client_ep, server_ep):
            truth = _true_earliest(endpoint)
            promised = endpoint.get_timer()
            assert truth is None or (promised is not None and promised <= truth), (
                f"step {step}: heap says {promised}, a connection wants {truth} (seed={net.seed})"
            )
        for server in servers:
            while server.receive_message() is not None:
                server_ep.mark_dirty(server)
        assert net.step()
    # Superseded entries are cleaned up: the heap stays proportional to the connections.
    for endpoint in (client_ep, server_ep):
        assert len(endpoint._timer_heap) <= 2 * len(endpoint.connections) + 64


def test_one_silent_peer_times_out_on_time_and_the_others_stay_open() -> None:
    config = QuantumConfig(idle_timeout=5.0, keepalive_interval=1.0)
    net, client_ep, _, conns = _many(50, config=config)
    victim = conns[17]
    silenced: list[float] = []

    def drop(data: bytes, source: tuple[str, int], destination: tuple[str, int]) -> bool:
        return bool(silenced) and data[4:20] == victim.local_cid  # every packet to the victim

    net.profile.drop_if = drop
    silenced.append(net.now)
    net.run_until(lambda: victim.is_closed, max_time=30)
    # Exactly at its idle timeout (the heap does not make it late), measured from what it last heard.
    assert net.now == pytest.approx(victim._last_received + config.idle_timeout, abs=1e-9)
    assert all(c.is_established for c in conns if c is not victim)
    net.run_until(lambda: net.now > silenced[0] + 3 * config.idle_timeout, max_time=60)
    assert all(c.is_established for c in conns if c is not victim)
    assert victim.local_cid not in client_ep.connections
    assert victim.local_cid not in client_ep._timer_at


def test_closed_connections_leave_no_timer_behind() -> None:
    net, client_ep, server_ep, conns = _many(20)
    for conn in conns:
        conn.close(net.now)
        client_ep.mark_dirty(conn)
    net.run_until(lambda: not client_ep.connections and not server_ep.connections, max_time=60)
    for endpoint in (client_ep, server_ep):
        assert endpoint.get_timer() is None
        assert endpoint._timer_at == {} and endpoint._timer_heap == []
