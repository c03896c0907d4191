"""A Mahimahi-style link emulator: two namespaces joined through two TUN devices.

This kernel has no netem, so impairments are applied in user space::

    namespace A                      root namespace                 namespace B
    10.77.0.1 ── tun(A) ══ fd ══> forwarder process ══ fd ══> tun(B) ── 10.77.0.2
                        <══════════  (LinkDirection × 2)  <══════

Each TUN device is created in the root namespace (``/dev/net/tun``,
``TUNSETIFF`` with ``IFF_TUN | IFF_NO_PI``: raw IP packets, no header), then
moved into its namespace and addressed as one end of a point-to-point pair.
The file descriptors stay with the forwarder process; everything the kernel of
A routes to 10.77.0.2 comes out of fd A, crosses the emulated link, and is
injected into B through fd B, so kernel TCP and any UDP protocol cross exactly
the same link. The addresses exist only inside the two namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
from collections.abc import Iterator

import attrs

from aetherflow_sdk._errors import AetherFlowError
from aetherflow_sdk.testing._linkcore import LinkConfig, LinkStatistics
from aetherflow_sdk.testing._netns import (
    Namespace,
    interface_name,
    network_namespace,
    run_ip,
    stop_process,
    unique_tag,
)

# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000

ADDRESS_A = "10.77.0.1"
"""Address of namespace A's end of every emulated link (inside the namespace only)."""
ADDRESS_B = "10.77.0.2"
"""Address of namespace B's end of every emulated link (inside the namespace only)."""

_FORWARDER_START_TIMEOUT = 15.0
_FORWARDER_STOP_TIMEOUT = 5.0


@attrs.define(eq=False)
class EmulatedLink:
    """A running emulated link. Use :func:`emulated_link` to make one."""

    ns_a: Namespace
    """Namespace A; its end of the link has :attr:`address_a`."""
    ns_b: Namespace
    """Namespace B; its end of the link has :attr:`address_b`."""
    a_to_b: LinkConfig
    """Impairments from A to B."""
    b_to_a: LinkConfig
    """Impairments from B to A."""
    tun_a: str
    """Name of the TUN device inside namespace A."""
    tun_b: str
    """Name of the TUN device inside namespace B."""
    _forwarder: subprocess.Popen[str]
    final_statistics: LinkStatistics | None = None
    """The counters at shutdown, set when the context manager exits."""
    address_a: str = ADDRESS_A
    """IPv4 address of A's end."""
    address_b: str = ADDRESS_B
    """IPv4 address of B's end."""

    def statistics(self) -> LinkStatistics:
        """The forwarder's counters now (after exit: the final ones)."""
        if self.final_statistics is not None:
            return self.final_statistics
        assert self._forwarder.stdin is not None
        self._forwarder.stdin.write("stats\n")
        self._forwarder.stdin.flush()
        return LinkStatistics.from_dict(json.loads(_read_line(self._forwarder, _FORWARDER_START_TIMEOUT)))

    def _shut_down(self) -> None:
        process = self._forwarder
        if process.poll() is None and process.stdin is not None:
            with contextlib.suppress(Exception):
                # End of input asks the forwarder to report and exit.
                process.stdin.close()
                line = _read_line(process, _FORWARDER_STOP_TIMEOUT)
                self.final_statistics = LinkStatistics.from_dict(json.loads(line))
        stop_process(process)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise AetherFlowError(
            f"the link emulator's forwarder did not answer within {timeout:.0f} s "
            f"(exit status {process.poll()})"
        )
    return line


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise AetherFlowError(f"cannot create TUN device {name}: {exc}") from exc
    return fd


def _place_tun(name: str, namespace: Namespace, local: str, peer: str, mtu: int) -> None:
    run_ip("link", "set", name, "netns", namespace.name)
    # No IPv6 link-local address: otherwise router solicitations and MLD
    # reports cross the link and blur the counters tests rely on.
    namespace.ip("link", "set", name, "addrgenmode", "none")
    namespace.ip("addr", "add", local, "peer", f"{peer}/32", "dev", name)
    namespace.ip("link", "set", name, "mtu", str(mtu), "up")


@contextlib.contextmanager
def emulated_link(
    a_to_b: LinkConfig,
    b_to_a: LinkConfig | None = None,
    *,
    seed: int = 0,
    mtu: int = 1500,
) -> Iterator[EmulatedLink]:
    """Two fresh namespaces joined by an emulated link; everything is removed on exit.

    ``b_to_a`` defaults to the same impairments as ``a_to_b`` (with its own
    random stream). The same ``seed`` and the same traffic give the same drops.
    """
    b_to_a = a_to_b if b_to_a is None else b_to_a
    tag = unique_tag()
    with network_namespace("a", tag=tag) as ns_a, network_namespace("b", tag=tag) as ns_b:
        tun_a, tun_b = interface_name(tag, "ta"), interface_name(tag, "tb")
        fds: list[int] = []
        try:
            fds.append(_open_tun(tun_a))
            fds.append(_open_tun(tun_b))
            _place_tun(tun_a, ns_a, ADDRESS_A, ADDRESS_B, mtu)
            _place_tun(tun_b, ns_b, ADDRESS_B, ADDRESS_A, mtu)
            config = {
                "fd_a": fds[0],
                "fd_b": fds[1],
                "a_to_b": a_to_b.to_dict(),
                "b_to_a": b_to_a.to_dict(),
                "seed": seed,
            }
            forwarder = subprocess.Popen(
                [sys.executable, "-m", "aetherflow_sdk.testing._forwarder", json.dumps(config)],
                pass_fds=fds,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        finally:
            # The forwarder holds its own copies; when it exits the TUN devices vanish.
            for fd in fds:
                os.close(fd)
        link = EmulatedLink(
            ns_a=ns_a, ns_b=ns_b, a_to_b=a_to_b, b_to_a=b_to_a, tun_a=tun_a, tun_b=tun_b, forwarder=forwarder
        )
        try:
            _read_line(forwarder, _FORWARDER_START_TIMEOUT)  # {"ready": true}
            yield link
        finally:
            link._shut_down()
