"""Results of ``aetherflow bench transport``: the record, the table and the plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``fraction`` in (0, 1])."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@attrs.frozen(kw_only=True)
class Condition:
    """The network a run crossed and the workload it carried."""

    workload: str
    """``messages`` or ``bulk``."""
    delay_ms: float
    """One-way delay per direction (ms); 0 on loopback."""
    loss: float
    """Random loss probability per direction."""
    rate_mbit: float
    """Bottleneck rate per direction (Mbit/s); 0 means unlimited."""
    queue: int
    """Drop-tail queue depth (packets)."""
    jitter_ms: float
    """Extra uniform delay 0..jitter per packet (ms); reorders packets."""
    seed: int
    """Seed of the emulator's loss."""
    loopback: bool
    """True: no emulator, both peers on 127.0.0.1."""

    def label(self) -> str:
        """A short human label, e.g. ``messages 20ms 2% loss``."""
        if self.loopback:
            return f"{self.workload} loopback"
        parts = [self.workload, f"{self.delay_ms:g}ms", f"{self.loss * 100:g}% loss"]
        if self.rate_mbit:
            parts.append(f"{self.rate_mbit:g}Mbit/s")
        if self.jitter_ms:
            parts.append(f"+0-{self.jitter_ms:g}ms jitter")
        return " ".join(parts)


@attrs.frozen(kw_only=True)
class RunResult:
    """One contender under one condition (one JSON record, plus the raw latencies)."""

    contender: str
    """Contender name."""
    description: str
    """What exactly ran."""
    condition: Condition
    """Network and workload."""
    sent: int
    """Messages (or bulk chunks) the sender sent."""
    received: int
    """Distinct messages (or chunks) the receiver got."""
    latencies_ms: tuple[float, ...]
    """One-way latency of every received message (messages workload), in ms."""
    goodput_mbit: float | None
    """Application bytes per second from the sender's start to the last byte, in Mbit/s (bulk)."""
    app_bytes: int
    """Application bytes the sender sent."""
    wire_bytes: int | None
    """IP bytes both peers put on the emulated link (both directions; None on loopback)."""
    retransmits: int | None
    """Transport retransmissions at the sender (TCP_INFO total_retrans, QUIC lost packets ...)."""
    fec_recoveries: int | None
    """Packets the receiver rebuilt from parity (Quantum only)."""
    dropped_loss: int | None
    """Packets the emulator dropped at random, both directions."""
    dropped_queue: int | None
    """Packets the emulator's bottleneck queue dropped, both directions."""
    error: str | None
    """Why the run failed, if it did."""

    def latency_summary(self) -> dict[str, float] | None:
        """p50/p90/p99/max one-way latency in ms, or None without samples."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return {
            "p50": percentile(ordered, 0.50),
            "p90": percentile(ordered, 0.90),
            "p99": percentile(ordered, 0.99),
            "max": ordered[-1],
        }

    @property
    def wire_ratio(self) -> float | None:
        """Wire bytes ÷ application bytes (headers, ACKs, retransmissions, parity)."""
        if self.wire_bytes is None or not self.app_bytes:
            return None
        return self.wire_bytes / self.app_bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON record (raw latencies left out)."""
        return {
            "contender": self.contender,
            "description": self.description,
            "condition": attrs.asdict(self.condition),
            "sent": self.sent,
            "received": self.received,
            "complete": self.error is None and self.received == self.sent,
            "latency_ms": self.latency_summary(),
            "goodput_mbit": self.goodput_mbit,
            "app_bytes": self.app_bytes,
            "wire_bytes": self.wire_bytes,
            "wire_ratio": self.wire_ratio,
            "retransmits": self.retransmits,
            "fec_recoveries": self.fec_recoveries,
            "dropped_loss": self.dropped_loss,
            "dropped_queue": self.dropped_queue,
            "error": self.error,
        }


def _cell(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def format_table(results: Sequence[RunResult]) -> str:
    """The terminal table: one line per run."""
    header = (
        f"{'condition':<30} {'contender':<16} {'recv':>9} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} "
        f"{'Mbit/s':>8} {'wire/app':>8} {'retx':>6} {'fec':>5}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        summary = result.latency_summary() or {}
        received = f"{result.received}/{result.sent}"
        lines.append(
            f"{result.condition.label():<30} {result.contender:<16} {received:>9} "
            f"{_cell(summary.get('p50')):>7} {_cell(summary.get('p90')):>7} {_cell(summary.get('p99')):>7} "
            f"{_cell(summary.get('max')):>7} {_cell(result.goodput_mbit):>8} "
            f"{_cell(result.wire_ratio, 2):>8} "
            f"{_cell(result.retransmits):>6} {_cell(result.fec_recoveries):>5}"
            + (f"  ERROR: {result.error}" if result.error else "")
        )
    lines.append("latency: one-way, ms; Mbit/s: goodput; wire/app: IP bytes on the link ÷ application bytes")
    return "\n".join(lines)


def plot(results: Sequence[RunResult], path: Path) -> None:
    """Latency CDFs per contender (one panel per messages condition) and goodput bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    message_conditions = list(dict.fromkeys(r.condition for r in results if r.latencies_ms))
    bulk = [r for r in results if r.condition.workload == "bulk"]
    panels = len(message_conditions) + (1 if bulk else 0)
    if panels == 0:
        return
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    flat = [axis for row in axes for axis in row]
    # One colour per contender across every panel.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r.contender for r in results))
    colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    for axis, condition in zip(flat, message_conditions, strict=False):
        for result in results:
            if result.condition == condition and result.latencies_ms:
                ordered = sorted(result.latencies_ms)
                fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
                axis.plot(ordered, fractions, label=result.contender, color=colour[result.contender])
        axis.set_title(condition.label())
        axis.set_xlabel("one-way latency (ms)")
        axis.set_ylabel("fraction of messages")
        axis.set_xscale("log")
        # Labels at 1-2-5 steps read better than powers of ten for latencies in ms.
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    if bulk:
        axis = flat[len(message_conditions)]
        labels = [f"{r.condition.label()}\n{r.contender}" for r in bulk]
        values = [r.goodput_mbit or 0.0 for r in bulk]
        axis.bar(range(len(bulk)), values, color=[colour[r.contender] for r in bulk])
        for x, value in enumerate(values):
            axis.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom", fontsize="x-small")
        axis.set_xticks(range(len(bulk)), labels, rotation=60, ha="right", fontsize="x-small")
        axis.set_ylabel("goodput (Mbit/s)")
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_title("bulk goodput")
    for axis in flat[panels:]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
