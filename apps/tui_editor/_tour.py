"""The scripted peers of ``aetherflow demo``: typists replaying a real editing trace, and a latency probe.

The trace is the start of automerge-paper (josephg/editing-traces: a LaTeX paper typed
keystroke by keystroke), shipped in ``traces/``. Each typist replays it into its own
section of the shared document, through its own node, at a person's pace, and shows
its cursor (presence) as it goes.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import random
import statistics
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from aetherflow_node import Document
    from aetherflow_sdk.replica import Replica

TRACE = "traces/automerge-paper-start.json.gz"
Patch = tuple[int, int, str]


def load_trace() -> list[Patch]:
    """The shipped slice: ``(position, deleted, inserted)`` patches, applied in order from ``""``."""
    raw = importlib.resources.files("tui_editor").joinpath(TRACE).read_bytes()
    data = json.loads(gzip.decompress(raw))
    return [(int(p), int(d), str(s)) for p, d, s in data["patches"]]


def section_header(name: str) -> str:
    return f"## {name}\n"


class LatencyProbe:
    """Edit-to-apply latency between nodes in one process: the typist stamps each insert with
    its Yjs clock; the watched replica reports when its state vector covers that clock."""

    def __init__(self) -> None:
        self._sent: dict[int, list[tuple[int, float]]] = {}
        self._seen: dict[int, int] = {}
        self.samples: list[float] = []

    def sent(self, client_id: int, clock: int) -> None:
        self._sent.setdefault(client_id, []).append((clock, time.perf_counter()))

    def watch(self, replica: Replica) -> None:
        def on_update(update: bytes, origin: object, local: bool) -> None:
            if local:
                return
            now = time.perf_counter()
            vector = replica.state_vector_dict()
            for client, sent in self._sent.items():
                index = self._seen.get(client, 0)
                have = vector.get(client, 0)
                while index < len(sent) and sent[index][0] <= have:
                    self.samples.append(now - sent[index][1])
                    index += 1
                self._seen[client] = index

        replica.subscribe_updates(on_update)

    def percentiles(self) -> tuple[float, float] | None:
        """(p50, p99) in seconds, or None without samples."""
        if len(self.samples) < 2:
            return None
        cuts = statistics.quantiles(self.samples, n=100, method="inclusive")
        return cuts[49], cuts[98]


async def type_trace(
    document: Document,
    name: str,
    color: str,
    patches: list[Patch],
    edits: int,
    pause: tuple[float, float],
    rng: random.Random,
    probe: LatencyProbe,
    typed: dict[str, int],
) -> None:
    """Replay ``edits`` patches into ``name``'s section, counting them in ``typed[name]``.

    Positions are relative to the section's start, a sticky index on the header's line
    break, so the section follows the text while others edit above it.
    """
    replica = document.replica
    header = section_header(name)
    start = replica.text.index(header) + len(header)
    anchor = replica.sticky_index(start - 1, before=False)  # on the header's "\n"
    typed[name] = 0
    for position, deleted, inserted in patches[:edits]:
        base = replica.resolve_sticky_index(anchor)
        if base is None:
            break  # someone deleted our heading: stop typing
        at = min(base + 1 + position, len(replica))
        deleted = min(deleted, len(replica) - at)
        document.replace(at, deleted, inserted)
        if inserted:
            probe.sent(replica.client_id, replica.state_vector_dict()[replica.client_id])
        document.presence.set(cursor=at + len(inserted), name=name, color=color)
        typed[name] += 1
        await anyio.sleep(rng.uniform(*pause))
