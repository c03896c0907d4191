"""The node's routes (on loopback, with an in-process relay): a ticket carries the home relay,
a joiner adopts it, a dial that cannot reach the peer directly goes through the relay, a
relayed link is upgraded to a direct path by its dialer, and holder announcements carry
relay routes, validated strictly."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import attrs
import msgpack
import pytest

from aetherflow_node import Limits, open_node
from aetherflow_node._routes import holders_untrusted, parse_relay, relay_route_untrusted
from aetherflow_relay._shell import serve_relay
from aetherflow_sdk import BadPacket, LocalProtocolError, quantum
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session import Ticket

from ..node._helpers import loopback, wait_until

FAST = Limits(direct_timeout=0.3, upgrade_interval=0.3, backoff_base=0.05, backoff_cap=0.5)


def _dead_port() -> int:
    """A loopback UDP port nothing listens on (bound and released: nobody answers there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_ticket_carries_the_relay_and_a_joiner_adopts_it_and_dials_through_it(tmp_path: Path) -> None:
    await _adopt_and_dial_through_the_relay(tmp_path)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_same_on_asyncio(tmp_path: Path) -> None:
    await _adopt_and_dial_through_the_relay(tmp_path)


async def _adopt_and_dial_through_the_relay(tmp_path: Path) -> None:
    async with serve_relay(("127.0.0.1", 0)) as relay:
        where = f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"
        async with (
            open_node(data_dir=tmp_path / "a", name="alice", relay=where, limits=FAST, **loopback()) as alice,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "b", name="bob", limits=FAST, **loopback()) as bob,  # type: ignore[arg-type]
        ):
            assert alice.home_relay is not None
            with anyio.fail_after(10):
                await alice.home_relay.wait_registered()
            doc_a = await alice.open_document("notes")
            doc_a.insert(0, "hello")
            ticket = Ticket.parse(alice.share(doc_a, user="bob", perm="rw"))
            assert ticket.relays == (where,) and ticket.direct == (alice.address,)
            # Alice's direct address is out of reach (a port nobody listens on): bob must use the relay.
            unreachable = attrs.evolve(ticket, direct=(("127.0.0.1", _dead_port()),))
            assert bob.home_relay is None
            doc_b = await bob.open_document(unreachable.encode())
            assert bob.home_relay is not None, "bob adopted the ticket's relay"
            await wait_until(lambda: doc_b.text == "hello", 15, "bob got alice's text via the relay", bob)
            await wait_until(lambda: [p.path for p in bob.peers] == ["lan"], 10, "bob's link is direct", bob)
            stats = bob.statistics()
            assert stats.punch_attempts >= 1 and stats.punch_successes >= 1
            # Each side learnt the other's home relay from its hello (the same one, here).
            (link,) = alice.mesh.links.values()
            assert link.peer_relay == where
            doc_b.insert(5, " world")
            await wait_until(lambda: doc_a.text == "hello world", 10, "alice got bob's edit", alice)


async def test_the_dialer_upgrades_a_relayed_link_to_a_direct_path(tmp_path: Path) -> None:
    async with serve_relay(("127.0.0.1", 0)) as relay:
        where = f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"
        async with (
            open_node(data_dir=tmp_path / "a", relay=where, limits=FAST, **loopback()) as alice,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "b", relay=where, limits=FAST, **loopback()) as bob,  # type: ignore[arg-type]
        ):
            assert alice.home_relay is not None and bob.home_relay is not None
            with anyio.fail_after(10):
                await alice.home_relay.wait_registered()
                await bob.home_relay.wait_registered()
            doc_a = await alice.open_document("notes")
            doc_b = await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
            doc_a.insert(0, "hello")
            await wait_until(lambda: doc_b.text == "hello", 10, "bob got alice's text", bob)
            # Put bob's link (he dialled it) on the relay, as a NAT that lost its mapping would.
            (link,) = bob.mesh.links.values()
            assert link.dialer
            alice.mesh.endpoint.add_path(alice.home_relay.relayed_path(bob.identity.node_id))
            await link.conn.migrate_to_path(bob.home_relay.relayed_path(alice.identity.node_id))
            upgrades = bob.statistics().path_upgrades
            # Within an upgrade interval bob punches and migrates back: the same connection.
            await wait_until(
                lambda: bob.statistics().path_upgrades > upgrades and bob.peers[0].path == "lan",
                15,
                "bob's link went direct again",
                bob,
            )
            assert bob.mesh.links[alice.identity.node_id] is link
            assert alice.statistics().path_upgrades == 0  # only the dialer upgrades
            doc_a.insert(5, " again")
            await wait_until(lambda: doc_b.text == "hello again", 10, "the session survived", bob)


async def test_a_relayed_holder_is_announced_by_its_relay_route_not_the_relays_address(
    tmp_path: Path,
) -> None:
    async with serve_relay(("127.0.0.1", 0)) as relay:
        where = f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"
        async with (
            open_node(data_dir=tmp_path / "a", relay=where, **loopback()) as alice,  # type: ignore[arg-type]
            open_node(data_dir=tmp_path / "b", relay=where, **loopback()) as bob,  # type: ignore[arg-type]
        ):
            assert alice.home_relay is not None and bob.home_relay is not None
            with anyio.fail_after(10):
                await alice.home_relay.wait_registered()
                await bob.home_relay.wait_registered()
            doc_a = await alice.open_document("notes")
            await bob.open_document(alice.share(doc_a, user="bob", perm="rw"))
            await wait_until(lambda: len(alice.peers) == 1, 10, "linked", alice)
            (bob_link,) = alice.mesh.links.values()
            await wait_until(lambda: bob_link.peer_relay is not None, 10, "bob's hello", alice)
            channel = doc_a.record.channel_name
            direct = alice.mesh.dialer.holders_message(channel, [bob_link])
            assert direct["h"] == [[bob.identity.node_id, *bob.address]]
            assert direct["r"] == [[bob.identity.node_id, where]]  # bob's hello named his relay
            # Relayed (bob's side moves it; alice's follows): no address is announced for bob
            # (a relayed link's peer_address is the relay's), only his relay route.
            (link,) = bob.mesh.links.values()
            await link.conn.migrate_to_path(bob.home_relay.relayed_path(alice.identity.node_id))
            await wait_until(lambda: alice.peers[0].path == "relayed", 10, "alice follows", alice)
            assert alice.peers[0].address == relay.address
            relayed = alice.mesh.dialer.holders_message(channel, [bob_link])
            assert relayed["h"] == [] and relayed["r"] == [[bob.identity.node_id, where]]


def test_holder_announcements_and_relay_routes_are_validated_strictly() -> None:
    node = bytes(range(32))
    route = f"{format_node_id(node)}@100.64.0.1:3340"
    # The old form (no relay routes) and the extended one are both read.
    assert holders_untrusted({"h": [[node, "10.0.0.1", 4433]]}, 64) == ([(node, ("10.0.0.1", 4433))], {})
    assert holders_untrusted({"h": [], "r": [[node, route]]}, 64) == ([], {node: route})
    assert relay_route_untrusted("127.0.0.1:1") == "127.0.0.1:1"
    bad = [
        {"h": "x"},
        {"h": [[node, "h", 0]]},
        {"h": [], "r": "x"},
        {"h": [], "r": [[node]]},
        {"h": [], "r": [[node[:31], route]]},
        {"h": [], "r": [[node, "relay.example:3340"]]},  # names are not resolved: numeric only
        {"h": [], "r": [[node, "nonsense@127.0.0.1:1"]]},
        {"h": [], "r": [[node, "127.0.0.1:99999"]]},
        {"h": [], "r": [[node, 7]]},
        {"h": [], "r": [[node, "1.2.3.4:5" * 40]]},
        {"h": [], "r": [[node, route]] * 65},
    ]
    for message in bad:
        with pytest.raises(BadPacket):
            holders_untrusted(message, 64)
    with pytest.raises(LocalProtocolError, match="numeric IP"):
        parse_relay("relay.example:3340")


async def test_a_loopback_node_told_of_an_address_it_cannot_send_to_carries_on(tmp_path: Path) -> None:
    # A socket bound to 127.0.0.1 cannot send to a public address (EINVAL: nothing leaves the
    # host); a holder announced there is a lost datagram, not the end of the node's endpoint.
    async with open_node(data_dir=tmp_path / "a", limits=FAST, **loopback()) as alice:  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            with anyio.fail_after(1.0):
                await alice.mesh.endpoint.connect(("192.0.2.1", 9))  # TEST-NET-1
        doc = await alice.open_document("notes")
        doc.insert(0, "still here")
        await doc.flush()  # the node's tasks still run
        assert doc.text == "still here"


async def test_relay_routes_from_a_peer_are_checked_and_a_relay_only_holder_is_dialled(
    tmp_path: Path,
) -> None:
    async with serve_relay(("127.0.0.1", 0)) as relay:
        where = f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"
        async with open_node(data_dir=tmp_path / "a", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            assert alice.home_relay is not None
            with anyio.fail_after(10):
                await alice.home_relay.wait_registered()
            doc = await alice.open_document("notes")
            channel = doc.record.channel_name
            async with quantum.open_endpoint(("127.0.0.1", 0), identity=Identity.generate()) as mallory:
                conn = await mallory.connect(alice.address, peer_id=alice.identity.node_id)
                offences = alice.mesh.counters["offences"]
                # A holder with no direct address at alice's own relay, and one at another relay.
                holder, elsewhere = bytes(range(32)), bytes(range(1, 33))
                other = f"{format_node_id(bytes(32))}@127.0.0.1:9"
                for message in (
                    {"k": "hello", "n": "m", "r": "relay.example:3340"},  # not a numeric address
                    {"k": "holders", "c": channel, "h": [], "r": [[bytes(32), "1.2.3.4"]]},  # no port
                    {"k": "holders", "c": channel, "h": [], "r": [[holder, where], [elsewhere, other]]},
                ):
                    await conn.send(msgpack.packb(message, use_bin_type=True))
                with anyio.fail_after(10):
                    while holder not in alice.mesh._routes:  # the messages are taken in order
                        await anyio.sleep(0.02)
                assert alice.mesh.counters["offences"] == offences + 2
                route = alice.mesh._routes[holder]
                assert route.addresses == [] and route.relay == where  # dialled through the relay
                assert elsewhere not in alice.mesh._routes  # at another relay: out of reach
                conn.abort()
