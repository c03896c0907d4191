"""The NAT test topology itself: real iptables NAT in namespaces behaves as cone or symmetric.

These check the ground the relay tests stand on, with plain UDP sockets: what a public server
sees, whether one socket keeps its public port toward two servers, and whether two hosts behind
their NATs reach each other by sending at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_sdk.testing import nat_available, nat_topology
from aetherflow_sdk.testing._nat import PUBLIC_ADDRESS, SECOND_PUBLIC_ADDRESS
from aetherflow_sdk.testing._netns import leftover_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.skipif(nat_available() is not None, reason=str(nat_available()))]

TOOL = str(Path(__file__).with_name("_udp_tool.py"))
PORT = 3478


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the tool ended early: {process.stderr.read() if process.stderr else ''}"
    return line


@pytest.mark.parametrize(("kind", "punches"), [("cone", True), ("symmetric", False)])
def test_a_nat_maps_and_filters_as_its_kind(kind: str, punches: bool) -> None:
    with nat_topology(kind, kind) as topo:  # type: ignore[arg-type]
        server = topo.public.popen(
            [sys.executable, TOOL, "echo", str(PORT), PUBLIC_ADDRESS, SECOND_PUBLIC_ADDRESS],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert _line(server).strip() == "ready"
        sides = [
            side.host.popen(
                [sys.executable, TOOL, "punch", "40000", PUBLIC_ADDRESS, str(PORT), SECOND_PUBLIC_ADDRESS],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for side in (topo.a, topo.b)
        ]
        observed = [json.loads(_line(p))["observed"] for p in sides]
        for side, seen in zip((topo.a, topo.b), observed, strict=True):
            # The public side sees the NAT's address, never the private one.
            assert {host for host, _ in seen} == {side.public_address}
            same_port = seen[0][1] == seen[1][1]
            assert same_port is (kind == "cone"), (kind, seen)
        # Each side punches toward the public address the *first* server saw for the other.
        for process, peer in zip(sides, reversed(observed), strict=True):
            assert process.stdin is not None
            process.stdin.write(f"{peer[0][0]} {peer[0][1]}\n")
            process.stdin.flush()
        results = [json.loads(_line(p))["received"] for p in sides]
        assert results == [punches, punches], (kind, observed)
        tag = topo.public.name.split("-")[1]
    assert leftover_namespaces(tag) == []


def test_the_topology_is_torn_down_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError), nat_topology() as topo:
        tag = topo.public.name.split("-")[1]
        topo.a.host.popen([sys.executable, "-c", "import time; time.sleep(60)"])
        raise RuntimeError("the test failed here")
    assert leftover_namespaces(tag) == []
