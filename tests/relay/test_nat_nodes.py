"""Two `aetherflow node` processes, each behind its own real Linux NAT (network namespaces),
with a real `aetherflow relay` process as their home relay, syncing a document.

A serves the document and shares it (the ticket names its relay); B joins by the ticket, which
it can only reach through the relay: A's direct addresses are private. Each node has a local
editor (an SDK node in a process, linked to its own node over loopback) that makes the edits.

* cone NAT (plain MASQUERADE): the punch through the relay succeeds, B reports the path as
  "direct", the relay's forwarding counters stop growing, and after a conntrack flush in both
  NATs the same connection carries the edits on;
* symmetric NAT (``--random-fully``): the punch fails (at once, and at every upgrade interval),
  the link stays "relayed" and carries the edits both ways, through a conntrack flush in both
  NATs too (new public ports: the relay follows them); the relay is killed with SIGKILL mid-edit
  and started again (same key, same port): the nodes register again, and every durable edit
  reaches the other side.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from aetherflow_sdk.session import Ticket
from aetherflow_sdk.testing import NatTopology, nat_available, nat_topology
from aetherflow_sdk.testing._nat import PUBLIC_ADDRESS
from aetherflow_sdk.testing._netns import Namespace

pytestmark = [pytest.mark.netns, pytest.mark.skipif(nat_available() is not None, reason=str(nat_available()))]

CLI = [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())"]
EDITOR = str(Path(__file__).parent.parent / "node" / "_node_proc.py")
RELAY_PORT = 3340
RELAY_METRICS = "127.0.0.1:9465"
NODE_METRICS = "127.0.0.1:9470"
WAIT = 30.0
"""Generous bound on every wait (the machine may be loaded); the waits end as soon as they can."""


class Proc:
    """A process in a namespace; its stdout lines are read by a thread, waited for with a deadline."""

    def __init__(self, namespace: Namespace, argv: list[str], *, stdin: bool = False) -> None:
        self.argv = argv
        self.process = namespace.popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = ""
            if line is None or (not line and time.monotonic() >= deadline):
                self.process.kill()
                err = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(
                    f"{self.argv[3:6]}: no line with {text!r}; saw {self.seen}; {err[-3000:]}"
                )
            if line:
                self.seen.append(line)
                if text in line:
                    return line

    def ask(self, **command: str) -> dict[str, object]:
        """One command to an editor; its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer: dict[str, object] = json.loads(self.wait_for("{"))
        return answer


@attrs.define
class World:
    topo: NatTopology
    tmp: Path
    relay: Proc
    a: Proc
    b: Proc
    editor_a: Proc
    editor_b: Proc

    def relay_metric(self, name: str) -> float:
        return _metric(self.topo.public, RELAY_METRICS, name)

    def start_relay(self) -> Proc:
        self.relay = _start_relay(self.topo, self.tmp)
        return self.relay


def _metric(namespace: Namespace, where: str, name: str, labels: str = "") -> float:
    """The sum of the samples of metric ``name`` (with ``labels`` text in them) at ``where``."""
    url = f"http://{where}/metrics"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    text = namespace.run([sys.executable, "-c", code]).stdout
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + " ") or line.startswith(name + "{")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _start_relay(topo: NatTopology, tmp: Path) -> Proc:
    relay = Proc(
        topo.public,
        [*CLI, "relay", "--listen", f"{PUBLIC_ADDRESS}:{RELAY_PORT}", "--identity", str(tmp / "relay.key"),
         "--metrics", RELAY_METRICS],
    )  # fmt: skip
    relay.wait_for("relay ")
    relay.wait_for("metrics")
    return relay


def _node(namespace: Namespace, data: Path, relay: str | None, *args: str) -> Proc:
    where = ["--relay", relay] if relay else []
    node = Proc(
        namespace,
        [*CLI, "node", "--data", str(data), "--listen", "0.0.0.0:0", "--no-discovery", "--keepalive", "0.5",
         "--metrics", NODE_METRICS, *where, *args],
    )  # fmt: skip
    return node


def _port(line: str) -> int:
    return int(line.split(" listening on ", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])


def _editor(namespace: Namespace, data: Path, ticket: Ticket, port: int) -> Proc:
    # The editor knows only its own node: a ticket without addresses or relays, and a link to it.
    local = attrs.evolve(ticket, direct=(), relays=()).encode()
    editor = Proc(namespace, [sys.executable, EDITOR, str(data), local, f"127.0.0.1:{port}"], stdin=True)
    editor.wait_for('"ready"')
    return editor


@contextlib.contextmanager
def _world(kind: str, tmp: Path, *b_args: str) -> Iterator[World]:
    with nat_topology(kind, kind) as topo:  # type: ignore[arg-type]
        relay = _start_relay(topo, tmp)
        relay_id = relay.seen[0].split()[1]
        route = f"{relay_id}@{PUBLIC_ADDRESS}:{RELAY_PORT}"
        a = _node(topo.a.host, tmp / "a", route, "--name", "a", "--serve", "notes")
        port_a = _port(a.wait_for("listening on"))
        a.wait_for("serving 'notes'")
        assert f"public address {topo.a.public_address}:" in a.wait_for("registered with relay")
        shared = subprocess.run(
            [*CLI, "share", "notes", "--data", str(tmp / "a"), "--user", "b", "--perm", "rw"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shared.returncode == 0, shared.stderr
        ticket = Ticket.parse(shared.stdout)
        assert ticket.relays == (route,), ticket.relays  # the node's home relay, pinned
        assert all(host != topo.a.public_address for host, _ in ticket.direct)  # private addresses only
        b = _node(topo.b.host, tmp / "b", None, "--name", "b", "--join", shared.stdout.strip(), *b_args)
        port_b = _port(b.wait_for("listening on"))
        b.wait_for("joined 'notes'")
        # B had no relay of its own: it adopted the ticket's.
        assert f"public address {topo.b.public_address}:" in b.wait_for("registered with relay")
        editor_a = _editor(topo.a.host, tmp / "ea", ticket, port_a)
        editor_b = _editor(topo.b.host, tmp / "eb", ticket, port_b)
        world = World(topo=topo, tmp=tmp, relay=relay, a=a, b=b, editor_a=editor_a, editor_b=editor_b)
        try:
            yield world
        finally:  # SIGKILL: nothing here needs a graceful exit, and the namespaces' own stop is slower
            for proc in (world.editor_a, world.editor_b, world.a, world.b, world.relay):
                proc.process.kill()
                proc.process.wait(timeout=10)


def _node_metric(side: Namespace, name: str, labels: str = "") -> float:
    return _metric(side, NODE_METRICS, name, labels)


def _wait_metric(side: Namespace, name: str, labels: str, want: float) -> None:
    deadline = time.monotonic() + WAIT
    while (value := _node_metric(side, name, labels)) != want:
        assert time.monotonic() < deadline, f"{name}{{{labels}}} is {value}, not {want}"
        time.sleep(0.2)


def test_cone_nat_nodes_punch_to_direct_sync_and_survive_a_conntrack_flush(tmp_path: Path) -> None:
    with _world("cone", tmp_path) as w:
        w.editor_a.ask(insert="from a;")
        assert "from a;" in str(w.editor_b.ask(wait="from a;")["text"])
        # B's node reports its link to A as direct (a punched path), not relayed.
        _wait_metric(w.topo.b.host, "aetherflow_peers", 'path="direct"', 1)
        assert _node_metric(w.topo.b.host, "aetherflow_peers", 'path="relayed"') == 0
        assert _node_metric(w.topo.b.host, "aetherflow_punch_successes_total") >= 1
        # It got there through the relay first (a relayed handshake), then moved: the upgrade.
        assert _node_metric(w.topo.b.host, "aetherflow_relayed_connects_total") >= 1
        assert _node_metric(w.topo.b.host, "aetherflow_path_upgrades_total") >= 1
        assert _node_metric(w.topo.a.host, "aetherflow_path_upgrades_total") == 0  # only the dialer upgrades
        assert w.relay_metric("aetherflow_relay_relayed_packets_total") > 0
        connections = _node_metric(w.topo.b.host, "aetherflow_connections_opened_total")
        _wait_metric(w.topo.a.host, "aetherflow_peers", 'path="direct"', 1)  # A followed the move
        # Direct: whatever the relay forwarded while the link was being set up, it forwards no more.
        relayed = w.relay_metric("aetherflow_relay_relayed_packets_total")
        for i in range(5):
            w.editor_b.ask(insert=f"b{i};")
        w.editor_a.ask(wait="b4;")
        assert w.relay_metric("aetherflow_relay_relayed_packets_total") - relayed <= 2
        # NAT rebinding: both NATs forget every mapping; the same connection carries on.
        w.topo.a.flush_conntrack()
        w.topo.b.flush_conntrack()
        w.editor_b.ask(insert="after the flush;")
        w.editor_a.ask(wait="after the flush;")
        w.editor_a.ask(insert="and back;")
        w.editor_b.ask(wait="and back;")
        assert _node_metric(w.topo.b.host, "aetherflow_connections_opened_total") == connections
        _wait_metric(w.topo.b.host, "aetherflow_peers", 'path="direct"', 1)


def test_symmetric_nat_nodes_stay_relayed_sync_and_outlive_a_relay_kill(tmp_path: Path) -> None:
    with _world("symmetric", tmp_path, "--upgrade-interval", "0.5") as w:
        w.editor_a.ask(insert="from a;")
        w.editor_b.ask(wait="from a;")
        w.editor_b.ask(insert="from b;")
        w.editor_a.ask(wait="from b;")
        _wait_metric(w.topo.b.host, "aetherflow_peers", 'path="relayed"', 1)
        # B tries for a direct path at once and again every upgrade interval; every punch fails.
        deadline = time.monotonic() + WAIT
        while _node_metric(w.topo.b.host, "aetherflow_punch_attempts_total") < 2:
            assert time.monotonic() < deadline, "B did not try to upgrade again"
            time.sleep(0.2)
        assert _node_metric(w.topo.b.host, "aetherflow_punch_successes_total") == 0
        assert _node_metric(w.topo.b.host, "aetherflow_path_upgrades_total") == 0
        assert w.relay_metric("aetherflow_relay_relayed_packets_total") > 0
        # NAT rebinding on the relayed path: each NAT gives its node a new public port toward the
        # relay; the relay follows each node's connection there, and the link carries on.
        connections = _node_metric(w.topo.b.host, "aetherflow_connections_opened_total")
        w.topo.a.flush_conntrack()
        w.topo.b.flush_conntrack()
        w.editor_b.ask(insert="after the flush;")
        w.editor_a.ask(wait="after the flush;")
        assert _node_metric(w.topo.b.host, "aetherflow_connections_opened_total") == connections
        # The relay dies mid-edit; edits made meanwhile are durable locally and arrive after.
        w.editor_a.ask(insert="one;")
        w.relay.process.send_signal(signal.SIGKILL)
        w.relay.process.wait(timeout=10)
        w.editor_a.ask(insert="two;")
        w.editor_b.ask(insert="three;")
        w.start_relay()
        w.a.wait_for("registered with relay")
        w.b.wait_for("registered with relay")
        text_b = str(w.editor_b.ask(wait="two;")["text"])
        text_a = str(w.editor_a.ask(wait="three;")["text"])
        for edit in ("from a;", "from b;", "after the flush;", "one;", "two;", "three;"):
            assert edit in text_a and edit in text_b, (edit, text_a, text_b)


def test_a_relayed_dialer_punches_again_at_once_when_its_public_address_changes(tmp_path: Path) -> None:
    # An upgrade interval far beyond the test: any second attempt is the candidates' change.
    with _world("symmetric", tmp_path, "--upgrade-interval", "3600") as w:
        w.editor_a.ask(insert="from a;")
        w.editor_b.ask(wait="from a;")
        _wait_metric(w.topo.b.host, "aetherflow_peers", 'path="relayed"', 1)
        deadline = time.monotonic() + WAIT
        while (first := _node_metric(w.topo.b.host, "aetherflow_punch_attempts_total")) < 1:
            assert time.monotonic() < deadline, "B never tried to upgrade"
            time.sleep(0.2)
        time.sleep(1.0)  # the first attempt's punch is over (it fails in well under a second)
        assert _node_metric(w.topo.b.host, "aetherflow_punch_attempts_total") == first
        # B's NAT forgets its mappings: B's next packets to the relay leave from a new public
        # port, the relay reports it, and B punches again with the new candidate.
        w.topo.b.flush_conntrack()
        w.editor_b.ask(insert="after the flush;")
        w.editor_a.ask(wait="after the flush;")
        deadline = time.monotonic() + WAIT
        while _node_metric(w.topo.b.host, "aetherflow_punch_attempts_total") <= first:
            assert time.monotonic() < deadline, "B did not punch again when its public address changed"
            time.sleep(0.2)
        assert _node_metric(w.topo.b.host, "aetherflow_path_upgrades_total") == 0
