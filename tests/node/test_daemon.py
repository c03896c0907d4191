"""``aetherflow node`` and ``aetherflow share`` as a user runs them: real processes, real data dirs."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from aetherflow_node import open_node
from aetherflow_sdk.session import Ticket

from ._helpers import loopback, wait_until
from ._procs import CLI, aetherflow, data, node_process, port_of


async def test_daemon_serves_share_prints_a_usable_ticket_and_sigterm_flushes(tmp_path: Path) -> None:
    with node_process(
        *data(tmp_path / "d"), "--name", "srv", "--listen", "127.0.0.1:0", "--serve", "notes"
    ) as d:
        port = port_of(d.wait_for("listening on"))
        d.wait_for("serving 'notes'")
        shared = aetherflow("share", "notes", *data(tmp_path / "d"), "--user", "bob", "--perm", "rw")
        assert shared.returncode == 0, shared.stderr
        ticket = Ticket.parse(shared.stdout)
        assert ticket.direct == (("127.0.0.1", port),) and ticket.name == "notes"
        async with open_node(data_dir=tmp_path / "bob", **loopback()) as bob:  # type: ignore[arg-type]
            doc = await bob.open_document(shared.stdout)
            doc.insert(0, "written through the daemon ✓")
            await wait_until(lambda: doc.statistics().synced, 10, "the daemon has bob's edit", bob)
        # Bob is gone: carol can only get his text from the daemon.
        carol_ticket = aetherflow("share", "notes", *data(tmp_path / "d"), "--user", "carol", "--perm", "ro")
        async with open_node(data_dir=tmp_path / "carol", **loopback()) as carol:  # type: ignore[arg-type]
            copy = await carol.open_document(carol_ticket.stdout)
            await wait_until(
                lambda: copy.text == "written through the daemon ✓", 10, "from the daemon", carol
            )
        code, out, err = d.stop(signal.SIGTERM)
        assert code == 0, err
        assert "shutting down (SIGTERM)" in out and "every edit is on disk" in out
        assert "Traceback" not in err
    # The daemon's copy survived: a node on its data dir reads the text bob wrote.
    async with open_node(data_dir=tmp_path / "d", **loopback()) as again:  # type: ignore[arg-type]
        assert (await again.open_document("notes")).text == "written through the daemon ✓"


def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        cases = [
            (["--listen", f"127.0.0.1:{busy.getsockname()[1]}"], "cannot bind UDP"),
            (["--data", str(blocker / "sub")], "cannot use data directory"),
            (["--peer", f"127.0.0.1:{silent.getsockname()[1]}"], "no AetherFlow node answers there"),
            (["--peer", "nohost"], "is not host:port"),
            (["--join", "af1notaticket"], "ticket"),
            (["--listen", "1.2.3.4"], "--listen '1.2.3.4'"),
            (["--relay", "relay.test:443"], "numeric IP address"),
            (["--relay", "nonsense@127.0.0.1:443"], "NODE_ID@HOST:PORT"),
        ]
        for args, text in cases:
            argv = [*CLI, "node", "--no-discovery", *data(tmp_path / "n"), "--listen", "127.0.0.1:0", *args]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert result.returncode == 2, (args, result.stderr)
            assert text in result.stderr, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    finally:
        busy.close()
        silent.close()
    bad_flag = aetherflow("node", "--log-format", "xml")
    assert bad_flag.returncode == 2 and "Traceback" not in bad_flag.stderr
    for flag, value in (("--upgrade-interval", "0"), ("--keepalive", "soon")):
        bad = aetherflow("node", flag, value)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert f"argument {flag}" in bad.stderr and "seconds" in bad.stderr, bad.stderr


def test_a_second_daemon_on_one_data_dir_and_share_without_a_node(tmp_path: Path) -> None:
    with node_process(*data(tmp_path / "d"), "--listen", "127.0.0.1:0") as first:
        first.wait_for("listening on")
        second = subprocess.run(
            [*CLI, "node", "--no-discovery", *data(tmp_path / "d"), "--listen", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "in use by another node" in second.stderr
    missing = aetherflow("share", "nothing", *data(tmp_path / "empty"), "--user", "u", "--perm", "rw")
    assert missing.returncode == 2
    assert "needs an address" in missing.stderr and "--serve nothing" in missing.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    shell = (
        f"{' '.join(map(repr, CLI))} node --no-discovery --data {tmp_path / 'd'} --listen 127.0.0.1:0"
        " --serve a b c | head -c 1"
    )
    with subprocess.Popen(shell, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        out, err = p.communicate(timeout=60)
    assert out == "n" and "Traceback" not in err and "BrokenPipe" not in err


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_metrics_scrape_and_revoke_reaches_the_running_node(tmp_path: Path) -> None:
    import urllib.request

    import anyio

    args = [*data(tmp_path / "d"), "--listen", "127.0.0.1:0", "--serve", "notes", "--metrics", "127.0.0.1:0"]
    with node_process(*args) as d:
        url = d.wait_for("metrics on http://").split("metrics on ", 1)[1].split(",", 1)[0]
        shared = aetherflow("share", "notes", *data(tmp_path / "d"), "--user", "bob", "--perm", "rw")
        async with open_node(data_dir=tmp_path / "bob", **loopback()) as bob:  # type: ignore[arg-type]
            await bob.open_document(shared.stdout)
            await wait_until(
                lambda: bool(bob.peers) and bob.peers[0].documents == ("notes",), 10, "linked", bob
            )
            body = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(url, timeout=10).read().decode()
            )
            assert "aetherflow_" in body and "lan" in body
            revoked = await anyio.to_thread.run_sync(
                lambda: aetherflow("revoke", "notes", *data(tmp_path / "d"), "--user", "bob")
            )
            assert revoked.returncode == 0, revoked.stderr
            assert "the running node passes it" in revoked.stdout
            await wait_until(lambda: not any(p.documents for p in bob.peers), 15, "bob's session ended", bob)
        d.stop(signal.SIGTERM)
