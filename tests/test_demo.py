"""``aetherflow demo`` as a newcomer runs it: a real subprocess, real UDP on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path


def _aetherflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # As the console script does (``-m aetherflow_node._cli`` would load the dispatcher twice).
        [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _document(output: str, node: str) -> str:
    """The text the demo printed for the replica on ``node``."""
    lines = output.split(f"replica on node {node}:\n", 1)[1].splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("    | "))
    return "\n".join(line[6:] for line in lines[:end])


def test_demo_converges_and_prints_transport_statistics() -> None:
    result = _aetherflow("demo", "--edits", "20", "--seed", "20261126")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(--seed 20261126)" in out.splitlines()[0]  # any run can be replayed
    assert "Traceback" not in out + result.stderr
    ids = re.findall(r"node ([AB])  127\.0\.0\.1:\d+ +node ID ([a-z2-7]{10})\.\.", out)
    assert [name for name, _ in ids] == ["A", "B"], out
    assert f"A sees B as {ids[1][1]}..   B sees A as {ids[0][1]}.." in out
    assert "converged: both replicas hold the same" in out
    text_a, text_b = _document(out, "A"), _document(out, "B")
    assert text_a == text_b
    assert "alice: the quick brown fox" in text_a and "bob: pack my box" in text_a
    assert "teh" not in text_a and "adn" not in text_a  # every typo was backspaced
    for row in (
        "smoothed RTT",
        "packets sent",
        "bytes sent on the wire",
        "app bytes sent",
        "retransmissions",
    ):
        assert re.search(rf"^  {row} +\S", out, re.MULTILINE), row


def test_demo_keeps_the_document_in_data_dir(tmp_path: Path) -> None:
    first = _aetherflow("demo", "--edits", "3", "--data-dir", str(tmp_path), "--seed", "7")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _aetherflow("demo", "--edits", "3", "--data-dir", str(tmp_path), "--seed", "7")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "document 'demo': loaded" in second.stdout
    assert "converged" in second.stdout
    assert _document(second.stdout, "A").count("the quick") == 2
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == ["node-a.sqlite", "node-b.sqlite"]


def test_demo_user_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = _aetherflow("demo", "--edits", "lots")
    assert bad.returncode == 2
    assert "--edits" in bad.stderr and "Traceback" not in bad.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unusable = _aetherflow("demo", "--data-dir", str(blocker / "sub"))
    assert unusable.returncode == 2  # a user mistake
    assert "cannot use --data-dir" in unusable.stderr and "Traceback" not in unusable.stderr


def test_demo_ctrl_c_is_one_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())",
         "demo", "--edits", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until both nodes are typing
            if line.startswith("typing"):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert err.strip() == "aetherflow demo: interrupted"
