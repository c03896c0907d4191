"""examples/session_ticket.py runs and shows what docs/sessions.md promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_session_ticket_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "session_ticket.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "bob: session open, permission ro" in out
    assert "bob: writes denied so far: 1" in out
    assert "bob: resumed the same session without a token" in out
    assert "owner: accepted 1, resumed 1, rejected 0, writes denied 1" in out
    assert "write: change it" not in out  # the owner never saw the write
