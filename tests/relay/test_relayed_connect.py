"""A connection that begins on the relay, over real loopback UDP: two SDK endpoints, a real relay.

A dials B with ``HomeRelay.connect_relayed`` (the handshake runs through the relay, as between
two nodes behind symmetric NATs); B's relay client lets it in through ``accept_paths`` and it
comes out of ``eb.accept()``. Each node talks to the relay through a UDP tap of its own, which
records every datagram on the node-relay legs (what an on-path observer, or the relay, sees):
none holds the plaintext. Then ``upgrade`` moves the connection to a direct path.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from aetherflow_node._relay_client import MAX_NEW_RELAYED_PATHS, RelayPath, open_home_relay, open_relay_client
from aetherflow_node._relay_wire import encode_send
from aetherflow_relay._shell import serve_relay
from aetherflow_sdk import quantum
from aetherflow_sdk._errors import ConnectionTimeout
from aetherflow_sdk._identity import Identity

LOOP = ("127.0.0.1", 0)
Address = tuple[str, int]


class Tap:
    """A UDP forwarder in front of the relay for one node; keeps a copy of every datagram."""

    def __init__(self, socket: anyio.abc.UDPSocket, relay: Address) -> None:
        self.socket, self.relay = socket, relay
        self.node: Address | None = None
        self.seen: list[bytes] = []

    @property
    def address(self) -> Address:
        host, port = self.socket.extra(anyio.abc.SocketAttribute.local_address)[:2]
        return (str(host), int(port))

    async def run(self) -> None:
        async for data, (host, port) in self.socket:
            self.seen.append(data)
            if (host, port) == self.relay:
                if self.node is not None:
                    await self.socket.sendto(data, *self.node)
            else:
                self.node = (host, port)
                await self.socket.sendto(data, *self.relay)


async def _tap(tg: anyio.abc.TaskGroup, relay: Address) -> Tap:
    tap = Tap(await anyio.create_udp_socket(local_host="127.0.0.1"), relay)
    tg.start_soon(tap.run)
    return tap


async def _accept(endpoint: quantum.Endpoint, box: list[quantum.Connection]) -> None:
    box.append(await endpoint.accept())


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_connection_made_through_the_relay_carries_only_ciphertext_then_goes_direct(backend: str) -> None:
    anyio.run(_made_through_the_relay, backend=backend)


async def _made_through_the_relay() -> None:
    with anyio.fail_after(60):
        async with (
            serve_relay(LOOP) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            anyio.create_task_group() as taps,
        ):
            tap_a, tap_b = await _tap(taps, relay.address), await _tap(taps, relay.address)
            async with (
                open_home_relay(
                    ea,
                    ("localhost", tap_a.address[1]),
                    relay_id=relay.node_id,
                    candidates=(ea.local_address,),
                ) as ha,
                open_home_relay(
                    eb, tap_b.address, relay_id=relay.node_id, candidates=(eb.local_address,)
                ) as hb,
            ):
                await ha.wait_registered()
                await hb.wait_registered()
                box: list[quantum.Connection] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_accept, eb, box)
                    conn_a = await ha.connect_relayed(eb.node_id)
                conn_b = box[0]
                # Both ends are on the relay, pinned to each other; B's mesh needed no add_path.
                assert isinstance(conn_a.path, RelayPath) and isinstance(conn_b.path, RelayPath)
                assert conn_a.peer_id == eb.node_id and conn_b.peer_id == ea.node_id
                assert conn_b.path.peer_id == ea.node_id
                assert conn_a.path.address == tap_a.address  # A named its relay "localhost": resolved
                start = relay.statistics().forwarded_packets
                for i in range(20):
                    await conn_a.send(b"secret up %03d " % i * 20)
                    assert await conn_b.receive() == b"secret up %03d " % i * 20
                    await conn_b.send(b"secret down %03d " % i * 20)
                    assert await conn_a.receive() == b"secret down %03d " % i * 20
                stats = relay.statistics()
                assert stats.forwarded_packets - start >= 40 and stats.forwarded_bytes > 40 * 300
                frames = tap_a.seen + tap_b.seen
                relayed = [d for d in frames if d[:1] in (b"\x52", b"\x53")]  # SEND, DELIVER
                assert len(relayed) >= 80
                assert not any(b"secret" in d for d in frames)  # the relay sees only ciphertext
                client_b = hb.client
                # For the INITIAL (answered with a RETRY, the path not kept) and the one with the
                # cookie (more if a slow machine resent the first before the RETRY came back).
                assert client_b is not None and client_b.relayed_paths_opened >= 2

                # Punch, and move to the direct path on loopback: the messages go on.
                assert await ha.upgrade(conn_a) is True
                assert not isinstance(conn_a.path, RelayPath)
                for i in range(10):
                    await conn_a.send(b"direct %d" % i)
                    assert await conn_b.receive() == b"direct %d" % i
                    await conn_b.send(b"direct back %d" % i)
                    assert await conn_a.receive() == b"direct back %d" % i
                assert not isinstance(conn_b.path, RelayPath)
                before = relay.statistics().forwarded_packets
                await conn_a.send(b"after")
                assert await conn_b.receive() == b"after"
                assert relay.statistics().forwarded_packets - before <= 4
                assert not any(b"secret" in d or b"direct" in d for d in tap_a.seen + tap_b.seen)
            taps.cancel_scope.cancel()


async def test_connect_relayed_to_an_unregistered_node_fails_clearly_and_stray_delivers_are_dropped() -> None:
    with anyio.fail_after(30):
        async with (
            serve_relay(LOOP) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            open_relay_client(ea, relay.address, relay_id=relay.node_id) as ca,
            open_relay_client(eb, relay.address, relay_id=relay.node_id) as cb,
        ):
            nobody = Identity.generate().node_id
            with pytest.raises(ConnectionTimeout, match="did not answer through the relay"):
                await ca.connect_relayed(nobody, timeout=1.0)
            assert relay.statistics().drops["unknown_destination"] >= 1
            # A DELIVER from A that is not an INITIAL, to a B that has no connection with A: dropped.
            assert ca.registration is not None
            stray = bytes((1, 5)) + bytes(60)  # a DATA header (version 1, type 5) and junk
            before = eb.statistics()
            for _ in range(3):
                assert ea.send_raw(encode_send(ca.registration.tag, eb.node_id, stray), ca.relay_address)
            # Then a real relayed connection (its INITIAL goes the same way, after the strays).
            box: list[quantum.Connection] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(_accept, eb, box)
                conn_a = await ca.connect_relayed(eb.node_id)
            assert box[0].peer_id == ea.node_id and conn_a.peer_id == eb.node_id
            assert cb.relayed_dropped["not_initial"] == 3 and cb.relayed_paths_opened >= 2
            after = eb.statistics()
            assert after.framed_datagrams_dropped == before.framed_datagrams_dropped
            # A flood of INITIALs through the relay: at most MAX_NEW_RELAYED_PATHS paths a second.
            opened, limited = cb.relayed_paths_opened, cb.relayed_dropped["rate"]
            initial = bytes((0x53,)) + bytes(range(32)) + bytes((1, 1)) + bytes(1198)
            offered = [cb._path_for(initial) for _ in range(200)]
            made = sum(path is not None for path in offered)
            # The bucket holds MAX_NEW_RELAYED_PATHS, less what the real connection took (+ a refill).
            assert MAX_NEW_RELAYED_PATHS - opened <= made <= MAX_NEW_RELAYED_PATHS + 5
            assert cb.relayed_paths_opened - opened == made
            assert cb.relayed_dropped["rate"] - limited == 200 - made
            path = next(p for p in offered if p is not None)
            assert path.peer_id == bytes(range(32)) and path.address == relay.address


async def test_a_peer_that_moves_its_direct_connection_onto_the_relay_is_followed_without_add_path() -> None:
    with anyio.fail_after(30):
        async with (
            serve_relay(LOOP) as relay,
            quantum.open_endpoint(LOOP) as ea,
            quantum.open_endpoint(LOOP) as eb,
            open_home_relay(ea, relay.address, relay_id=relay.node_id) as ha,
            open_home_relay(eb, relay.address, relay_id=relay.node_id) as hb,
        ):
            await ha.wait_registered()
            client_b = await hb.wait_registered()
            box: list[quantum.Connection] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(_accept, eb, box)
                conn_a = await ea.connect(eb.local_address, peer_id=eb.node_id)
            conn_b = box[0]
            # Only A acts: B's relay client offers a path back to A for A's first relayed packet.
            await conn_a.migrate_to_path(ha.relayed_path(eb.node_id))
            for i in range(5):
                await conn_a.send(b"relayed %d" % i)
                assert await conn_b.receive() == b"relayed %d" % i
                await conn_b.send(b"back %d" % i)
                assert await conn_a.receive() == b"back %d" % i
            assert isinstance(conn_b.path, RelayPath) and conn_b.path.peer_id == ea.node_id
            assert client_b.relayed_paths_opened >= 1 and client_b.relayed_dropped["not_initial"] == 0
            assert relay.statistics().forwarded_packets >= 10
            await conn_a.aclose()  # while the relay still carries the CLOSE
