"""``aetherflow bench discovery``, one round in two namespaces (root only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetherflow_node._cli import main
from aetherflow_sdk.testing import netns_available

_reason = netns_available()


@pytest.mark.netns
@pytest.mark.skipif(_reason is not None, reason=_reason or "")
def test_one_round_finds_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "discovery.json"
    assert main(["bench", "discovery", "--rounds", "1", "--json", str(out)]) == 0
    assert "p50 from start" in capsys.readouterr().out
    record = json.loads(out.read_text())
    (round_,) = record["rounds"]
    assert round_["found_both"] and round_["after_launch_s"] > 0
    assert record["summary"]["found"] == 1


def test_bad_rounds_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "discovery", "--rounds", "0"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
