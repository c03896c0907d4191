"""Node processes for tests: ``aetherflow node`` as a user runs it, read line by line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLI = [sys.executable, "-c", "import sys; from aetherflow_node._cli import main; sys.exit(main())"]


def aetherflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``aetherflow ARGS`` to completion."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


class NodeProcess:
    """A running ``aetherflow node``; stdout read line by line, with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "node", "--no-discovery", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The first stdout line containing ``text`` (blocking reads; the process prints as it goes)."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if text in line:
                return line
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return line.rstrip("\n")
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        raise AssertionError(f"no line with {text!r}; stdout: {self.lines}; stderr: {err[-2000:]}")

    def stop(self, sig: int | None = None) -> tuple[int, str, str]:
        if sig is None:
            self.proc.kill()
        else:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@contextmanager
def node_process(*args: str) -> Iterator[NodeProcess]:
    process = NodeProcess(*args)
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.communicate(timeout=10)


def port_of(line: str) -> int:
    """The port in a 'listening on HOST:PORT,' line."""
    return int(line.split(" listening on ", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])


def data(path: Path) -> list[str]:
    return ["--data", str(path)]
