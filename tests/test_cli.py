"""The `aetherflow` command as a newcomer meets it: --version, pipes into head, SIGTERM."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The console script the install created, beside this interpreter (``python -m`` would load the
# dispatcher twice, as __main__ and as aetherflow_node._cli).
COMMAND = [str(Path(sys.executable).parent / "aetherflow")]


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"aetherflow {version('aetherflow')}"


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`aetherflow demo | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    demo = subprocess.Popen(
        [*COMMAND, "demo", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert demo.stdout is not None and demo.stderr is not None
    first = demo.stdout.readline()
    demo.stdout.close()  # what `head -1` does after one line
    _, stderr = demo.communicate(timeout=60)
    assert first.startswith("aetherflow demo")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert demo.returncode in (0, 141)


def test_sigterm_cleans_up_the_demo_temporary_directory(tmp_path: Path) -> None:
    # A temporary directory of its own: another run's demo on this machine (a parallel test
    # run shares /tmp) must not be taken for ours.
    pattern = os.path.join(str(tmp_path), "aetherflow-demo-*")
    before = set(glob.glob(pattern))
    demo = subprocess.Popen(
        [*COMMAND, "demo", "--headless", "--edits", "3000", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert demo.stdout is not None
    # Wait until the demo is editing (its temporary directory exists and it has printed).
    demo.stdout.readline()
    deadline = time.monotonic() + 30
    while not set(glob.glob(pattern)) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    created = set(glob.glob(pattern)) - before
    assert created, "the demo never created its temporary directory"
    demo.send_signal(signal.SIGTERM)
    _, stderr = demo.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert not any(Path(p).exists() for p in created), "SIGTERM left the temporary directory behind"
