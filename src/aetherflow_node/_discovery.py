"""LAN discovery over mDNS: a thin anyio shell around python-zeroconf.

zeroconf is asyncio code. The shell runs it where it can run:

- under **asyncio**, on the caller's own loop (``AsyncZeroconf``), so every
  callback is already on the right loop;
- under **trio** there is no asyncio loop, so zeroconf runs its own loop in a
  thread (``use_asyncio=False``). The shell submits coroutines to that loop with
  ``asyncio.run_coroutine_threadsafe`` and waits for them without blocking trio;
  zeroconf's callbacks come back to the caller's loop through
  ``anyio.from_thread.run_sync`` with the caller's event-loop token.

Everything that decides something (decoding an announcement, remembering who is
on the LAN, tags) is in ``_discovery_core.py`` and runs on the caller's loop only.

When multicast cannot be used (zeroconf raises ``OSError``, ``ENODEV`` when no
interface can join the group, or finds no interface at all), discovery logs one
plain-words notice and stays off: ``available`` is False, ``advertise`` only
remembers, ``found()`` yields nothing, and the node keeps working with the peers
it is given by address or ticket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import sniffio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aetherflow_node._discovery_core import (
    MAX_TAGS,
    SERVICE_TYPE,
    Advertisement,
    DiscoveryStatistics,
    FoundPeer,
    LanPeers,
    advertised_ipv4,
    document_tag,
    encode_txt,
    host_name,
    instance_name,
    shared_documents,
)
from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk._identity import format_node_id, parse_node_id

__all__ = [
    "MAX_TAGS",
    "SERVICE_TYPE",
    "Discovery",
    "DiscoveryStatistics",
    "FoundPeer",
    "document_tag",
    "open_discovery",
    "shared_documents",
]

logger = logging.getLogger("aetherflow.discovery")

T = TypeVar("T")

SUBSCRIBER_BUFFER = 256
"""Events buffered per ``found()`` subscriber; a subscriber that falls further behind loses events
(counted in ``events_dropped``), it never blocks discovery."""
_RESOLVE_TIMEOUT_MS = 3000
_MAX_RESOLVING = 64  # concurrent resolutions; more pending names wait for the next announcement


class _Runner(Protocol):
    """Where zeroconf's coroutines run, and the way back to the caller's loop."""

    async def run(self, make: Callable[[], Awaitable[T]]) -> T: ...

    def to_caller(self, fn: Callable[..., object], *args: Any) -> None: ...


class _SameLoop:
    """asyncio: zeroconf shares the caller's loop."""

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        return await make()

    def to_caller(self, fn: Callable[..., object], *args: Any) -> None:
        fn(*args)


class _ThreadLoop:
    """trio (or any non-asyncio caller): zeroconf's own loop runs in its thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._token = anyio.lowlevel.current_token()
        self._caller_thread = threading.get_ident()

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def wrapped() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        done = anyio.Event()

        def wake(_: concurrent.futures.Future[T]) -> None:
            if threading.get_ident() == self._caller_thread:
                done.set()  # add_done_callback on a finished future calls us right here
            else:
                self.to_caller(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def to_caller(self, fn: Callable[..., object], *args: Any) -> None:
        # Blocks zeroconf's thread only until the caller's loop has run ``fn``
        # (a few microseconds); nothing on the caller's side ever waits on that thread.
        with contextlib.suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(fn, *args, token=self._token)


def _machine_ipv4_addresses() -> list[str]:
    import ifaddr  # a dependency of zeroconf

    return [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]


class _Zeroconf:
    """The zeroconf side: every method here runs on zeroconf's loop."""

    def __init__(self, aiozc: Any, owner: Discovery, runner: _Runner) -> None:
        self.aiozc = aiozc
        self._owner = owner
        self._runner = runner
        self._browser: Any = None
        self._resolving: dict[str, bool] = {}  # name -> resolve again when done
        self._tasks: set[asyncio.Task[None]] = set()

    async def register(self, info: Any) -> None:
        task = await self.aiozc.async_register_service(info)
        await task

    async def update(self, info: Any) -> None:
        task = await self.aiozc.async_update_service(info)
        await task

    async def browse(self) -> None:
        from zeroconf import DNSQuestionType
        from zeroconf.asyncio import AsyncServiceBrowser

        # The first query asks for unicast answers (QU, RFC 6762 §5.4): a node that starts at the
        # same moment as another would otherwise have its multicast query suppressed by the other's
        # identical one (§7.3) while the other's known answers suppress every reply, and neither learns.
        self._browser = AsyncServiceBrowser(
            self.aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change], question_type=DNSQuestionType.QU
        )

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        logger.debug("mDNS %s: %s", state_change, name)
        if state_change is ServiceStateChange.Removed:
            self._runner.to_caller(self._owner._on_removed, name)
            return
        if name in self._resolving:
            self._resolving[name] = True
            return
        if len(self._resolving) >= _MAX_RESOLVING:
            return
        self._resolving[name] = False
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        try:
            while True:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                resolved = await info.async_request(self.aiozc.zeroconf, _RESOLVE_TIMEOUT_MS)
                logger.debug("resolving %s: %s", name, "done" if resolved else "no answer")
                if resolved:
                    self._runner.to_caller(
                        self._owner._on_resolved,
                        name,
                        dict(info.properties),
                        list(info.parsed_addresses()),
                        info.port,
                    )
                if not self._resolving.get(name):
                    break
                self._resolving[name] = False
        except Exception:  # a resolution that fails is retried on the next announcement
            logger.debug("resolving %s failed", name, exc_info=True)
        finally:
            self._resolving.pop(name, None)

    async def stop(self) -> None:
        """Stop browsing, then withdraw our service: the goodbye packets go out here."""
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.aiozc.async_unregister_all_services()


class Discovery:
    """A running discovery: advertise our documents' tags, learn who is on the LAN.

    Made by :func:`open_discovery`. Every method runs on the caller's loop.
    """

    def __init__(self, *, node_id: str, name: str, port: int, addresses: list[str]) -> None:
        self._node_id = node_id
        self._name = name
        self._port = port
        self._addresses = addresses
        self._lan = LanPeers(node_id)
        self._subscribers: list[MemoryObjectSendStream[FoundPeer]] = []
        self._tags: frozenset[bytes] = frozenset()
        self._published: frozenset[bytes] | None = None
        self._tags_left_out = 0
        self._publishes = 0
        self._events_dropped = 0
        self._changed = anyio.Event()
        self._closed = False
        self.available = False
        """True when mDNS runs; False when it is unavailable here (the log says why, once)."""

    # -- the API ----------------------------------------------------------------------------------

    def advertise(self, tags: frozenset[bytes]) -> None:
        """Publish this set of document tags (see :func:`document_tag`), replacing the last one.

        Returns at once; the new record goes out in the background, and bursts of
        calls coalesce into one update.
        """
        tags = frozenset(tags)
        encode_txt(Advertisement(node_id=self._node_id, name=self._name, tags=tags))  # validates the tags
        self._tags = tags
        self._changed.set()

    def found(self) -> MemoryObjectReceiveStream[FoundPeer]:
        """A stream of LAN events: first every node known now, then each new, changed or
        removed one. Iterate with ``async for``; close it (or leave the ``with``) when done.
        It ends when discovery closes."""
        send, receive = anyio.create_memory_object_stream[FoundPeer](SUBSCRIBER_BUFFER)
        for peer in self._lan.peers:
            send.send_nowait(peer)
        if self._closed:
            send.close()
        else:
            self._subscribers.append(send)
        return receive

    @property
    def peers(self) -> tuple[FoundPeer, ...]:
        """The other nodes seen on the LAN now."""
        return self._lan.peers

    def statistics(self) -> DiscoveryStatistics:
        """A snapshot of the counters."""
        return DiscoveryStatistics(
            available=self.available,
            peers=len(self._lan.peers),
            announcements=self._lan.announcements,
            bad_announcements=self._lan.bad_announcements,
            peers_ignored=self._lan.peers_ignored,
            events_dropped=self._events_dropped,
            tags_advertised=min(len(self._published or ()), MAX_TAGS),
            tags_left_out=self._tags_left_out,
            publishes=self._publishes,
        )

    # -- called on the caller's loop by the zeroconf side ---------------------------------------

    def _on_resolved(
        self, name: str, properties: dict[bytes, bytes | None], addresses: list[str], port: int | None
    ) -> None:
        event = self._lan.update_untrusted(name, properties, addresses, port)
        if event is not None:
            self._emit(event)

    def _on_removed(self, name: str) -> None:
        event = self._lan.remove(name)
        if event is not None:
            self._emit(event)

    def _emit(self, event: FoundPeer) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self._events_dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(send)

    def _close_subscribers(self) -> None:
        self._closed = True
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()

    def _service_info(self, tags: frozenset[bytes]) -> Any:
        from zeroconf import ServiceInfo

        properties, self._tags_left_out = encode_txt(
            Advertisement(node_id=self._node_id, name=self._name, tags=tags)
        )
        return ServiceInfo(
            SERVICE_TYPE,
            instance_name(self._node_id),
            port=self._port,
            properties=properties,
            server=host_name(self._node_id),
            parsed_addresses=self._addresses,
        )

    async def _publisher(self, zc: _Zeroconf, runner: _Runner) -> None:
        """Re-publish whenever the tags change; bursts coalesce while an update is in flight."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            tags = self._tags
            if tags == self._published:
                continue
            info = self._service_info(tags)
            await runner.run(lambda info=info: zc.update(info))  # type: ignore[misc]
            self._published = tags
            self._publishes += 1


def _check_arguments(node_id: str, port: int, interfaces: Sequence[str] | None) -> str:
    canonical = format_node_id(parse_node_id(node_id))
    if not 0 < port < 65536:
        raise LocalProtocolError(f"port {port} is out of range (1-65535)")
    for address in interfaces or ():
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise LocalProtocolError(
                f"interface {address!r} is not an IP address; give the address of the interface, "
                "e.g. 192.168.1.20 or 127.0.0.1"
            ) from None
    if interfaces is not None and not interfaces:
        raise LocalProtocolError("interfaces=[] names no interface; pass None for all of them")
    return canonical


def _unavailable_notice(exc: BaseException, interfaces: Sequence[str] | None) -> str:
    where = f"on {', '.join(interfaces)}" if interfaces else "on this machine"
    if isinstance(exc, OSError) and exc.errno == errno.ENODEV:
        why = "no interface that is up has that address" if interfaces else "no interface is up"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        why = "no interface is up"
    return (
        f"LAN discovery is off: no multicast {where} ({why}); "
        "peers given by address (--peer) and tickets still work"
    )


@contextlib.asynccontextmanager
async def open_discovery(
    *,
    node_id: str,
    port: int,
    interfaces: Sequence[str] | None = None,
    name: str = "",
    tags: frozenset[bytes] = frozenset(),
    addresses: Sequence[str] | None = None,
) -> AsyncIterator[Discovery]:
    """Advertise this node on the LAN and browse for others, until the block ends.

    ``node_id`` is the text node ID, ``port`` the Quantum endpoint's UDP port.
    ``interfaces`` are the addresses of the interfaces to use (None: all of them);
    tests always pass loopback or an interface of a namespace they created.
    ``addresses`` overrides the addresses published (default: those of
    ``interfaces``, else the machine's non-loopback IPv4 addresses). On leaving
    the block the node says goodbye, so the others drop it at once.
    """
    node_id = _check_arguments(node_id, port, interfaces)
    chosen = list(interfaces) if interfaces is not None else None
    if addresses is not None:
        published = list(addresses)
    else:
        published = advertised_ipv4(chosen, _machine_ipv4_addresses())
    discovery = Discovery(node_id=node_id, name=name, port=port, addresses=published)
    if tags:
        discovery.advertise(tags)
    try:
        zc, runner = await _start_zeroconf(chosen, discovery)
    except (OSError, RuntimeError) as exc:
        # RuntimeError: zeroconf found no interface to listen on.
        logger.warning(_unavailable_notice(exc, chosen))
        try:
            yield discovery
        finally:
            discovery._close_subscribers()
        return

    discovery.available = True
    try:
        async with anyio.create_task_group() as tg:
            # Browse first: what others announce while we probe and announce is seen as it arrives.
            await runner.run(zc.browse)
            await runner.run(lambda: zc.register(discovery._service_info(discovery._tags)))
            discovery._published = discovery._tags
            discovery._publishes += 1
            tg.start_soon(discovery._publisher, zc, runner)
            try:
                yield discovery
            finally:
                tg.cancel_scope.cancel()
    finally:
        discovery._close_subscribers()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await _stop_zeroconf(zc, runner)


async def _start_zeroconf(interfaces: list[str] | None, owner: Discovery) -> tuple[_Zeroconf, _Runner]:
    from zeroconf import InterfaceChoice, Zeroconf
    from zeroconf.asyncio import AsyncZeroconf

    choice: Any = interfaces if interfaces is not None else InterfaceChoice.All
    runner: _Runner
    if sniffio.current_async_library() == "asyncio":
        aiozc = AsyncZeroconf(interfaces=choice)
        await aiozc.zeroconf.async_wait_for_start()
        runner = _SameLoop()
    else:
        # Opening sockets and starting zeroconf's thread blocks briefly: not on the caller's loop.
        zeroconf = await anyio.to_thread.run_sync(lambda: Zeroconf(interfaces=choice, use_asyncio=False))
        aiozc = AsyncZeroconf(zc=zeroconf)
        assert zeroconf.loop is not None  # set by the time the constructor returns
        runner = _ThreadLoop(zeroconf.loop)
    return _Zeroconf(aiozc, owner, runner), runner


async def _stop_zeroconf(zc: _Zeroconf, runner: _Runner) -> None:
    try:
        await runner.run(zc.stop)
    finally:
        if isinstance(runner, _ThreadLoop):
            await anyio.to_thread.run_sync(zc.aiozc.zeroconf.close)
        else:
            await zc.aiozc.async_close()
