"""The contenders of ``aetherflow bench transport`` behind one small interface.

A contender is a way to carry messages between two processes. The workloads
(:mod:`aetherflow_node.bench._workloads`) only see a :class:`MessagePipe`:
``send(message)``, ``receive()`` and ``statistics()``. So kernel TCP, aioquic
and Quantum run exactly the same workload code, and adding a transport means
writing one :class:`Contender` with ``listen`` and ``connect``.

Each run of a contender happens in its own pair of processes, so every
contender picks its own event loop (``backend``: asyncio or trio); workloads
are written against anyio and run on either.

TCP and aioquic carry messages with the same framing, a 4-byte big-endian
length before each message, on one byte stream (for aioquic: one QUIC stream).
Quantum carries messages natively.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import attrs

_LENGTH = struct.Struct("!I")

# struct tcp_info offsets (linux/tcp.h); the fields are stable kernel ABI.
_TCPI_TOTAL_RETRANS = 100  # __u32 tcpi_total_retrans
_TCPI_BYTES_SENT = 200  # __u64 tcpi_bytes_sent (Linux 4.19+): payload bytes incl. retransmissions
_TCP_INFO_LENGTH = 232


class MessagePipe(Protocol):
    """One connection as the workloads see it."""

    async def send(self, message: bytes) -> None:
        """Send one message (reliably, in the contender's chosen order)."""

    async def receive(self) -> bytes | None:
        """The next message, or None when the peer has finished."""

    def statistics(self) -> dict[str, int | None]:
        """Transport counters: ``retransmits``, ``fec_recoveries``, ``wire_bytes`` (None when unknown)."""


class Listener(Protocol):
    """A listening server; ``port`` is known as soon as it exists."""

    @property
    def port(self) -> int:
        """The bound port."""

    async def accept(self) -> MessagePipe:
        """Wait for the one client of this run."""


class Contender(Protocol):
    """A transport under test."""

    @property
    def name(self) -> str:
        """Short name used in tables, JSON and on the command line."""

    @property
    def description(self) -> str:
        """What exactly runs (congestion control, options), for the report."""

    @property
    def backend(self) -> str:
        """The event loop it needs: ``asyncio`` or ``trio``."""

    def listen(self, host: str) -> contextlib.AbstractAsyncContextManager[Listener]:
        """Listen on ``host`` (an ephemeral port)."""

    def connect(self, host: str, port: int) -> contextlib.AbstractAsyncContextManager[MessagePipe]:
        """Connect to a listener."""


class StreamPipe:
    """Length-prefixed messages over an asyncio byte stream (TCP socket or QUIC stream)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counters: Callable[[], dict[str, int | None]],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._counters = counters

    async def send(self, message: bytes) -> None:
        # One write per message, as an application with TCP_NODELAY would do.
        self._writer.write(_LENGTH.pack(len(message)) + message)
        await self._writer.drain()

    async def receive(self) -> bytes | None:
        try:
            header = await self._reader.readexactly(_LENGTH.size)
            return await self._reader.readexactly(_LENGTH.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def statistics(self) -> dict[str, int | None]:
        return self._counters()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


def _tcp_counters(sock: socket.socket) -> Callable[[], dict[str, int | None]]:
    def counters() -> dict[str, int | None]:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
        except OSError:
            return {"retransmits": None, "fec_recoveries": None, "payload_bytes_sent": None}
        retransmits = struct.unpack_from("I", info, _TCPI_TOTAL_RETRANS)[0]
        sent = (
            struct.unpack_from("Q", info, _TCPI_BYTES_SENT)[0] if len(info) >= _TCPI_BYTES_SENT + 8 else None
        )
        return {"retransmits": retransmits, "fec_recoveries": None, "payload_bytes_sent": sent}

    return counters


def _tune_tcp(sock: socket.socket, congestion: str) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
    except OSError as exc:
        raise RuntimeError(
            f"TCP congestion control {congestion!r} is not available "
            f"(see /proc/sys/net/ipv4/tcp_available_congestion_control; try `modprobe tcp_{congestion}`)"
        ) from exc


@attrs.frozen(kw_only=True)
class _StreamListener:
    port: int
    """The bound port."""
    accepted: asyncio.Queue[StreamPipe]
    """Connections handed over by the server callback."""

    async def accept(self) -> MessagePipe:
        return await self.accepted.get()


@attrs.frozen(kw_only=True)
class TcpContender:
    """Kernel TCP with a named congestion control, TCP_NODELAY and length-prefixed framing."""

    congestion: str
    """Linux congestion control module set per socket with TCP_CONGESTION (cubic, bbr ...)."""
    backend: str = "asyncio"
    """Runs on asyncio streams."""

    @property
    def name(self) -> str:
        return f"tcp-{self.congestion}"

    @property
    def description(self) -> str:
        return f"kernel TCP, {self.congestion} (TCP_CONGESTION), TCP_NODELAY, 4-byte length framing"

    @contextlib.asynccontextmanager
    async def listen(self, host: str) -> AsyncIterator[Listener]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Set on the listener so that accepted sockets start with it from the SYN on.
        _tune_tcp(sock, self.congestion)
        sock.bind((host, 0))
        accepted: asyncio.Queue[StreamPipe] = asyncio.Queue()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            client = writer.get_extra_info("socket")
            _tune_tcp(client, self.congestion)
            await accepted.put(StreamPipe(reader, writer, _tcp_counters(client)))

        server = await asyncio.start_server(on_client, sock=sock)
        try:
            yield _StreamListener(port=sock.getsockname()[1], accepted=accepted)
        finally:
            server.close()

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[MessagePipe]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _tune_tcp(sock, self.congestion)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        pipe = StreamPipe(reader, writer, _tcp_counters(sock))
        try:
            yield pipe
        finally:
            pipe.close()


def _self_signed_certificate() -> tuple[Any, Any]:
    """A throw-away certificate for the aioquic server, made at run time."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aetherflow-bench")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


class _LossCounter:
    """Counts packets aioquic declares lost (each one's frames are sent again)."""

    def __init__(self, protocol: Any) -> None:
        self.lost = 0
        # aioquic exposes no loss counter; wrap its (private) loss hook. Measurement only.
        recovery = protocol._quic._loss
        original = recovery._on_packets_lost

        def counting(*, packets: Any, **kwargs: Any) -> None:
            packets = list(packets)
            self.lost += sum(1 for p in packets if p.is_ack_eliciting)
            original(packets=packets, **kwargs)

        recovery._on_packets_lost = counting

    def counters(self) -> dict[str, int | None]:
        return {"retransmits": self.lost, "fec_recoveries": None, "payload_bytes_sent": None}


@attrs.frozen(kw_only=True)
class AioquicContender:
    """aioquic (pure-Python QUIC), all messages on one bidirectional stream."""

    congestion: str = "reno"
    """aioquic's congestion control (its default is reno)."""
    backend: str = "asyncio"
    """aioquic's own event loop."""

    @property
    def name(self) -> str:
        return "aioquic"

    @property
    def description(self) -> str:
        return f"aioquic QUIC ({self.congestion}), one stream, 4-byte length framing"

    def _configuration(self, *, is_client: bool) -> Any:
        from aioquic.quic.configuration import QuicConfiguration

        configuration = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=["aetherflow-bench"],
            congestion_control_algorithm=self.congestion,
        )
        if is_client:
            import ssl

            configuration.verify_mode = ssl.CERT_NONE
        else:
            configuration.certificate, configuration.private_key = _self_signed_certificate()
        return configuration

    @contextlib.asynccontextmanager
    async def listen(self, host: str) -> AsyncIterator[Listener]:
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.asyncio.server import serve

        accepted: asyncio.Queue[StreamPipe] = asyncio.Queue()
        counters: dict[int, _LossCounter] = {}

        class Protocol(QuicConnectionProtocol):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                counters[id(self)] = _LossCounter(self)

        def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            protocol = writer.transport.protocol  # type: ignore[attr-defined]
            accepted.put_nowait(StreamPipe(reader, writer, counters[id(protocol)].counters))

        # Bind to port 0, then read the port aioquic's transport got.
        server = await serve(
            host,
            0,
            configuration=self._configuration(is_client=False),
            create_protocol=Protocol,
            stream_handler=on_stream,
        )
        try:
            transport = server._transport
            assert transport is not None
            port = transport.get_extra_info("sockname")[1]
            yield _StreamListener(port=port, accepted=accepted)
        finally:
            server.close()

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[MessagePipe]:
        from aioquic.asyncio.client import connect

        async with connect(host, port, configuration=self._configuration(is_client=True)) as protocol:
            counter = _LossCounter(protocol)
            reader, writer = await protocol.create_stream()
            pipe = StreamPipe(reader, writer, counter.counters)
            try:
                yield pipe
            finally:
                pipe.close()


def contender_names() -> list[str]:
    """Every contender the harness knows, in table order."""
    return ["quantum", "quantum-ordered", "quantum-nofec", "tcp-cubic", "tcp-bbr", "aioquic"]


def get_contender(name: str) -> Contender:
    """The contender called ``name``."""
    if name in ("tcp-cubic", "tcp-bbr"):
        return TcpContender(congestion=name.removeprefix("tcp-"))
    if name == "aioquic":
        return AioquicContender()
    if name in ("quantum", "quantum-ordered", "quantum-nofec"):
        # Imported only when asked for; ImportError means Quantum cannot run here.
        from aetherflow_node.bench._contender_quantum import QuantumContender

        return QuantumContender(
            ordered=name == "quantum-ordered", fec="off" if name == "quantum-nofec" else "auto"
        )
    raise KeyError(name)
