"""``aetherflow demo`` as a newcomer runs it: a real subprocess, three real nodes on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

COMMAND = [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())"]


def _aetherflow(*args: str) -> subprocess.CompletedProcess[str]:
    # As the console script does (``-m aetherflow_node._cli`` would load the dispatcher twice).
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120)


def test_headless_tour_converges_and_prints_its_figures() -> None:
    result = _aetherflow("demo", "--headless", "--edits", "60", "--seed", "20261126")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(--seed 20261126)" in out.splitlines()[0]  # any run can be replayed
    assert "Traceback" not in out + result.stderr
    names = re.findall(r"^node (\w+) +127\.0\.0\.1:\d+ +node ID [a-z2-7]{10}\.\.", out, re.MULTILINE)
    assert names == ["you", "ada", "grace"], out
    assert "converged: all three replicas hold the same" in out
    assert "edits exchanged: ada typed 60, grace typed 60" in out
    latency = re.search(r"p50 (\d+\.\d) ms, p99 (\d+\.\d) ms \((\d+) keystrokes\)", out)
    assert latency is not None, out
    assert float(latency.group(1)) <= float(latency.group(2)) and int(latency.group(3)) > 0
    assert "\\documentclass" in out  # the trace's first keystrokes arrived


def test_the_tour_keeps_its_document_in_data_dir(tmp_path: Path) -> None:
    sizes = []
    for _ in range(2):
        run = _aetherflow("demo", "--headless", "--edits", "30", "--data-dir", str(tmp_path), "--seed", "7")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "edits exchanged: ada typed 30, grace typed 30" in run.stdout
        found = re.search(r"hold the same (\d+) characters", run.stdout)
        assert found is not None, run.stdout
        sizes.append(int(found.group(1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ada", "grace", "you"]
    assert sizes[1] > sizes[0]  # the second tour typed into the document the first one left


def test_demo_user_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = _aetherflow("demo", "--edits", "lots")
    assert bad.returncode == 2
    assert "--edits" in bad.stderr and "Traceback" not in bad.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unusable = _aetherflow("demo", "--headless", "--data-dir", str(blocker / "sub"))
    assert unusable.returncode == 2
    assert "cannot use --data-dir" in unusable.stderr and "Traceback" not in unusable.stderr


def test_demo_ctrl_c_is_one_line() -> None:
    process = subprocess.Popen(
        [*COMMAND, "demo", "--headless", "--edits", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until the peers are typing
            if "type 3000 keystrokes" in line:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert err.strip() == "aetherflow: interrupted"
