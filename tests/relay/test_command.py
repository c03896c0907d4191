"""``aetherflow relay``: settings from flags > environment > TOML > defaults; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_relay._command import resolve_settings
from aetherflow_sdk._errors import LocalProtocolError

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))
DOC = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def test_the_persistence_peer_settings(tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text(f'[relay]\nserve = ["{DOC}"]\nquota_bytes = "1MiB"\nmax_documents = 5\n')
    got = resolve_settings({"data_dir": str(tmp_path / "d"), "listen": "127.0.0.1:4000"}, {}, toml)
    assert got["serve"] == (DOC,) and got["quota_bytes"] == 1024**2 and got["max_documents"] == 5
    assert got["serve_port"] == 4001  # the relay's port + 1
    got = resolve_settings({"data_dir": "d", "quota_bytes": "65536", "serve_port": "0"}, {}, None)
    assert got["quota_bytes"] == 65536 and got["serve_port"] == 0
    got = resolve_settings({}, {}, None)
    assert got["data_dir"] is None and got["quota_bytes"] == 64 * 1024**2


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text(
        '[relay]\nmax_clients = 7\nrate = 1000.0\nlisten = "127.0.0.1:4000"\nrequire_token = true\n'
    )
    env = {"AETHERFLOW_RELAY_RATE": "2000", "AETHERFLOW_RELAY_LISTEN": "127.0.0.1:5000"}
    flags = {"listen": "127.0.0.1:6000"}
    got = resolve_settings(flags, env, toml)
    assert got["listen"] == ("127.0.0.1", 6000)  # flag
    assert got["rate"] == 2000.0  # environment
    assert got["max_clients"] == 7 and got["require_token"] is True  # file
    assert got["queue_packets"] == 64  # default
    assert resolve_settings({}, {}, None)["listen"] == ("0.0.0.0", 3340)


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({"max_clients": "many"}, {}, None, "--max-clients"),
        ({}, {"AETHERFLOW_RELAY_LISTEN": "nowhere"}, None, "AETHERFLOW_RELAY_LISTEN"),
        ({}, {}, "max_clients = 'x'\n", "max_clients in"),
        ({}, {}, "colour = 'blue'\n", "unknown setting"),
        ({}, {}, "not toml at all [", "not valid TOML"),
        ({}, {"AETHERFLOW_RELAY_REQUIRE_TOKEN": "perhaps"}, None, "true or false"),
        ({"data_dir": "d", "serve": ["notes"]}, {}, None, "--serve: expected a document ID"),
        ({"data_dir": "d"}, {"AETHERFLOW_RELAY_QUOTA_BYTES": "0"}, None, "QUOTA_BYTES: a quota must be > 0"),
        ({"data_dir": "d"}, {}, "quota_bytes = 'lots'\n", "quota_bytes in"),
        ({"serve": [DOC]}, {}, None, "--serve needs --data-dir"),
        ({"data_dir": "d", "identity": "other.key"}, {}, None, "share the key"),
        ({"data_dir": "d", "listen": "127.0.0.1:4000", "serve_port": "4000"}, {}, None, "relay's own port"),
    ],
)
def test_a_bad_setting_names_where_it_came_from(tmp_path: Path, flags, env, toml, message) -> None:
    path = None
    if toml is not None:
        path = tmp_path / "relay.toml"
        path.write_text(toml)
    with pytest.raises(LocalProtocolError, match=message):
        resolve_settings(flags, env, path)


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-clients", "many"],
        ["--require-token"],
        ["--listen", "127.0.0.1:1", "--config", "/nonexistent.toml"],
        ["--data-dir", "/nonexistent/relay", "--serve", "af1notadocumentid"],
        ["--data-dir", "/nonexistent/relay", "--quota-bytes", "0"],
    ],
)
def test_user_mistakes_end_in_one_line_and_status_2(argv: list[str]) -> None:
    result = subprocess.run(
        [AETHERFLOW, "relay", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
