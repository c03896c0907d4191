"""A hostile peer -- garbage on the document channel, a flood of updates, read-only writes -- is
dropped or throttled and counted, while the honest peers keep syncing."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import anyio
from pycrdt import Doc, Text

from aetherflow_node import Limits, open_node
from aetherflow_node._catalog import DocumentRecord
from aetherflow_sdk import ConnectionClosed, quantum
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.replica._wire import encode_sync_update
from aetherflow_sdk.session import Permission, Ticket, open_session

from ._helpers import loopback, wait_until


def _channel_name(ticket: Ticket) -> bytes:
    assert ticket.secret is not None
    record = DocumentRecord(
        doc_id=ticket.document,
        name="",
        issuer=ticket.issuer,
        secret=ticket.secret,
        token="t",
        permission=Permission.READ_ONLY,
    )
    return record.channel_name


def _update(text: str) -> bytes:
    """A real Yjs update from a stranger's document: valid bytes the receiver may apply."""
    doc = Doc()
    doc["text"] = shared = Text()
    shared += text
    return bytes(doc.get_update())


async def _hostile(ticket_text: str, attack) -> None:  # type: ignore[no-untyped-def]
    """Join like an honest node (real token, real session), then run ``attack(session)``."""
    ticket = Ticket.parse(ticket_text)
    async with quantum.open_endpoint(("127.0.0.1", 0), identity=Identity.generate()) as endpoint:
        endpoint.set_channel_filter(lambda peer, name: False)  # it opens channels, it takes none
        conn = await endpoint.connect(ticket.direct[0], peer_id=ticket.issuer)
        attacked = False
        for _ in range(10):  # the holder refuses ours while its own open to us is pending: retry
            channel = await conn.open_channel(_channel_name(ticket))
            try:
                async with open_session(channel, document=ticket.document, token=ticket.token) as session:
                    await session.receive()  # the holder's own token
                    attacked = True
                    with contextlib.suppress(ConnectionClosed):  # dropped: what we came to see
                        await attack(session)
            except* ConnectionClosed:
                pass
            if attacked:
                return
            await anyio.sleep(0.05)
        raise AssertionError("the holder never took our channel")


async def test_garbage_gets_the_peer_dropped_and_others_keep_syncing(tmp_path: Path) -> None:
    async with (
        open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
    ):
        doc_a = await a.open_document("doc")
        doc_b = await b.open_document(a.share(doc_a, user="b"))

        async def garbage(session) -> None:  # type: ignore[no-untyped-def]
            for i in range(200):  # bounded; the holder drops us long before the end
                await session.send(b"\xff\xfe not a sync message %d" % i)
                doc_b.insert(0, ".")  # an honest peer keeps typing meanwhile

        await _hostile(a.share(doc_a, user="mallory"), garbage)
        await wait_until(lambda: a.statistics().peers_dropped == 1, 10, "mallory dropped", a, b)
        assert a.mesh.counters["offences"] > Limits().max_strikes
        await wait_until(
            lambda: doc_a.text == doc_b.text and doc_a.text.startswith("."), 10, "a and b in sync", a, b
        )
        assert len(a.peers) == 1 and a.peers[0].name == "b"


async def test_a_flood_is_throttled_while_another_peer_syncs(tmp_path: Path) -> None:
    limits = Limits(messages_per_second=200, message_burst=20)
    async with (
        open_node(data_dir=tmp_path / "a", name="a", limits=limits, **loopback()) as a,  # type: ignore[arg-type]
        open_node(data_dir=tmp_path / "b", name="b", **loopback()) as b,  # type: ignore[arg-type]
    ):
        doc_a = await a.open_document("doc")
        doc_b = await b.open_document(a.share(doc_a, user="b"))
        await wait_until(lambda: bool(a.peers), 10, "b linked", a, b)
        seen: list[float] = []

        async def flood(session) -> None:  # type: ignore[no-untyped-def]
            for i in range(300):
                await session.send(encode_sync_update(_update(f"flood {i} ")))
            started = time.monotonic()
            doc_b.insert(0, "honest")
            await wait_until(lambda: "honest" in doc_a.text, 10, "b's edit crossed the flood", a, b)
            seen.append(time.monotonic() - started)

        await _hostile(a.share(doc_a, user="flooder"), flood)
        stats = a.statistics()
        assert stats.messages_throttled > 0
        assert seen, "b's edit arrived during the flood"


async def test_read_only_writes_are_dropped_and_counted(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path / "a", name="a", **loopback()) as a:  # type: ignore[arg-type]
        doc_a = await a.open_document("doc")
        doc_a.insert(0, "original")

        async def write(session) -> None:  # type: ignore[no-untyped-def]
            for i in range(5):
                await session.send(encode_sync_update(_update(f"vandal {i}")))
            await session.send(b"\x00\x00\x01\x00")  # sync step 1 (a read), behind the writes
            with anyio.fail_after(10):
                while session.statistics().writes_denied < 5:
                    await session.receive()

        await _hostile(a.share(doc_a, user="reader", perm="ro"), write)
        assert doc_a.text == "original"
        assert a._server.statistics().writes_denied == 5
