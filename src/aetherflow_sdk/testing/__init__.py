"""Public test tooling: network namespaces, a userspace link emulator, and real NATs.

Needs Linux and root; :func:`netns_available` says why not otherwise, so
tests can skip with that reason. Everything created is removed on exit, on
Ctrl-C, on SIGTERM and on errors.

Example::

    from aetherflow_sdk.testing import LinkConfig, emulated_link

    with emulated_link(LinkConfig(delay=0.020, loss=0.02), seed=1) as link:
        link.ns_b.popen(["my-server", "--listen", link.address_b])
        link.ns_a.run(["my-client", link.address_b])
        print(link.statistics())
"""

from __future__ import annotations

from aetherflow_sdk.testing._linkcore import DirectionStatistics, LinkConfig, LinkDirection, LinkStatistics
from aetherflow_sdk.testing._linkem import ADDRESS_A, ADDRESS_B, EmulatedLink, emulated_link
from aetherflow_sdk.testing._nat import NatSide, NatTopology, nat_available, nat_topology
from aetherflow_sdk.testing._netns import (
    Namespace,
    VethPair,
    netns_available,
    network_namespace,
    register_cleanup,
    veth_pair,
)

__all__ = [
    "ADDRESS_A",
    "ADDRESS_B",
    "DirectionStatistics",
    "EmulatedLink",
    "LinkConfig",
    "LinkDirection",
    "LinkStatistics",
    "Namespace",
    "NatSide",
    "NatTopology",
    "VethPair",
    "emulated_link",
    "nat_available",
    "nat_topology",
    "netns_available",
    "network_namespace",
    "register_cleanup",
    "veth_pair",
]
