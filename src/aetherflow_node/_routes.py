"""How the mesh reaches a peer it knows by node ID: its routes, the dial, the upgrade.

A peer's **route** is what this node knows of where it is: its node ID, its direct addresses
(from a ticket, a holder announcement, mDNS or the catalog) and the relay it is registered
with (a ticket's ``relays``, or a holder announcement's relay route). Rules (each tested):

1. **Direct first.** The direct addresses are tried in turn. When this node has a home relay
   and the peer's ID is known, they share ``Limits.direct_timeout`` (0.5 s; each gets at least a
   quarter of it): a reachable address answers a handshake within one round trip, so waiting
   the whole handshake timeout for addresses behind someone's NAT only delays the relay (and a
   reachable address missed in a hurry is found again by the upgrade's punch). We do not race
   the relay against the direct attempts (happy eyeballs): two connections that both complete
   would reach the peer as two links from one dialer, and the peer keeps the newer one (the
   mesh's rule 1) while we might keep the other. A direct attempt given up is left to finish or fail on its
   own; if it completes late it is closed at once.
2. **Then the home relay.** A relayed connection to the peer's node ID through this node's
   home relay (:meth:`HomeRelay.connect_relayed`: the handshake and every packet go through
   the relay, end to end encrypted, pinned to the peer's ID). The relay can only reach nodes
   registered with it: a peer whose home relay is another one is reachable only directly
   (there is one home relay per node).
3. **Upgrade.** The dialer of a relayed link tries at once to move it to a direct path (punch,
   then migrate: the same connection, sessions and channels kept), and again every
   ``Limits.upgrade_interval`` (60 s, as DERP and iroh do) while it stays relayed, and at once
   whenever its candidates change (the relay reports a new public address, or the node
   registers again). The other
   side does nothing: it follows the migration. A failed punch leaves the link relayed.

The counters (punch attempts and successes, upgrades, relayed connects) live in the mesh's
``counters`` and reach ``NodeStatistics`` and the metrics.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from aetherflow_node._relay_client import HomeRelay, RelayRefused
from aetherflow_sdk import AetherFlowError, BadPacket, LocalProtocolError
from aetherflow_sdk._identity import format_node_id, parse_node_id
from aetherflow_sdk.quantum import Connection

if TYPE_CHECKING:
    from aetherflow_node._mesh import Link, Mesh

logger = logging.getLogger("aetherflow.node")

Address = tuple[str, int]

MAX_ROUTE_TEXT = 160
"""The longest relay route (``NODE_ID@HOST:PORT``) a peer may send."""


class NoRoute(AetherFlowError):
    """Neither a direct address nor the home relay reached the peer."""


@attrs.define(eq=False)
class Route:
    """What this node knows of where one peer is (see the module)."""

    node_id: bytes | None
    addresses: list[Address] = attrs.Factory(list)
    relay: str | None = None
    """The peer's relay route (``NODE_ID@HOST:PORT`` or ``HOST:PORT``), if it was told."""
    persistent: bool = False

    def add(self, address: Address | None, relay: str | None, persistent: bool) -> None:
        if address is not None and address not in self.addresses:
            self.addresses.append(address)
        if relay is not None:
            self.relay = relay
        self.persistent = self.persistent or persistent


def parse_relay(text: str) -> tuple[Address, bytes | None]:
    """``HOST:PORT`` or ``NODE_ID@HOST:PORT`` (which pins the relay's identity); numeric IP only.

    Raises LocalProtocolError with a one-line reason.
    """
    pinned, _, where = text.rpartition("@")
    try:
        relay_id = parse_node_id(pinned) if pinned else None
    except (ValueError, LocalProtocolError):
        raise LocalProtocolError(f"relay {text!r}: expected HOST:PORT or NODE_ID@HOST:PORT") from None
    host, sep, port_text = where.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LocalProtocolError(f"relay {text!r}: expected HOST:PORT or NODE_ID@HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(
            f"relay {text!r}: give the relay's numeric IP address (names are not resolved yet)"
        ) from None
    return (host, int(port_text)), relay_id


def relay_text(address: Address, relay_id: bytes | None) -> str:
    """The route form of a relay: ``NODE_ID@HOST:PORT`` when its ID is known (pinned)."""
    host, port = address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{format_node_id(relay_id)}@{where}" if relay_id is not None else where


def home_route(home: HomeRelay | None) -> str | None:
    """This node's own relay route, pinned once the relay proved its ID; None without a relay."""
    if home is None:
        return None
    relay_id = home.relay_id
    if relay_id is None and home.client is not None:
        relay_id = home.client.connection.peer_id
    return relay_text(home.relay_address, relay_id)


def same_relay(home: HomeRelay, route: str) -> bool:
    """True if ``route`` names this node's home relay (same address; same ID when both pin one)."""
    try:
        address, relay_id = parse_relay(route)
    except LocalProtocolError:
        return False
    own_id = home.relay_id or (home.client.connection.peer_id if home.client is not None else None)
    return address == home.relay_address and (relay_id is None or own_id is None or relay_id == own_id)


def is_relayed(conn: Connection) -> bool:
    """True while the connection's packets go through a relay (a framed, not a direct, path)."""
    return not conn.path.is_direct


class Dialer:
    """The dial strategy of one mesh (rules 1 and 2) and its upgrades (rule 3)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    @property
    def home(self) -> HomeRelay | None:
        return self.mesh.node.home_relay

    async def dial(self, route: Route) -> tuple[Connection, Address | None]:
        """A connection to the peer by ``route``, and the direct address it took (None: relayed)."""
        mesh = self.mesh
        home = self.home
        relay_ok = home is not None and route.node_id is not None
        if route.relay is not None and home is not None and not same_relay(home, route.relay):
            mesh.counters["foreign_relay_routes"] += 1  # the peer's relay is not ours: direct only
            relay_ok = False
        last: Exception | None = None
        addresses = list(route.addresses)
        # With a relay to fall back on, the direct addresses share Limits.direct_timeout (each
        # gets at least a quarter of it): a ticket's private and loopback addresses, out of
        # reach behind another NAT, cost one timeout together, not one each.
        timeout = self.mesh.limits.direct_timeout
        each = max(timeout / max(len(addresses), 1), timeout / 4)
        for address in addresses:
            mesh.counters["connections_dialed"] += 1
            try:
                if relay_ok:
                    return await self._direct_within(address, route.node_id, each), address
                return await mesh.endpoint.connect(address, peer_id=route.node_id), address
            except (AetherFlowError, OSError, TimeoutError) as exc:
                last = exc
                logger.debug("dial %s:%s failed: %s", address[0], address[1], exc)
        if not relay_ok:
            raise last or NoRoute("no address to dial")
        assert home is not None and route.node_id is not None
        return await self._through_relay(home, route.node_id)

    async def _direct_within(self, address: Address, peer_id: bytes | None, timeout: float) -> Connection:
        """``endpoint.connect`` given ``timeout`` seconds; a late success is closed."""
        outcome: list[Connection | BaseException] = []
        done = anyio.Event()
        state = {"given_up": False}

        async def attempt() -> None:
            try:
                conn = await self.mesh.endpoint.connect(address, peer_id=peer_id)
            except (AetherFlowError, OSError) as exc:
                outcome.append(exc)
                done.set()
                return
            if state["given_up"]:
                conn.abort("too late: the peer is reached another way")
                return
            outcome.append(conn)
            done.set()

        self.mesh._spawn(attempt)
        with anyio.move_on_after(timeout):
            await done.wait()
        if not outcome:
            state["given_up"] = True
            self.mesh.counters["direct_timeouts"] += 1
            raise TimeoutError(f"no answer from {address[0]}:{address[1]} within the direct timeout")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _through_relay(self, home: HomeRelay, peer_id: bytes) -> tuple[Connection, Address | None]:
        try:
            conn = await home.connect_relayed(peer_id)
        except RelayRefused as exc:
            raise NoRoute(f"the relay cannot reach the peer: {exc}") from None
        self.mesh.counters["relayed_connects"] += 1
        return conn, None

    async def punch(self, home: HomeRelay, peer_id: bytes) -> Address | None:
        """One coordinated hole punch through the home relay (counted); the proven address."""
        counters = self.mesh.counters
        counters["punch_attempts"] += 1
        outcome = await home.punch(peer_id)
        if outcome.address is not None:
            counters["punch_successes"] += 1
        return outcome.address

    # -- holder announcements (the mesh's rule 4, with routes) -----------------------------------

    def link_route(self, link: Link) -> str | None:
        """The relay route of ``link``'s peer: what its hello said, else ours if it is relayed here."""
        if link.peer_relay is not None:
            return link.peer_relay
        return home_route(self.home) if is_relayed(link.conn) else None

    def holders_message(self, channel_name: bytes, links: list[Link]) -> dict[str, Any]:
        """``h``: [node ID, host, port] of each holder with a direct address (as ever; a relayed
        link has none: its packets come from the relay's address); ``r``: [node ID, relay route]
        of each holder with a relay. Older nodes read ``h`` and ignore ``r``."""
        direct = [[o.peer_id, o.address[0], o.address[1]] for o in links if o.address is not None]
        relayed = [[o.peer_id, route] for o in links if (route := self.link_route(o)) is not None]
        message: dict[str, Any] = {"k": "holders", "c": channel_name, "h": direct}
        if relayed:
            message["r"] = relayed
        return message

    def take_holders(
        self, doc_id: str, announced: tuple[list[tuple[bytes, Address]], dict[bytes, str]]
    ) -> None:
        """Dial the holders a peer announced (parsed by :func:`holders_untrusted`)."""
        mesh = self.mesh
        holders, routes = announced
        for node_id, address in holders:
            if node_id != mesh.my_id and node_id not in mesh.links:
                mesh.node.catalog.add_holder(doc_id, node_id, address)
                mesh.want(address, node_id, persistent=False, relay=routes.get(node_id))
        direct = {node_id for node_id, _ in holders}
        home = self.home
        for node_id, route in routes.items():
            # A holder reached only through a relay: dial it through ours, if it is the same
            # relay (one home relay per node; a holder at another relay stays out of reach).
            if (
                node_id not in direct
                and node_id != mesh.my_id
                and node_id not in mesh.links
                and home is not None
                and same_relay(home, route)
            ):
                mesh.want(None, node_id, persistent=False, relay=route)

    # -- upgrades ---------------------------------------------------------------------------------

    async def upgrade(self, link: Link) -> bool:
        """Rule 3, once: punch and migrate a relayed link. True if it is direct now."""
        home = self.home
        conn = link.conn
        if not is_relayed(conn):
            return True
        if home is None:
            return False
        try:
            address = await self.punch(home, conn.peer_id)
            if address is None:
                return False
            await conn.migrate(address)
        except (AetherFlowError, TimeoutError) as exc:
            logger.debug("upgrade to %s failed: %s", conn.peer_id.hex()[:12], exc)
            return False
        self.mesh.counters["upgrades"] += 1
        logger.info(
            "peer link upgraded to a direct path",
            extra={"peer": format_node_id(conn.peer_id)[:12], "address": f"{address[0]}:{address[1]}"},
        )
        self.mesh.node._notify()
        return True

    async def keep_upgrading(self, link: Link) -> None:
        """Rule 3: at once, then every ``Limits.upgrade_interval`` while the link is relayed, and
        at once again when this node's candidates change (a new public address, a new registration)."""
        while not link.closed.is_set():
            home = self.home
            observed = home.observed if home is not None else None
            if is_relayed(link.conn):
                with contextlib.suppress(AetherFlowError, TimeoutError):
                    await self.upgrade(link)
            with anyio.move_on_after(self.mesh.limits.upgrade_interval):
                while home is None or home.observed == observed:
                    await (anyio.sleep_forever() if home is None else home.wait_changed())


def relay_route_untrusted(value: object) -> str:
    """A relay route a peer sent: ``[NODE_ID@]HOST:PORT`` with a numeric IP, or BadPacket."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ROUTE_TEXT:
        raise BadPacket("a relay route is not a short string")
    try:
        parse_relay(value)
    except LocalProtocolError:
        raise BadPacket("a relay route is not [NODE_ID@]HOST:PORT") from None
    return value


def holders_untrusted(
    message: dict[str, Any], max_holders: int
) -> tuple[list[tuple[bytes, tuple[str, int]]], dict[bytes, str]]:
    """A holders announcement: its direct entries and its relay routes, or BadPacket."""
    holders = message.get("h")
    if not isinstance(holders, list) or len(holders) > max_holders:
        raise BadPacket("holders is not a short list")
    direct = []
    for item in holders:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], bytes)
            and len(item[0]) == 32
            and isinstance(item[1], str)
            and 0 < len(item[1]) < 254
            and isinstance(item[2], int)
            and 0 < item[2] < 65536
        ):
            raise BadPacket("a holder is not [node ID, host, port]")
        direct.append((item[0], (item[1], item[2])))
    routes: dict[bytes, str] = {}
    relayed = message.get("r", [])
    if not isinstance(relayed, list) or len(relayed) > max_holders:
        raise BadPacket("relay routes are not a short list")
    for item in relayed:
        if not (
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == 32
        ):
            raise BadPacket("a relay route is not [node ID, route]")
        routes[item[0]] = relay_route_untrusted(item[1])
    return direct, routes
