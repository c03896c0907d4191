"""Every program in examples/ runs, and the output shown in the docs is what it really prints."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
QUICKSTART = ROOT / "docs" / "quickstart.md"


@functools.cache
def _run_example(name: str) -> str:
    """Run ``examples/NAME`` once per test session; its stdout."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def _shape(line: str) -> str:
    """A printed line with everything that changes between runs (ports, IDs, numbers) blanked out."""
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", line)
    line = re.sub(r"\b[a-z2-7]{10}\.\.", "<id>", line)
    return re.sub(r"\d+(\.\d+)?", "<n>", line)


def _documented_output(markdown: Path, marker: str) -> list[str]:
    """The lines of the first fenced block after the line containing ``marker``."""
    text = markdown.read_text()
    after = text[text.index(marker) :]
    block = after.split("```", 2)[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_runs(name: str) -> None:
    _run_example(name)


def test_quantum_echo_runs_and_echoes_everything() -> None:
    out = _run_example("quantum_echo.py")
    assert out.count("echo matches") == 3
    assert "client: closed" in out
    assert "server: connection over (ClosedByPeer" in out


def test_quantum_echo_output_in_the_docs_is_real() -> None:
    out = _run_example("quantum_echo.py")
    documented = _documented_output(QUICKSTART, "<!-- quantum_echo output -->")
    # Server and client run concurrently, so two lines may swap: compare as multisets.
    assert sorted(map(_shape, documented)) == sorted(map(_shape, out.splitlines()))


def test_quantum_paths_moves_to_the_relay_and_back_and_its_output_in_the_docs_is_real() -> None:
    out = _run_example("quantum_paths.py")
    assert "echoed over the relayed path" in out and out.count("echoed over the direct path") == 2
    documented = _documented_output(QUICKSTART, "<!-- quantum_paths output -->")
    assert list(map(_shape, documented)) == list(map(_shape, out.splitlines()))
