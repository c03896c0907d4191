"""Smoke test of ``aetherflow bench endpoint``: a tiny run (server in a child process, loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetherflow_node._cli import main


def test_tiny_run_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "endpoint.json"
    status = main(
        ["bench", "endpoint", "--levels", "2,4", "--warmup", "0.3", "--duration", "1", "--json", str(out)]
    )
    assert status == 0
    table = capsys.readouterr().out
    assert "CPU/msg" in table and "CPU per message at 4 / at 2 connections" in table
    report = json.loads(out.read_text())
    assert [row["connections"] for row in report["levels"]] == [2, 4]
    assert all(row["held_by_server"] == row["connections"] for row in report["levels"])
    assert all(row["received_per_s"] > 0 and row["cpu_us_per_message"] > 0 for row in report["levels"])


def test_bad_levels_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "endpoint", "--levels", "ten"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--levels takes counts like 10,100,1000" in err and "Traceback" not in err
