"""The data directory: identity kept with 0600, a lock against a second node, XDG default, restart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aetherflow_node import DataDirError, default_data_dir, open_node

from ._helpers import loopback


async def test_identity_is_created_once_with_0600_and_kept(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path, **loopback()) as node:  # type: ignore[arg-type]
        first = node.node_id
    key = tmp_path / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key.chmod(0o644)  # loosened by someone: tightened again on the next start
    async with open_node(data_dir=tmp_path, **loopback()) as node:  # type: ignore[arg-type]
        assert node.node_id == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_a_second_node_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path, **loopback()):  # type: ignore[arg-type]
        with pytest.raises(DataDirError, match="in use by another node"):
            async with open_node(data_dir=tmp_path, **loopback()):  # type: ignore[arg-type]
                pass
    async with open_node(data_dir=tmp_path, **loopback()):  # released on exit
        pass


async def test_a_data_dir_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError, match="cannot use data directory"):
        async with open_node(data_dir=blocker / "sub", **loopback()):  # type: ignore[arg-type]
            pass


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AETHERFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "aetherflow"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".local" / "share" / "aetherflow"
    monkeypatch.setenv("AETHERFLOW_HOME", str(tmp_path / "af"))
    assert default_data_dir() == tmp_path / "af"


async def test_documents_survive_a_restart_and_names_are_only_labels(tmp_path: Path) -> None:
    async with open_node(data_dir=tmp_path / "a", **loopback()) as node:  # type: ignore[arg-type]
        doc = await node.open_document("notes")
        doc.insert(0, "kept ✓ 日本")
        doc_id = doc.doc_id
    async with open_node(data_dir=tmp_path / "a", **loopback()) as node:  # type: ignore[arg-type]
        again = await node.open_document("notes")
        assert again.doc_id == doc_id and again.text == "kept ✓ 日本"
        assert (await node.open_document(doc_id)) is again
    async with open_node(data_dir=tmp_path / "b", **loopback()) as other:  # type: ignore[arg-type]
        unrelated = await other.open_document("notes")
        assert unrelated.doc_id != doc_id and unrelated.text == ""
