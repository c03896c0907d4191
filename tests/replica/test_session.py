"""The replica over a read-only session on real Quantum: writes stop at the session and at the replica."""

from __future__ import annotations

import random
import time

import anyio

from aetherflow_sdk import quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.replica import ReplicaSync, is_write_message
from aetherflow_sdk.replica._wire import encode_sync_step1, encode_sync_update
from aetherflow_sdk.session import (
    Permission,
    SessionChannel,
    SessionManager,
    SessionServer,
    TokenVerifier,
    open_session,
    share_ticket,
)

from .conftest import make_replica
from .test_shell import wait_until


async def test_read_only_session_receives_but_cannot_write(rng: random.Random) -> None:
    owner_identity = Identity.generate()
    owner, reader = make_replica(rng, "notes"), make_replica(rng, "notes")
    owner.insert(0, "owner's text")
    verifier = TokenVerifier([owner_identity.node_id])
    server = SessionServer(SessionManager(), verifier, is_write=is_write_message)
    opened: list[SessionChannel] = []
    async with (
        quantum.open_endpoint(("127.0.0.1", 0), identity=owner_identity) as owner_endpoint,
        quantum.open_endpoint(("127.0.0.1", 0), accept=False) as reader_endpoint,
        ReplicaSync(owner) as sync_owner,
        ReplicaSync(reader) as sync_reader,
        anyio.create_task_group() as tg,
    ):

        async def serve_owner() -> None:
            connection = await owner_endpoint.accept()
            async with server.accept(connection) as session:
                opened.append(session)
                await sync_owner.serve(session, can_write=session.permission is not Permission.READ_ONLY)

        tg.start_soon(serve_owner)
        tg.start_soon(server.run_timers)
        ticket = share_ticket(
            owner_identity,
            document="notes",
            user="bob",
            permission="ro",
            expires_in=3600,
            now=time.time(),
            direct=(owner_endpoint.local_address,),
        )
        connection = await reader_endpoint.connect(ticket.direct[0], peer_id=ticket.issuer)
        async with open_session(connection, document=ticket.document, token=ticket.token) as session:
            assert session.permission is Permission.READ_ONLY
            tg.start_soon(sync_reader.serve, session)
            syncs = (sync_owner, sync_reader)
            await wait_until(lambda: reader.text == "owner's text", 10, "reader got the text", *syncs)
            reader.insert(0, "vandal: ")  # a well-behaved reader keeps it local
            owner.insert(len(owner), "!")
            await wait_until(lambda: reader.text == "vandal: owner's text!", 10, "live update", *syncs)
            # A misbehaving reader writes anyway: the session layer stops it before the replica.
            received = sync_owner.protocol.statistics().messages_received
            await session.send(encode_sync_update(reader.encode_update()))
            await session.send(encode_sync_step1(reader.state_vector()))  # a read, after it (ordered)
            await wait_until(
                lambda: sync_owner.protocol.statistics().messages_received > received,
                10,
                "the read behind the write arrived",
                *syncs,
            )
            assert server.statistics().writes_denied == 1
            # ... and the write never reached the replica's protocol:
            assert sync_owner.protocol.statistics().messages_received == received + 1
            assert owner.text == "owner's text!"
            tg.cancel_scope.cancel()
