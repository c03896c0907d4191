"""Network namespaces for tests and benchmarks, with guaranteed cleanup.

Everything a test creates here lives inside namespaces the test owns, so its
traffic never reaches the machine's real interfaces (see
docs/benchmarks.md). Cleanup is layered, because a leaked
namespace outlives the test run and breaks the next one:

1. every context manager removes what it made in ``finally``;
2. a process-wide registry removes whatever is still alive at interpreter exit
   (``atexit``), and SIGTERM/SIGHUP are turned into ``SystemExit`` so that 1
   and 2 run when a run is killed politely (SIGINT already raises
   ``KeyboardInterrupt``);
3. names carry a per-run random tag, so parallel runs never collide and a
   leftover from a crashed run is recognisable (prefix ``af``).

Later layers (relay and NAT tests with iptables, mDNS across namespaces) build
on :func:`network_namespace`, :func:`veth_pair` and :meth:`Namespace.popen`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import attrs

from aetherflow_sdk._errors import AetherFlowError

NAME_PREFIX = "af"
"""Every namespace and interface created here starts with this."""

_IFNAME_MAX = 15  # IFNAMSIZ - 1, linux/if.h


def netns_available() -> str | None:
    """None if namespaces can be used here; otherwise the reason they cannot."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN support in this kernel or container)"
    return None


def unique_tag() -> str:
    """A short random tag; names built from it fit in an interface name."""
    return secrets.token_hex(4)


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; on failure raise one clear error with ip's own message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise AetherFlowError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")
    return result


class _CleanupRegistry:
    """Undo actions still pending, run at exit or on a terminating signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._installed = False

    def add(self, undo: Callable[[], None]) -> int:
        with self._lock:
            self._install()
            self._next += 1
            self._pending[self._next] = undo
            return self._next

    def discard(self, key: int) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def run_all(self) -> None:
        with self._lock:
            pending = list(self._pending.values())[::-1]
            self._pending.clear()
        for undo in pending:
            with contextlib.suppress(Exception):
                undo()

    def _install(self) -> None:
        if self._installed:
            return
        self._installed = True
        atexit.register(self.run_all)
        # Signal handlers can only be set from the main thread, and we never
        # replace a handler someone else chose (trio, pytest ...).
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds the stack, so every `finally` and then atexit run.
    raise SystemExit(128 + signum)


_registry = _CleanupRegistry()


def _stop_process(process: subprocess.Popen[Any], grace: float = 2.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@attrs.define(eq=False)
class Namespace:
    """A network namespace this run created. Use :func:`network_namespace`."""

    name: str
    """The namespace name (``ip netns`` list), unique to this run."""
    _processes: list[subprocess.Popen[Any]] = attrs.field(factory=list, init=False)

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ip ARGS`` inside this namespace."""
        return run_ip("-n", self.name, *args, check=check)

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it (bounded by ``timeout``)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run([*self.exec_prefix(), *argv], timeout=timeout, check=check, text=True, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the namespace; it is stopped when the namespace goes away."""
        process: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix(), *argv], **kwargs)
        self._processes.append(process)
        return process

    def stop_processes(self) -> None:
        """Terminate every process started in the namespace (ours first, then any other)."""
        for process in self._processes:
            with contextlib.suppress(Exception):
                _stop_process(process)
        self._processes.clear()
        # Something may have been started by other means (`ip netns exec` by hand).
        result = run_ip("netns", "pids", self.name, check=False)
        for word in result.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(word), signal.SIGKILL)


def _delete_namespace(namespace: Namespace) -> None:
    namespace.stop_processes()
    run_ip("netns", "delete", namespace.name, check=False)


@contextlib.contextmanager
def network_namespace(role: str = "ns", *, tag: str | None = None) -> Iterator[Namespace]:
    """Create a namespace named ``af-<tag>-<role>`` with ``lo`` up; delete it on exit."""
    reason = netns_available()
    if reason is not None:
        raise AetherFlowError(f"cannot create a network namespace: {reason}")
    namespace = Namespace(f"{NAME_PREFIX}-{tag or unique_tag()}-{role}")
    run_ip("netns", "add", namespace.name)
    key = _registry.add(lambda: _delete_namespace(namespace))
    try:
        namespace.ip("link", "set", "lo", "up")
        yield namespace
    finally:
        _registry.discard(key)
        _delete_namespace(namespace)


def interface_name(tag: str, suffix: str) -> str:
    """``af<tag><suffix>``, checked against the kernel's 15-character limit."""
    name = f"{NAME_PREFIX}{tag}{suffix}"
    if len(name) > _IFNAME_MAX:
        raise AetherFlowError(f"interface name {name!r} is longer than {_IFNAME_MAX} characters")
    return name


@attrs.frozen(kw_only=True)
class VethPair:
    """A veth pair joining two namespaces, each end addressed."""

    name_a: str
    """Interface name of the end inside namespace A."""
    name_b: str
    """Interface name of the end inside namespace B."""
    address_a: str
    """IPv4 address of the A end (without prefix length)."""
    address_b: str
    """IPv4 address of the B end (without prefix length)."""


@contextlib.contextmanager
def veth_pair(
    ns_a: Namespace,
    ns_b: Namespace,
    *,
    address_a: str = "10.78.0.1",
    address_b: str = "10.78.0.2",
    prefix_len: int = 24,
    tag: str | None = None,
) -> Iterator[VethPair]:
    """Join two namespaces with an addressed veth pair; remove it on exit.

    The pair is created directly inside the namespaces, so it never appears,
    even briefly, among the machine's own interfaces.
    """
    tag = tag or unique_tag()
    pair = VethPair(
        name_a=interface_name(tag, "va"),
        name_b=interface_name(tag, "vb"),
        address_a=address_a,
        address_b=address_b,
    )
    ns_a.ip("link", "add", pair.name_a, "type", "veth", "peer", "name", pair.name_b, "netns", ns_b.name)

    def remove() -> None:
        ns_a.ip("link", "delete", pair.name_a, check=False)

    key = _registry.add(remove)
    try:
        ns_a.ip("addr", "add", f"{address_a}/{prefix_len}", "dev", pair.name_a)
        ns_b.ip("addr", "add", f"{address_b}/{prefix_len}", "dev", pair.name_b)
        ns_a.ip("link", "set", pair.name_a, "up")
        ns_b.ip("link", "set", pair.name_b, "up")
        yield pair
    finally:
        _registry.discard(key)
        # Deleting one end removes both; it is gone already if a namespace was deleted.
        remove()


def register_cleanup(undo: Callable[[], None]) -> Callable[[], None]:
    """Run ``undo`` at exit unless the returned function is called first (it then runs ``undo``)."""
    key = _registry.add(undo)

    def done() -> None:
        _registry.discard(key)
        undo()

    return done


def leftover_namespaces(tag: str) -> list[str]:
    """Names of namespaces still present whose name contains ``tag`` (for tests of cleanup)."""
    result = run_ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line and tag in line.split()[0]]


def stop_process(process: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """Terminate a process, killing it if it does not exit within ``grace`` seconds."""
    _stop_process(process, grace)
