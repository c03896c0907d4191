"""The persistence peer: a relay with ``--data-dir`` hosts documents through its own node.

In one process here (SDK nodes, an in-process relay): hosting by serve ticket, catch-up while
the creator is offline, SERVE refusals, the byte quota. test_serve_processes.py does the
catch-up with real ``aetherflow relay`` processes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aetherflow_node import Node, ServeRefused, open_node
from aetherflow_node._relay_wire import ServeCode
from aetherflow_relay._serve import DocumentHost, ServeConfig, check_serve_ticket, open_document_host
from aetherflow_relay._shell import Relay, serve_relay
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session import Ticket, share_ticket

from ..node._helpers import loopback, wait_until


@contextlib.asynccontextmanager
async def hosting_relay(
    data_dir: Path, config: ServeConfig | None = None
) -> AsyncIterator[tuple[Relay, DocumentHost, str]]:
    async with (
        open_document_host(data_dir, ("127.0.0.1", 0), config=config) as host,
        serve_relay(("127.0.0.1", 0), identity=host.node.identity, host=host) as relay,
    ):
        yield relay, host, f"{format_node_id(relay.node_id)}@127.0.0.1:{relay.address[1]}"


def served_text(host: DocumentHost, doc_id: str) -> str:
    return next((d.text for d in host.node.documents if d.doc_id == doc_id), "")


async def registered(node: Node) -> None:
    assert node.home_relay is not None
    with anyio.fail_after(10):
        await node.home_relay.wait_registered()


async def test_a_document_hosted_on_the_relay_reaches_a_joiner_while_its_creator_is_offline(
    tmp_path: Path,
) -> None:
    async with hosting_relay(tmp_path / "relay") as (_, host, where):
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            await registered(alice)
            doc = await alice.open_document("notes")
            await alice.host_on_relay(doc)
            assert alice.address not in host.node.mesh._dialing_addresses  # alice comes to it
            doc.insert(0, "written by alice")
            ticket = alice.share(doc, user="bob", perm="rw")
            await wait_until(lambda: served_text(host, doc.doc_id) == "written by alice", 10,
                             "the relay has alice's edit", alice, host.node)  # fmt: skip
            doc_id = doc.doc_id
        await wait_until(lambda: not host.node.peers, 10, "the relay saw alice go", host.node)
        async with open_node(data_dir=tmp_path / "b", name="bob", relay=where, **loopback()) as bob:  # type: ignore[arg-type]
            doc_b = await bob.open_document(ticket)
            await wait_until(lambda: doc_b.text == "written by alice", 15, "bob caught up", bob, host.node)
            doc_b.insert(0, "bob: ")
            await wait_until(lambda: served_text(host, doc_id) == "bob: written by alice", 10,
                             "the relay has bob's edit", bob, host.node)  # fmt: skip
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            doc = await alice.open_document(doc_id)
            await wait_until(lambda: doc.text == "bob: written by alice", 15, "alice got bob's edit",
                             alice, host.node)  # fmt: skip
        # A joiner with no relay of its own adopts the ticket's (alice's home relay) and so finds
        # the persistence peer too, with alice offline again.
        assert ticket_relays(ticket)
        async with open_node(data_dir=tmp_path / "c", name="carol", **loopback()) as carol:  # type: ignore[arg-type]
            doc_c = await carol.open_document(ticket)
            await wait_until(lambda: doc_c.text == "bob: written by alice", 15, "carol caught up",
                             carol, host.node)  # fmt: skip
        stats = host.statistics()
        assert stats.documents == 1 and stats.serve_accepted == 1 and stats.storage_bytes > 0
        # Hosting again (a renewal) replaces the token the relay presents for the document.
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            doc = await alice.open_document(doc_id)
            served = next(d for d in host.node.documents if d.doc_id == doc_id)
            old_token = served.record.token
            await registered(alice)
            await alice.host_on_relay(doc, expires_in=2 * 365 * 86_400)
            assert served.record.token != old_token
            assert host.node.catalog.document(doc_id).token == served.record.token  # type: ignore[union-attr]
        assert host.statistics().serve_accepted == 2


def ticket_relays(text: str) -> tuple[str, ...]:
    return Ticket.parse(text).relays


# ------------------------------------------------------------------ which tickets a relay takes

RELAY = Identity.generate()
ALICE = Identity.generate()
DOC = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
NOW = 1_800_000_000.0


def _ticket(perm: str = "serve", *, holder: bytes | None = RELAY.node_id, now: float = NOW,
            expires_in: float = 3600, issuer: Identity = ALICE) -> str:  # fmt: skip
    return share_ticket(
        issuer, document=DOC, user="relay", permission=perm, expires_in=expires_in, now=now,
        direct=(("127.0.0.1", 9),), holder=holder,
    ).encode()  # fmt: skip


def _forged() -> str:
    """Alice's rw ticket for bob with its token's claims rewritten to serve for the relay."""
    import base64
    import json

    ticket = Ticket.parse(_ticket("rw", holder=None))
    head, body, signature = ticket.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(perm="serve", nid=format_node_id(RELAY.node_id))
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    import attrs

    return attrs.evolve(ticket, token=f"{head}.{body}.{signature}").encode()


@pytest.mark.parametrize(
    ("text", "allowed", "code", "why"),
    [
        (_ticket(), (), None, "a serve ticket for this relay"),
        (_ticket("rw", holder=None), (DOC,), None, "an allowed document with an rw ticket"),
        (_ticket("rw", holder=None), (), ServeCode.NOT_ALLOWED, "rw, not allowed"),
        (_ticket("ro", holder=None), (DOC,), ServeCode.NOT_ALLOWED, "read-only cannot pass updates on"),
        (_ticket("serve", holder=None), (), ServeCode.BAD_TICKET, "serve, bound to nobody"),
        (_ticket(holder=ALICE.node_id), (DOC,), ServeCode.BAD_TICKET, "for another holder"),
        (_ticket(now=NOW - 7200), (), ServeCode.BAD_TICKET, "expired"),
        (_forged(), (), ServeCode.BAD_TICKET, "forged (claims rewritten, signature kept)"),
        (_ticket(issuer=RELAY), (), ServeCode.BAD_TICKET, "issued by the relay itself"),
        ("af1notaticket", (), ServeCode.BAD_TICKET, "not a ticket"),
    ],
)
def test_which_tickets_a_relay_serves(
    text: str, allowed: tuple[str, ...], code: ServeCode | None, why: str
) -> None:
    got = check_serve_ticket(text, relay_id=RELAY.node_id, allowed=allowed, now=NOW)
    if code is None:
        assert isinstance(got, Ticket) and got.document == DOC, why
    else:
        assert not isinstance(got, Ticket) and got.code is code, (why, got)
        assert got.reason, why


async def test_serve_refusals_over_the_wire(tmp_path: Path) -> None:
    async with (
        hosting_relay(tmp_path / "relay") as (relay, host, where),
        open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice,  # type: ignore[arg-type]
    ):
        await registered(alice)
        assert alice.home_relay is not None and alice.home_relay.client is not None
        doc = await alice.open_document("notes")
        someone = format_node_id(Identity.generate().node_id)
        for ticket, match in (
            (alice.share(doc, user="x", perm="serve", holder=someone), "wrong_holder"),
            (
                share_ticket(
                    alice.identity,
                    document=doc.doc_id,
                    user="x",
                    permission="serve",
                    expires_in=3600,
                    now=time.time() - 7200,
                    holder=relay.node_id,
                ).encode(),
                "expired",
            ),
            (alice.share(doc, user="x", perm="rw"), "not on this relay's --serve list"),
        ):
            with pytest.raises(ServeRefused, match=match) as refused:
                await alice.home_relay.client.serve(ticket)
            assert refused.value.code in (ServeCode.BAD_TICKET, ServeCode.NOT_ALLOWED)
        assert host.node.documents == ()  # nothing was opened
        stats = host.statistics()
        assert stats.serve_refused["BAD_TICKET"] == 2 and stats.serve_refused["NOT_ALLOWED"] == 1
        assert relay.statistics().drops["bad_control"] == 0
    # A relay without --data-dir says so, in REGISTERED (no persistence peer) and to a SERVE.
    async with serve_relay(("127.0.0.1", 0)) as plain:
        where = f"{format_node_id(plain.node_id)}@127.0.0.1:{plain.address[1]}"
        async with open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice:  # type: ignore[arg-type]
            await registered(alice)
            assert alice.home_relay is not None and alice.home_relay.persistence_peer is None
            doc = await alice.open_document("notes")
            with pytest.raises(ServeRefused, match="hosts no documents") as refused:
                await alice.host_on_relay(doc)
            assert refused.value.code is ServeCode.NOT_HOSTING
            assert alice.home_relay.client is not None
            with pytest.raises(ServeRefused, match="not_hosting"):
                await alice.home_relay.client.serve(alice.share(doc, user="x", perm="rw"))


async def test_a_document_over_its_quota_is_refused_updates_and_another_is_not(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    big_text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000))
    async with (
        hosting_relay(tmp_path / "relay", ServeConfig(quota_bytes=2048)) as (_, host, where),
        open_node(data_dir=tmp_path / "a", name="alice", relay=where, **loopback()) as alice,  # type: ignore[arg-type]
    ):
        await registered(alice)
        big, small = await alice.open_document("big"), await alice.open_document("small")
        await alice.host_on_relay(big)
        await alice.host_on_relay(small)
        big.insert(0, big_text)  # one update, over the quota once stored
        small.insert(0, "a")
        await wait_until(
            lambda: served_text(host, big.doc_id) == big_text, 10, "big is served", alice, host.node
        )
        served_big = next(d for d in host.node.documents if d.doc_id == big.doc_id)
        await served_big.flush()
        assert served_big.statistics().over_quota and served_big.statistics().storage_bytes >= 2048
        link = host.node.mesh.links[alice.identity.node_id]
        big.insert(0, "refused ")
        small.insert(1, "bc")
        await wait_until(lambda: served_text(host, small.doc_id) == "abc", 10, "small still syncs",
                         alice, host.node)  # fmt: skip
        await wait_until(lambda: host.statistics().quota_refusals >= 1, 10, "refusal counted",
                         alice, host.node)  # fmt: skip
        assert served_text(host, big.doc_id) == big_text  # the refused update is not applied
        stats = host.statistics()
        by_id = {d.doc_id: d for d in stats.served}
        assert by_id[big.doc_id].over_quota and by_id[big.doc_id].quota_refusals >= 1
        assert not by_id[small.doc_id].over_quota and by_id[small.doc_id].quota_refusals == 0
        # Not an offence: alice's link lives on.
        assert host.node.mesh.counters["offences"] == 0
        assert host.node.mesh.links[alice.identity.node_id] is link and not link.closed.is_set()
        assert {big.doc_id, small.doc_id} <= set(link.docs)  # both documents still sync on it
        assert big.statistics().peers == 1
