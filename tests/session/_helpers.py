"""Helpers for the session tests: identities, a settable clock, deterministic session IDs."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable

from aetherflow_sdk import ConnectionClosed
from aetherflow_sdk.session import Permission, SessionChannel, SessionManager

T0 = 1_800_000_000.0  # a fixed Unix time (2027-01-15): tests never read the wall clock


def counting_ids() -> Callable[[], uuid.UUID]:
    """Deterministic, increasing session IDs (UUIDv7 layout is not needed by the manager)."""
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=(T0_MS << 80) | (0x7 << 76) | (0b10 << 62) | next(counter))


T0_MS = int(T0 * 1000)


def fixed_random(seed: int) -> Callable[[int], bytes]:
    """Seeded bytes instead of os.urandom, so a failure replays exactly."""
    import random

    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def create_session(
    manager: SessionManager,
    *,
    user: str = "alice",
    connection_id: object = "c1",
    now: float = T0,
    permission: Permission = Permission.READ_WRITE,
    document: str = "doc-1",
    not_after: float = T0 + 86_400,
    holder: bytes = b"\x01" * 32,
) -> uuid.UUID:
    session, _ = manager.create(
        user=user,
        document=document,
        permission=permission,
        holder=holder,
        issuer=b"\x09" * 32,
        token_id=f"jti-{connection_id}",
        not_after=not_after,
        connection_id=connection_id,  # type: ignore[arg-type]
        now=now,
    )
    return session.session_id


def recording_handler(received: list[bytes]) -> Callable[[SessionChannel], Awaitable[None]]:
    """A server handler that records every message and acknowledges it with ``ack:`` + message."""

    async def record(session: SessionChannel) -> None:
        try:
            while True:
                message = await session.receive()
                received.append(message)
                await session.send(b"ack:" + message)
        except ConnectionClosed:
            pass

    return record
