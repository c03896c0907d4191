"""``aetherflow bench sessions`` runs end to end at a tiny size and writes the JSON it promises.

No figure is checked here (speed goals live in the benchmark, not in tests)."""

from __future__ import annotations

import json
from pathlib import Path

from aetherflow_node._cli import main


def test_bench_sessions_smoke(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "sessions.json"
    status = main(
        ["bench", "sessions", "--sessions", "2000", "--creates", "30", "--samples", "500",
         "--sweep-runs", "1", "--json", str(out)]
    )  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    assert report["lookups"]["live_sessions"] == 2000
    for index in ("by_session_id", "by_connection", "by_user"):
        assert report["lookups"][index]["n"] == 500
    assert [c["synchronous"] for c in report["create"]] == ["FULL", "NORMAL"]
    assert all(c["create_total"]["n"] == 30 for c in report["create"])
    assert [s["sessions"] for s in report["sweep"]] == [2000, 2000]
