"""The public names of aetherflow_sdk.testing are deliberate: this pins them."""

from __future__ import annotations

import aetherflow_sdk.testing as testing


def test_public_names_are_pinned() -> None:
    assert sorted(testing.__all__) == [
        "ADDRESS_A",
        "ADDRESS_B",
        "DirectionStatistics",
        "EmulatedLink",
        "LinkConfig",
        "LinkDirection",
        "LinkStatistics",
        "Namespace",
        "VethPair",
        "emulated_link",
        "netns_available",
        "network_namespace",
        "register_cleanup",
        "veth_pair",
    ]
    for name in testing.__all__:
        value = getattr(testing, name)
        if not isinstance(value, str):
            assert value.__module__.startswith("aetherflow_sdk.testing._"), name
