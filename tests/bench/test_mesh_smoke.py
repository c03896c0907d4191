"""``aetherflow bench mesh`` end to end, tiny: two node processes, one second of edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetherflow_node._cli import main


def test_bench_mesh_two_nodes_writes_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mesh.json"
    args = ["--nodes", "2", "--duration", "1", "--idle", "0.5", "--rate", "10", "--json", str(out)]
    assert main(["bench", "mesh", *args]) == 0
    assert "p99 ms" in capsys.readouterr().out
    (run,) = json.loads(out.read_text())["runs"]
    assert run["nodes"] == 2 and run["edits"] == 20
    assert run["visible_on_all"] == 20 and run["missing"] == 0  # every edit reached the other node
    assert run["converged"] and run["full_mesh"]
    assert run["bytes_per_edit_per_link"] > 0 and run["p99_ms"] is not None


@pytest.mark.parametrize("nodes", ["1", "2,x", ""])
def test_bench_mesh_refuses_bad_counts(nodes: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "mesh", "--nodes", nodes]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--nodes" in err
