"""Sharing a document by ticket: token, session handshake, read-only, resumption -- on loopback.

Run it from the repository root::

    .venv/bin/python examples/session_ticket.py

The owner's node runs a session server over Quantum and prints a read-only
ticket for "bob". Bob's node parses the ticket, connects to the address in it
(pinning the owner's node ID), opens a session with the token, and tries to
write: the server drops the write and tells him. Then Bob's connection drops,
and he resumes the same session on a new connection, with no token.
"""

from __future__ import annotations

import time

import trio

from aetherflow_sdk import AuthError, ConnectionClosed, quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import (
    SessionChannel,
    SessionManager,
    SessionServer,
    Ticket,
    TokenVerifier,
    open_session,
    share_ticket,
)

READ = b"read: what is in the document?"
WRITE = b"write: change it"


def is_write(payload: bytes) -> bool:
    """The application decides what a write is (the replica provides one for Yjs messages)."""
    return payload.startswith(b"write")


async def handle(session: SessionChannel) -> None:
    print(f"owner: session {session.session_id} for {session.user!r} ({session.permission.value})")
    try:
        while True:
            message = await session.receive()
            print(f"owner: received {message!r}")
            await session.send(b"the document says hello")
    except ConnectionClosed:
        pass


async def serve(endpoint: quantum.Endpoint, server: SessionServer) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            conn = await endpoint.accept()
            nursery.start_soon(serve_one, server, conn)


async def serve_one(server: SessionServer, conn: quantum.Connection) -> None:
    try:
        async with server.accept(conn) as session:
            await handle(session)
    except AuthError as exc:
        print(f"owner: refused a session ({exc.reason})")


async def main() -> None:
    owner = Identity.generate()
    server = SessionServer(SessionManager(), TokenVerifier([owner.node_id]), is_write=is_write)
    async with (
        quantum.open_endpoint(("127.0.0.1", 0), identity=owner) as owner_endpoint,
        quantum.open_endpoint(("127.0.0.1", 0), accept=False) as bob_endpoint,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, owner_endpoint, server)
        nursery.start_soon(server.run_timers)

        host, port = owner_endpoint.local_address
        text = share_ticket(
            owner, document="notes", user="bob", permission="ro", expires_in=3600,
            now=time.time(), direct=((host, port),),
        ).encode()  # fmt: skip
        print(f"owner: ticket for bob ({len(text)} characters): {text[:24]}...")

        ticket = Ticket.parse(text)
        conn = await bob_endpoint.connect(ticket.direct[0], peer_id=ticket.issuer)
        async with open_session(conn, document=ticket.document, token=ticket.token) as session:
            print(f"bob: session open, permission {session.permission.value}")
            await session.send(WRITE)
            await session.send(READ)
            print(f"bob: got {await session.receive()!r}")
            print(f"bob: writes denied so far: {session.statistics().writes_denied}")
            keep = session.resumption
            await conn.aclose()  # the connection drops; the session waits on the server
        print("bob: connection dropped")

        conn = await bob_endpoint.connect(ticket.direct[0], peer_id=ticket.issuer)
        async with open_session(conn, document=ticket.document, resume=keep) as session:
            same = "the same" if session.session_id == keep.session_id else "a different"
            print(f"bob: resumed {same} session without a token")
            await session.send(READ)
            print(f"bob: got {await session.receive()!r}")

        statistics = server.statistics()
        print(
            f"owner: accepted {statistics.accepted}, resumed {statistics.resumed},"
            f" rejected {statistics.rejected}, writes denied {statistics.writes_denied}"
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
