"""End to end, as people run it: two `aetherflow edit` processes in tmux panes edit one document.

Keys go in with `tmux send-keys`; what pane 2 shows is read with `capture-pane`. Pane 1
opens a file and shares it (F2 shows the ticket, read off its screen); pane 2 joins
with that ticket; text typed in pane 1 appears in pane 2; both save; the files match.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (CI installs it)")

WAIT = 30.0  # seconds one step may take (two editors starting on a busy machine)
WIDTH = 1500  # wide enough for a whole ticket (~900 characters) on one screen line


class Tmux:
    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)  # a socket in the test's own directory: nothing left in /tmp

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def screen(self, pane: str) -> str:
        return self("capture-pane", "-p", "-t", pane)

    def wait(self, what: str, pane: str, condition: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            screen = self.screen(pane)
            if condition(screen):
                return screen
            time.sleep(0.1)  # an external process: poll its screen, bounded by the deadline
        raise AssertionError(f"{what}: not within {WAIT} s; pane {pane} shows:\n{self.screen(pane)}")


def _command(*args: str) -> str:
    """A shell command line running ``aetherflow ARGS`` with this interpreter (as the console script does)."""
    entry = "import sys; from aetherflow_node._cli import main; sys.exit(main())"
    return shlex.join([sys.executable, "-c", entry, *args])


def test_two_editors_in_tmux_share_a_document(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path / "tmux.sock")
    first, second = tmp_path / "mine.txt", tmp_path / "theirs.txt"
    first.write_text("shared notes\n")
    env = {**os.environ, "TERM": "xterm-256color"}
    try:
        subprocess.run(
            ["tmux", "-S", tmux.socket, "new-session", "-d", "-s", "e2e", "-x", str(WIDTH), "-y", "20",
             _command("edit", str(first), "--data", str(tmp_path / "a"), "--listen", "127.0.0.1:0",
                      "--no-lan", "--name", "alice")],
            check=True, env=env, timeout=10,
        )  # fmt: skip
        tmux("set-option", "-g", "remain-on-exit", "on")
        tmux.wait("pane 1 starts", "e2e:0.0", lambda s: "shared notes" in s and "rw" in s)
        tmux("send-keys", "-t", "e2e:0.0", "F2")
        screen = tmux.wait("the share screen", "e2e:0.0", lambda s: "read-only" in s and "af1" in s)
        ticket = re.findall(r"af1[a-z2-7]+", screen)[0]
        tmux("send-keys", "-t", "e2e:0.0", "Escape")
        tmux("resize-window", "-t", "e2e", "-x", "160", "-y", "20")  # a smaller screen is cheaper to draw
        tmux(
            "split-window", "-t", "e2e:0", "-v",
            _command("edit", str(second), "--join", ticket, "--data", str(tmp_path / "b"), "--name", "bob",
                     "--no-lan"),
        )  # fmt: skip
        tmux.wait("pane 2 joins", "e2e:0.1", lambda s: "shared notes" in s and "1 peer " in s)
        tmux("send-keys", "-t", "e2e:0.0", "-l", "typed in pane one ")
        tmux.wait("pane 2 shows pane 1's typing", "e2e:0.1", lambda s: "typed in pane one shared notes" in s)
        for pane in ("e2e:0.0", "e2e:0.1"):
            tmux("send-keys", "-t", pane, "C-s")
        deadline = time.monotonic() + WAIT
        while not (second.exists() and first.read_text() == second.read_text()):
            assert time.monotonic() < deadline, (first.read_text(), second.exists() and second.read_text())
            time.sleep(0.1)
        assert first.read_text() == "typed in pane one shared notes\n"
        for pane in ("e2e:0.1", "e2e:0.0"):
            tmux("send-keys", "-t", pane, "C-q")
        deadline = time.monotonic() + WAIT
        panes = ("list-panes", "-a", "-F", "#{pane_dead}:#{pane_dead_status}")
        # Both quit; an exit status, where tmux reports one (it sometimes has none for a
        # process it saw end), is 0.
        status = tmux(*panes).split()
        while len(status) != 2 or not all(p.startswith("1:") for p in status):
            assert time.monotonic() < deadline, f"the editors did not both quit: {status}"
            time.sleep(0.1)
            status = tmux(*panes).split()
        assert all(p in ("1:0", "1:") for p in status), status
    finally:
        tmux("kill-server")
