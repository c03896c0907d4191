"""``aetherflow share`` as a user runs it: a real subprocess, a real data directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import Ticket, TokenVerifier


def _share(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # As the console script does (``-m aetherflow_node._cli`` would load the dispatcher twice).
        [
            sys.executable,
            "-c",
            "import sys; from aetherflow_node._cli import main; sys.exit(main())",
            "share",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_share_prints_a_ticket_signed_by_the_local_identity(tmp_path: Path) -> None:
    result = _share(
        "notes", "--user", "bob", "--perm", "ro", "--expires", "2h",
        "--address", "127.0.0.1:4433", "--address", "[::1]:4433", "--relay", "relay.test:443",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    assert text.startswith("af1") and "\n" not in text
    ticket = Ticket.parse(text)
    identity = Identity.load_or_create(tmp_path / "identity.key")
    assert ticket.issuer == identity.node_id
    assert ticket.direct == (("127.0.0.1", 4433), ("::1", 4433)) and ticket.relays == ("relay.test:443",)
    claims = TokenVerifier([identity.node_id]).verify(ticket.token, document="notes", now=time.time())
    assert claims.user == "bob" and claims.permission.value == "ro"
    assert 2 * 3600 - 120 <= claims.expires_at - time.time() <= 2 * 3600 + 5
    assert "ro ticket for 'bob'" in result.stderr
    # Same identity the second time: the key file is reused, not replaced.
    again = _share(
        "notes", "--user", "carol", "--perm", "rw", "--data-dir", str(tmp_path), "--address", "h:1"
    )
    assert Ticket.parse(again.stdout).issuer == identity.node_id
    assert (tmp_path / "identity.key").stat().st_mode & 0o077 == 0


def test_share_uses_aetherflow_home(tmp_path: Path) -> None:
    result = _share(
        "doc", "--user", "u", "--perm", "rw", "--address", "127.0.0.1:4433",
        env={"AETHERFLOW_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / "identity.key").exists()


def test_user_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    for args, text in [
        (["--expires", "7x"], "--expires '7x'"),
        (["--address", "nohost"], "is not host:port"),
        (["--holder", "zzz"], "is not a node ID"),
        # 400 digits overflow a float to inf; 100000000000w is past 2**53 s, the largest exp verifiers read.
        (["--expires", "9" * 400 + "d"], "is too long: at most ten years"),
        (["--expires", "100000000000w"], "is too long: at most ten years"),
        (["--expires", "3651d"], "is too long: at most ten years"),
    ]:
        result = _share("doc", "--user", "u", "--perm", "rw", "--data-dir", str(tmp_path), *args)
        assert result.returncode == 2
        assert text in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    bad_perm = _share("doc", "--user", "u", "--perm", "admin", "--data-dir", str(tmp_path))
    assert bad_perm.returncode == 2 and "Traceback" not in bad_perm.stderr
    unbound = _share("doc", "--user", "u", "--perm", "serve", "--data-dir", str(tmp_path), "--address", "h:1")
    assert unbound.returncode == 2 and "--perm serve is for one persistence peer" in unbound.stderr


def test_a_serve_ticket_is_bound_to_its_persistence_peer(tmp_path: Path) -> None:
    from aetherflow_sdk._identity import format_node_id

    relay = Identity.generate()
    result = _share(
        "doc", "--user", "relay", "--perm", "serve", "--holder", format_node_id(relay.node_id),
        "--address", "127.0.0.1:4433", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ticket = Ticket.parse(result.stdout)
    claims = TokenVerifier([ticket.issuer]).verify(
        ticket.token, document="doc", now=time.time(), holder=relay.node_id
    )
    assert claims.permission.value == "serve" and claims.holder == relay.node_id
