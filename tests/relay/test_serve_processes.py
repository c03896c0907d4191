"""Offline catch-up with real processes: an ``aetherflow relay --data-dir`` process hosts a
document; its creator (a process) writes and exits; a joiner (another process) comes online
while the creator is offline and gets its edits from the relay's persistence peer, writes, and
exits; the creator comes back and gets the joiner's edits -- from the relay alone, since no other
holder is online at any point when a holder starts. Then the relay restarts and a third holder
catches up from what it reopened."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))
HOLDER = str(Path(__file__).with_name("_holder.py"))


def _holder(*args: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, HOLDER, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (result.stdout, result.stderr[-2000:])
    answer: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def test_a_joiner_catches_up_from_the_relay_while_the_creator_is_offline(tmp_path: Path) -> None:
    relay = subprocess.Popen(
        [AETHERFLOW, "relay", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "relay"),
         "--metrics", "127.0.0.1:0", "--quota-bytes", "1MiB"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert relay.stdout is not None
        first, second, third = (relay.stdout.readline() for _ in range(3))
        assert first.startswith("relay "), (first, relay.stderr.read() if relay.poll() is not None else "")
        relay_id, address = first.split()[1], first.split()[-1]
        assert second.startswith("persistence peer serving 0 document(s) on udp 127.0.0.1:"), second
        metrics = third.split()[-1]
        where = f"{relay_id}@{address}"

        created = _holder(str(tmp_path / "a"), where, "create", "notes", "alice wrote this")
        # Alice's process has ended: the joiner's only online holder is the persistence peer.
        joined = _holder(str(tmp_path / "b"), where, "open", created["ticket"], "alice wrote this", "bob: ")
        assert joined["text"] == "bob: alice wrote this"
        back = _holder(str(tmp_path / "a"), where, "open", created["doc_id"], "bob: alice wrote this")
        assert back["text"] == "bob: alice wrote this"

        assert _metric(metrics, "aetherflow_relay_documents_served") == 1
        assert _metric(metrics, "aetherflow_relay_storage_bytes") > 0
        assert _metric(metrics, "aetherflow_relay_quota_refusals_total") == 0
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    # The relay reopens what it served after a restart, and `aetherflow node --host-on-relay`
    # hands it a document (the one it holds already: accepted again).
    again = subprocess.Popen(
        [AETHERFLOW, "relay", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "relay")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert again.stdout is not None
        first = again.stdout.readline()
        assert again.stdout.readline().startswith("persistence peer serving 1 document(s)")
        where = f"{first.split()[1]}@{first.split()[-1]}"
        # A new joiner, with alice and bob offline, gets everything from the restarted relay.
        late = _holder(str(tmp_path / "c"), where, "open", created["ticket"], "bob: alice wrote this")
        assert late["text"] == "bob: alice wrote this"
        node = subprocess.Popen(
            [AETHERFLOW, "node", "--data", str(tmp_path / "a"), "--listen", "127.0.0.1:0", "--no-discovery",
             "--relay", where, "--serve", created["doc_id"], "--host-on-relay"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert node.stdout is not None
            lines = [node.stdout.readline() for _ in range(3)]  # listening, serving, hosted
            assert lines[2].startswith("hosted 'notes' on the relay's persistence peer"), (
                lines, node.stderr.read() if node.poll() is not None else "")  # fmt: skip
        finally:
            node.terminate()
            node.wait(timeout=30)
    finally:
        again.terminate()
        again.wait(timeout=30)
