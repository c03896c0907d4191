"""The persistence peer: a relay that also hosts documents, by running a node beside it.

Rules:

1. **One identity.** The relay's node is an ordinary :func:`aetherflow_node.open_node` node on its
   own UDP socket (the serve port), with the relay's key: the same node ID on both sockets. Its
   store, compaction and durability are the node's; nothing here writes a byte of a document.
2. **Which documents.** A registered node hands the relay a ticket (SERVE). The relay's node
   joins the document with it if the ticket verifies (issuer's signature, expiry, a holder bound
   to this relay if any) *and* either the operator allows the document (``--serve DOC_ID``) or
   the ticket's permission is ``serve`` bound to this relay's node ID (``aetherflow share --perm
   serve --holder RELAY_ID``). An allowed document needs an ``rw`` or ``serve`` ticket: a
   read-only holder could not pass updates on. :func:`check_serve_ticket` decides, sans-I/O.
3. **Bounded.** At most ``max_documents`` documents; each has a byte quota (``quota_bytes``,
   its stored snapshot plus update log): once a document reaches it, remote updates for it
   are refused and counted (the peer's session goes on), and its statistics say so.
4. **It dials nobody a ticket names.** The holders link to it (they learn its address from their
   relay); it joins with the ticket's token only, so a SERVE cannot aim the relay's handshakes
   at an address of the sender's choosing. It dials only the holders it has met, a few times.
5. **Across restarts** the node reopens, from its catalog, the documents it held by a serve
   ticket or that are still allowed; the holders then find it again through their relay.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

import anyio
import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aetherflow_node import Node, open_node
from aetherflow_node._relay_wire import Address, ServeCode, Served
from aetherflow_sdk import quantum
from aetherflow_sdk._errors import AetherFlowError, AuthError
from aetherflow_sdk._identity import format_node_id
from aetherflow_sdk.session import InvalidTicket, Permission, Ticket, TokenVerifier

logger = logging.getLogger("aetherflow.relay.serve")

DEFAULT_MAX_DOCUMENTS: Final = 1000


def _counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


@attrs.frozen(kw_only=True)
class ServeConfig:
    """What a persistence peer hosts."""

    allowed: frozenset[str] = frozenset()
    """Document IDs the operator allows (``--serve``), with any ``rw`` or ``serve`` ticket."""
    quota_bytes: int | None = None
    """Stored bytes per document past which its remote updates are refused; None: no quota."""
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    """Documents hosted at most; SERVE for one more is refused (FULL)."""

    def __attrs_post_init__(self) -> None:
        if self.quota_bytes is not None and self.quota_bytes <= 0:
            raise AetherFlowError(f"the per-document quota must be > 0 bytes, got {self.quota_bytes}")
        if self.max_documents <= 0:
            raise AetherFlowError(f"max_documents must be > 0, got {self.max_documents}")


@attrs.frozen(kw_only=True)
class ServedDocument:
    """One hosted document, as metrics read it."""

    doc_id: str
    name: str
    storage_bytes: int
    """Its snapshot plus update log in the node's store."""
    over_quota: bool
    quota_refusals: int
    """Remote updates refused because it was over its quota."""
    peers: int
    """Holders syncing it with the persistence peer now."""


@attrs.frozen(kw_only=True)
class HostStatistics:
    """What the persistence peer holds and has done."""

    documents: int
    """Documents served now."""
    storage_bytes: int
    """Their stored bytes, summed."""
    quota_bytes: int | None
    quota_refusals: int
    """Remote updates refused over quota, all documents."""
    serve_accepted: int
    """SERVE requests accepted (a repeated one for a served document counts again)."""
    serve_refused: Mapping[str, int] = attrs.field(converter=_counts)
    """SERVE requests refused, by :class:`ServeCode` name."""
    served: tuple[ServedDocument, ...]


def check_serve_ticket(text: str, *, relay_id: bytes, allowed: Iterable[str], now: float) -> Ticket | Served:
    """The ticket if this relay's node may host its document with it (rule 2), else the refusal."""
    try:
        ticket = Ticket.parse(text)
    except InvalidTicket as exc:
        return Served(document="", code=ServeCode.BAD_TICKET, reason=str(exc))
    doc = ticket.document
    if ticket.issuer == relay_id:
        return Served(document=doc, code=ServeCode.BAD_TICKET, reason="a ticket issued by this relay itself")
    verifier = TokenVerifier()
    verifier.trust_for_document(doc, ticket.issuer)
    try:
        claims = verifier.verify(ticket.token, document=doc, now=now, holder=relay_id)
    except AuthError as exc:
        return Served(document=doc, code=ServeCode.BAD_TICKET, reason=f"{exc.reason}: {exc}")
    if claims.permission is Permission.SERVE:
        if claims.holder != relay_id:
            return Served(
                document=doc, code=ServeCode.BAD_TICKET,
                reason=f"a serve ticket must be bound to this relay (--holder {format_node_id(relay_id)})",
            )  # fmt: skip
        return ticket
    if doc not in set(allowed):
        return Served(
            document=doc, code=ServeCode.NOT_ALLOWED,
            reason=f"document {doc} is not on this relay's --serve list; share it with --perm serve"
            f" --holder {format_node_id(relay_id)}",
        )  # fmt: skip
    if not claims.permission.writes:
        return Served(
            document=doc, code=ServeCode.NOT_ALLOWED,
            reason="a read-only ticket: the persistence peer could not pass updates on",
        )  # fmt: skip
    return ticket


class DocumentHost:
    """The relay's node and what it serves (see the module's rules). Made by :func:`open_document_host`."""

    def __init__(self, node: Node, config: ServeConfig) -> None:
        self.node = node
        self.config = config
        self._accepted = 0
        self._refused = dict.fromkeys((c.name for c in ServeCode if c is not ServeCode.ACCEPTED), 0)
        self._lock = anyio.Lock()  # one SERVE at a time: two for one document must not open it twice

    @property
    def address(self) -> Address:
        """The node's bound UDP address (what REGISTERED tells the relay's clients)."""
        return self.node.address

    def _may_serve(self, doc_id: str, permission: Permission) -> bool:
        return permission is Permission.SERVE or (doc_id in self.config.allowed and permission.writes)

    async def reopen(self) -> int:
        """Open every document of the catalog this node still serves (rule 4); returns how many."""
        opened = 0
        for record in self.node.catalog.documents():
            if opened >= self.config.max_documents:
                break
            if self._may_serve(record.doc_id, record.permission):
                try:
                    document = await self.node.open_document(record.doc_id)
                except AetherFlowError as exc:
                    logger.warning("cannot reopen a served document", extra={"doc": record.doc_id,
                                                                            "error": str(exc)})  # fmt: skip
                    continue
                document.quota_bytes = self.config.quota_bytes
                opened += 1
        return opened

    def _refuse(self, answer: Served) -> Served:
        self._refused[answer.code.name] += 1
        logger.info("SERVE refused", extra={"doc": answer.document, "code": answer.code.name,
                                            "reason": answer.reason})  # fmt: skip
        return answer

    async def handle(self, ticket_text: str) -> Served:
        """Answer one SERVE: join the ticket's document if rule 2 allows it."""
        async with self._lock:
            return await self._handle(ticket_text)

    async def _handle(self, ticket_text: str) -> Served:
        checked = check_serve_ticket(
            ticket_text, relay_id=self.node.identity.node_id, allowed=self.config.allowed, now=time.time()
        )
        if isinstance(checked, Served):
            return self._refuse(checked)
        doc_id = checked.document
        served = {d.doc_id for d in self.node.documents}
        if doc_id not in served and len(served) >= self.config.max_documents:
            return self._refuse(Served(
                document=doc_id, code=ServeCode.FULL,
                reason=f"this relay serves its maximum of {self.config.max_documents} documents",
            ))  # fmt: skip
        try:
            # Without the ticket's addresses: the holders come to the persistence peer, and a SERVE
            # must not make the relay send handshakes, for good, to addresses the sender chose.
            document = await self.node.open_document(attrs.evolve(checked, direct=(), relays=()).encode())
        except (AetherFlowError, OSError) as exc:
            return self._refuse(Served(document=doc_id, code=ServeCode.FAILED, reason=str(exc)))
        record = self.node.catalog.document(doc_id)
        if record is not None and record.token != document.record.token:
            # A newer ticket for a document served already (a renewal before its token expires):
            # the catalog has it; sessions from now on present it.
            document.record = record
        document.quota_bytes = self.config.quota_bytes
        self._accepted += 1
        logger.info("serving a document", extra={"doc": doc_id, "issuer": format_node_id(checked.issuer)})
        return Served(document=doc_id, code=ServeCode.ACCEPTED, reason="")

    def statistics(self) -> HostStatistics:
        served = []
        for document in self.node.documents:
            stats = document.statistics()
            served.append(
                ServedDocument(
                    doc_id=document.doc_id,
                    name=document.name,
                    storage_bytes=stats.storage_bytes,
                    over_quota=stats.over_quota,
                    quota_refusals=stats.quota_refusals,
                    peers=stats.peers,
                )
            )
        return HostStatistics(
            documents=len(served),
            storage_bytes=sum(d.storage_bytes for d in served),
            quota_bytes=self.config.quota_bytes,
            quota_refusals=sum(d.quota_refusals for d in served),
            serve_accepted=self._accepted,
            serve_refused=self._refused,
            served=tuple(served),
        )


class ServeCollector(Collector):
    """:class:`HostStatistics` as Prometheus metrics (``aetherflow_relay_*`` beside the relay's).

    Per-document series carry the document ID as a label; ``max_documents`` bounds them.
    """

    def __init__(self, statistics: Callable[[], HostStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        yield GaugeMetricFamily("aetherflow_relay_documents_served", "Documents the persistence peer hosts",
                                value=s.documents)  # fmt: skip
        yield GaugeMetricFamily("aetherflow_relay_storage_bytes", "Stored bytes of the hosted documents",
                                value=s.storage_bytes)  # fmt: skip
        if s.quota_bytes is not None:
            yield GaugeMetricFamily("aetherflow_relay_quota_bytes", "Byte quota per hosted document",
                                    value=s.quota_bytes)  # fmt: skip
        yield CounterMetricFamily("aetherflow_relay_quota_refusals", "Remote updates refused over quota",
                                  value=s.quota_refusals)  # fmt: skip
        label = ["document"]
        per_doc = GaugeMetricFamily(
            "aetherflow_relay_document_storage_bytes", "Stored bytes of one hosted document", labels=label
        )
        over = GaugeMetricFamily(
            "aetherflow_relay_document_over_quota", "1 while a hosted document is at its quota", labels=label
        )
        refused = CounterMetricFamily(
            "aetherflow_relay_document_quota_refusals", "Updates refused over quota", labels=label
        )
        for document in s.served:
            per_doc.add_metric([document.doc_id], document.storage_bytes)
            over.add_metric([document.doc_id], int(document.over_quota))
            refused.add_metric([document.doc_id], document.quota_refusals)
        yield per_doc
        yield over
        yield refused
        requests = CounterMetricFamily("aetherflow_relay_serve_requests", "SERVE requests by result",
                                       labels=["result"])  # fmt: skip
        requests.add_metric(["accepted"], s.serve_accepted)
        for code, count in sorted(s.serve_refused.items()):
            requests.add_metric([code.lower()], count)
        yield requests


@contextlib.asynccontextmanager
async def open_document_host(
    data_dir: Path,
    listen: Address,
    *,
    config: ServeConfig | None = None,
    quantum_config: quantum.QuantumConfig | None = None,
) -> AsyncIterator[DocumentHost]:
    """Run the relay's node on ``listen`` with the data directory ``data_dir`` (its key is
    ``DATA/identity.key``: give the relay the same identity) until the block ends."""
    async with open_node(
        data_dir=data_dir, name="relay", listen=listen, discovery=False, config=quantum_config
    ) as node:
        host = DocumentHost(node, config or ServeConfig())
        reopened = await host.reopen()
        if reopened:
            logger.info("reopened served documents", extra={"documents": reopened})
        yield host
