"""Two private hosts behind two real Linux NATs, and a "public internet" between them.

::

    host A 10.1.0.2 -- 10.1.0.1 NAT A 100.64.1.2 --+
                                                   100.64.1.1 / 100.64.2.1  public (relay: 100.64.0.1)
    host B 10.2.0.2 -- 10.2.0.1 NAT B 100.64.2.2 --+

Each NAT namespace forwards and masquerades what leaves on its public side with iptables:
plain ``MASQUERADE`` keeps the source port when it can and so maps one private socket to one
public port whatever the destination (cone-like: endpoint-independent mapping, with
port-restricted filtering from conntrack), while ``MASQUERADE --random-fully`` picks a new
random port for each new destination (symmetric: hole punching cannot predict it). The
public namespace routes between the NATs. :func:`nat_topology` builds it and always takes it
down, namespaces, interfaces and processes included, on any exit.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Literal

import attrs

from aetherflow_sdk._errors import AetherFlowError
from aetherflow_sdk.testing._netns import Namespace, netns_available, network_namespace, unique_tag, veth_pair

NatKind = Literal["cone", "symmetric"]

PUBLIC_ADDRESS = "100.64.0.1"
"""The public namespace's service address (on its loopback): where the relay listens."""
SECOND_PUBLIC_ADDRESS = "100.64.0.2"
"""A second public address, to see whether a NAT maps one socket alike toward two servers."""


def nat_available() -> str | None:
    """None if a NAT topology can be built here; otherwise the reason it cannot."""
    reason = netns_available()
    if reason is not None:
        return reason
    if shutil.which("iptables") is None:
        return "iptables (Debian package iptables) is not installed"
    return None


@attrs.frozen(kw_only=True)
class NatSide:
    """One private host behind its NAT."""

    host: Namespace
    """The private host's namespace."""
    nat: Namespace
    """The NAT's namespace."""
    private_address: str
    """The host's own address (behind the NAT)."""
    public_address: str
    """The NAT's public address: what a server on the public side sees as the source."""
    kind: NatKind

    def flush_conntrack(self) -> None:
        """Forget every NAT mapping (a NAT reboot, or a mapping timing out): the next packet
        out gets a new public port when the NAT randomises, as --random-fully does."""
        if shutil.which("conntrack") is None:
            raise AetherFlowError("conntrack (Debian package conntrack) is not installed")
        self.nat.run(["conntrack", "-F"], check=False)


@attrs.frozen(kw_only=True)
class NatTopology:
    """The whole test internet (see the module)."""

    public: Namespace
    """The public namespace; :data:`PUBLIC_ADDRESS` is on its loopback."""
    a: NatSide
    b: NatSide


def _masquerade(nat: Namespace, out_interface: str, kind: NatKind) -> None:
    nat.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    rule = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out_interface, "-j", "MASQUERADE"]
    if kind == "symmetric":
        rule.append("--random-fully")
    nat.run(rule)
    # Like a home router's firewall, drop what arrives unsolicited for the NAT itself. Without
    # this the first probe of a simultaneous open would leave a conntrack entry for its inbound
    # flow, and the NAT would then give our own outgoing probe to that peer a new port
    # (a dropped packet's entry is never confirmed, so nothing is left behind).
    nat.run(
        ["iptables", "-A", "INPUT", "-i", out_interface, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    )


def _wait_links_up(namespaces: list[Namespace], timeout: float = 10.0) -> None:
    """veth carriers come up a moment after ``ip link set up``; wait for them (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        down = [
            f"{ns.name}:{line.split()[0]}"
            for ns in namespaces
            for line in ns.ip("-br", "link").stdout.splitlines()
            if line.split()[1] not in ("UP", "UNKNOWN")
        ]
        if not down:
            return
        if time.monotonic() > deadline:
            raise AetherFlowError(f"these links did not come up in {timeout:g} s: {', '.join(down)}")
        time.sleep(0.05)


@contextlib.contextmanager
def _side(public: Namespace, index: int, kind: NatKind, tag: str) -> Iterator[NatSide]:
    with (
        network_namespace(f"nat{index}", tag=tag) as nat,
        network_namespace(f"host{index}", tag=tag) as host,
        veth_pair(
            public, nat, address_a=f"100.64.{index}.1", address_b=f"100.64.{index}.2", tag=f"{tag}{index}p"
        ) as uplink,
        veth_pair(nat, host, address_a=f"10.{index}.0.1", address_b=f"10.{index}.0.2", tag=f"{tag}{index}h"),
    ):
        nat.ip("route", "add", "default", "via", f"100.64.{index}.1")
        # Answers from a wildcard-bound socket leave from the service address, as on a server
        # with one public address (else the NAT's filter would drop them as from a stranger).
        public.ip("route", "replace", f"100.64.{index}.0/24", "dev", uplink.name_a, "src", PUBLIC_ADDRESS)
        host.ip("route", "add", "default", "via", f"10.{index}.0.1")
        _masquerade(nat, uplink.name_b, kind)
        yield NatSide(
            host=host,
            nat=nat,
            private_address=f"10.{index}.0.2",
            public_address=f"100.64.{index}.2",
            kind=kind,
        )


@contextlib.contextmanager
def nat_topology(
    a: NatKind = "cone", b: NatKind = "cone", *, tag: str | None = None
) -> Iterator[NatTopology]:
    """Build the topology with NAT kinds ``a`` and ``b``; tear all of it down on exit."""
    reason = nat_available()
    if reason is not None:
        raise AetherFlowError(f"cannot build a NAT topology: {reason}")
    tag = tag or unique_tag()[:4]
    with network_namespace("pub", tag=tag) as public:
        public.ip("addr", "add", f"{PUBLIC_ADDRESS}/32", "dev", "lo")
        public.ip("addr", "add", f"{SECOND_PUBLIC_ADDRESS}/32", "dev", "lo")
        public.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        with _side(public, 1, a, tag) as side_a, _side(public, 2, b, tag) as side_b:
            _wait_links_up([public, side_a.nat, side_a.host, side_b.nat, side_b.host])
            yield NatTopology(public=public, a=side_a, b=side_b)
