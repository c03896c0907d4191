"""``aetherflow relay``: settings from flags > environment > TOML > defaults; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aetherflow_relay._command import resolve_settings
from aetherflow_sdk._errors import LocalProtocolError

AETHERFLOW = str(Path(sys.executable).with_name("aetherflow"))


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
    ],
)
def test_user_mistakes_end_in_one_line_and_status_2(argv: list[str]) -> None:
    result = subprocess.run(
        [AETHERFLOW, "relay", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr


def test_the_relay_benchmark_runs_and_counts_every_frame(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    argv = [AETHERFLOW, "bench", "relay", "--peers", "4", "--processes", "1", "--duration", "1"]
    result = subprocess.run(
        [*argv, "--json", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(out.read_text())
    assert report["sent"] > 0 and report["received"] + report["lost"] == report["sent"]
    assert report["received"] > 0 and report["latency_ms"]["p50"] > 0
