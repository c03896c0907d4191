"""Quantum as a contender of ``aetherflow bench transport``.

Messages travel as native Quantum messages (no extra framing). ``quantum``
sends them unordered, so a lost packet delays only the message it carried;
``quantum-ordered`` sends them ordered, which shows what head-of-line
blocking costs. The congestion controller is BBR when it is registered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs

from aetherflow_sdk import ConnectionClosed
from aetherflow_sdk.quantum import QuantumConfig, open_endpoint

if TYPE_CHECKING:
    from aetherflow_node.bench._contenders import Listener, MessagePipe
    from aetherflow_sdk.quantum import Connection, Endpoint


def _congestion_control() -> str:
    from aetherflow_sdk.quantum._congestion import CONGESTION_CONTROLLERS

    return "bbr" if "bbr" in CONGESTION_CONTROLLERS else QuantumConfig().congestion_control


class _QuantumPipe:
    def __init__(self, connection: Connection, *, ordered: bool) -> None:
        self._connection = connection
        self._ordered = ordered

    async def send(self, message: bytes) -> None:
        await self._connection.send(message, ordered=self._ordered)

    async def receive(self) -> bytes | None:
        try:
            return await self._connection.receive()
        except ConnectionClosed:
            return None

    def statistics(self) -> dict[str, int | None]:
        # Read by name: FEC counters arrive with FEC, so absent fields are reported as unknown.
        stats: dict[str, Any] = attrs.asdict(self._connection.statistics())
        fec = next(
            (v for k, v in stats.items() if "fec" in k and "recover" in k and isinstance(v, int)), None
        )
        return {
            "retransmits": stats.get("packets_retransmitted"),
            "fec_recoveries": fec,
            "payload_bytes_sent": stats.get("bytes_sent"),
        }


@attrs.frozen(kw_only=True)
class _QuantumListener:
    endpoint: Endpoint
    """The listening endpoint."""
    ordered: bool
    """Delivery order for accepted connections' messages."""

    @property
    def port(self) -> int:
        return int(self.endpoint.local_address[1])

    async def accept(self) -> MessagePipe:
        return _QuantumPipe(await self.endpoint.accept(), ordered=self.ordered)


@attrs.frozen(kw_only=True)
class QuantumContender:
    """AetherFlow's Quantum transport."""

    ordered: bool = False
    """Send messages ordered (head-of-line blocking) instead of unordered."""
    fec: str = "auto"
    """QuantumConfig.fec: "auto" (adaptive parity) or "off" (what FEC costs and buys, side by side)."""
    backend: str = "trio"
    """Quantum's reference event loop."""

    @property
    def name(self) -> str:
        return "quantum" + ("-ordered" if self.ordered else "") + ("-nofec" if self.fec == "off" else "")

    @property
    def description(self) -> str:
        order = "ordered" if self.ordered else "unordered"
        return f"Quantum ({_congestion_control()}, FEC {self.fec}), {order} messages"

    def _config(self) -> QuantumConfig:
        return QuantumConfig(congestion_control=_congestion_control(), fec=self.fec)

    @contextlib.asynccontextmanager
    async def listen(self, host: str) -> AsyncIterator[Listener]:
        async with open_endpoint((host, 0), config=self._config()) as endpoint:
            yield _QuantumListener(endpoint=endpoint, ordered=self.ordered)

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[MessagePipe]:
        # Bind where the route to the server starts: loopback stays on loopback.
        local = "127.0.0.1" if host.startswith("127.") else "0.0.0.0"
        async with open_endpoint((local, 0), config=self._config(), accept=False) as endpoint:
            connection = await endpoint.connect((host, port))
            try:
                yield _QuantumPipe(connection, ordered=self.ordered)
            finally:
                await connection.aclose()
