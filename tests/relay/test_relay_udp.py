"""A real relay on loopback UDP with two real SDK endpoints: register, punch, relay, come back direct."""

from __future__ import annotations

import anyio
import pytest

from aetherflow_node._relay_client import RelayRefused, open_relay_client
from aetherflow_relay import RelayConfig
from aetherflow_relay._shell import serve_relay
from aetherflow_sdk import quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import TokenVerifier, issue_token

LOOP = ("127.0.0.1", 0)


async def _accept_one(endpoint: quantum.Endpoint, box: list[quantum.Connection], ready: anyio.Event) -> None:
    box.append(await endpoint.accept())
    ready.set()


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_register_punch_relay_and_back_to_direct(backend: str) -> None:
    anyio.run(_register_punch_relay_and_back, backend=backend)


async def _register_punch_relay_and_back() -> None:
    with anyio.fail_after(30):
        async with (
            serve_relay(LOOP) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            open_relay_client(ea, relay.address, relay_id=relay.node_id) as ca,
            open_relay_client(eb, relay.address, relay_id=relay.node_id) as cb,
        ):
            assert ca.observed == ea.local_address and cb.observed == eb.local_address
            assert relay.statistics().clients == 2
            outcome = await ca.punch(eb.node_id)
            assert outcome.address == eb.local_address
            box: list[quantum.Connection] = []
            ready = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_accept_one, eb, box, ready)
                conn_a = await ea.connect(outcome.address, peer_id=eb.node_id)
                await ready.wait()
            conn_b = box[0]
            await conn_a.send(b"direct")
            assert await conn_b.receive() == b"direct"
            assert relay.statistics().forwarded_packets == 0
            # Move onto the relay: B listens on its path to A, A migrates; the session is kept.
            eb.add_path(cb.relayed_path(ea.node_id))
            await conn_a.migrate_to_path(ca.relayed_path(eb.node_id))
            for i in range(20):
                await conn_a.send(b"relayed %d" % i)
                assert await conn_b.receive() == b"relayed %d" % i
                await conn_b.send(b"back %d" % i)
                assert await conn_a.receive() == b"back %d" % i
            relayed = relay.statistics().forwarded_packets
            assert relayed >= 40
            # And back to the direct path: the relay's counters stop growing.
            await conn_a.migrate(eb.local_address)
            for i in range(20):
                await conn_a.send(b"direct %d" % i)
                assert await conn_b.receive() == b"direct %d" % i
                await conn_b.send(b"again %d" % i)
                assert await conn_a.receive() == b"again %d" % i
            after = relay.statistics().forwarded_packets
            assert after - relayed <= 4, (relayed, after)  # at most a few in flight at the switch
            stats = relay.statistics()
            assert stats.punch_requests == 1 and stats.punch_successes == 1


async def test_a_token_relay_refuses_a_node_without_one() -> None:
    issuer = Identity.generate()
    verifier = TokenVerifier([issuer.node_id])
    config = RelayConfig(require_token=True)
    with anyio.fail_after(20):
        async with (
            serve_relay(LOOP, config=config, verifier=verifier) as relay,
            quantum.open_endpoint(LOOP) as ea,
        ):
            with pytest.raises(RelayRefused, match="requires a token"):
                async with open_relay_client(ea, relay.address, relay_id=relay.node_id):
                    pass
            token = issue_token(issuer, user="a", document="relay", permission="rw", expires_in=600,
                                now=__import__("time").time(), holder=ea.node_id)  # fmt: skip
            async with open_relay_client(ea, relay.address, relay_id=relay.node_id, token=token) as ca:
                assert ca.registration is not None
            assert relay.statistics().refused["AUTH"] == 1


async def test_abuse_on_real_sockets_is_dropped_counted_and_isolated() -> None:
    import socket

    from aetherflow_node._relay_wire import encode_send

    config = RelayConfig(rate=20_000, burst=4_000, queue_packets=8)
    with anyio.fail_after(30):
        async with (
            serve_relay(LOOP, config=config) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            quantum.open_endpoint(LOOP) as ec,
            open_relay_client(ea, relay.address, relay_id=relay.node_id) as ca,
            open_relay_client(eb, relay.address, relay_id=relay.node_id),
            open_relay_client(ec, relay.address, relay_id=relay.node_id) as cc,
        ):
            assert ca.registration is not None and cc.registration is not None
            received: list[bytes] = []
            eb.set_raw_handler(lambda data, address: received.append(data))
            # A stranger's socket: no registration (a made-up tag), then A's real tag (spoofed source).
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.sendto(encode_send(b"\x00" * 8, eb.node_id, b"x" * 100), relay.address)
                stranger.sendto(encode_send(ca.registration.tag, eb.node_id, b"x" * 100), relay.address)
                stranger.sendto(b"\x52garbage", relay.address)
            # A floods B far over its quota; C sends a little at the same time.
            for _ in range(100):
                ea.send_raw(encode_send(ca.registration.tag, eb.node_id, b"a" * 1000), relay.address)
            for _ in range(3):
                ec.send_raw(encode_send(cc.registration.tag, eb.node_id, b"c" * 100), relay.address)
            stats = relay.statistics()
            while stats.drops["queue_full"] + stats.forwarded_packets + stats.queued < 103:
                await anyio.sleep(0.01)  # bounded by fail_after
                stats = relay.statistics()
            while sum(d.startswith(b"\x53" + ec.node_id) for d in received) < 3:
                await anyio.sleep(0.01)
            stats = relay.statistics()
            assert stats.drops["unregistered"] == 1 and stats.drops["spoofed"] == 1
            assert stats.drops["malformed"] == 1
            assert stats.drops["queue_full"] >= 80  # 4 on the burst, 8 queued, the rest dropped
            from_a = sum(d.startswith(b"\x53" + ea.node_id) for d in received)
            assert from_a <= 4 + 8
            assert not any(b"x" * 100 in d for d in received)  # nothing of the stranger's got through


async def test_a_relayed_connection_upgrades_to_direct_and_keeps_its_messages() -> None:
    from aetherflow_node._relay_client import RelayPath, open_home_relay

    with anyio.fail_after(30):
        async with (
            serve_relay(LOOP) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            open_home_relay(ea, relay.address, relay_id=relay.node_id) as ha,
            open_home_relay(eb, relay.address, relay_id=relay.node_id) as hb,
        ):
            await ha.wait_registered()
            await hb.wait_registered()
            box: list[quantum.Connection] = []
            ready = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_accept_one, eb, box, ready)
                conn_a = await ea.connect(eb.local_address, peer_id=eb.node_id)
                await ready.wait()
            conn_b = box[0]
            eb.add_path(hb.relayed_path(ea.node_id))
            await conn_a.migrate_to_path(ha.relayed_path(eb.node_id))
            await conn_a.send(b"relayed")
            assert await conn_b.receive() == b"relayed"
            assert isinstance(conn_a.path, RelayPath)
            assert await ha.upgrade(conn_a) is True
            assert not isinstance(conn_a.path, RelayPath)
            before = relay.statistics().forwarded_packets
            for i in range(10):
                await conn_a.send(b"%d" % i)
                assert await conn_b.receive() == b"%d" % i
            assert relay.statistics().forwarded_packets - before <= 4
            assert relay.statistics().punch_successes == 1
