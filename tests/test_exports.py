"""The public names of the SDK are deliberate: this test pins them (as trio's test_exports does).

When a package adds or removes a public name on purpose, its owner updates the
list here in the same commit. Implementation modules start with ``_``; only the
package ``__init__`` re-exports, through ``__all__``.
"""

from __future__ import annotations

import importlib
import importlib.resources
import tomllib
from pathlib import Path

import pytest

import aetherflow_sdk

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_NAMES: dict[str, list[str]] = {
    "aetherflow_sdk": [
        "AetherFlowError", "AuthError", "BadPacket", "ChannelRefused", "ClosedByPeer", "ClosedLocally",
        "ConnectionClosed", "ConnectionTimeout", "HandshakeFailed", "LocalProtocolError", "MessageTooLarge",
        "RemoteProtocolError", "ReplicaError", "StorageError", "WouldBlock", "uuid7", "uuid7_unix_ms",
    ],
    "aetherflow_sdk.quantum": [
        "Channel", "ChannelRefused", "Connection", "ConnectionEnded", "ConnectionEstablished",
        "ConnectionStatistics", "ConnectionTerminated", "DirectPath", "Endpoint", "EndpointCore",
        "EndpointEvent", "EndpointStatistics", "HandshakeCompleted", "Path", "PathChanged", "PathMigrated",
        "PathMigration", "PathMigrationFailed", "PathValidationFailed", "QuantumConfig",
        "QuantumConnection", "open_endpoint",
    ],
    "aetherflow_sdk.session": [
        "TRANSITIONS", "AuthError", "AuthReason", "ClientHello", "CorruptRow", "FrameKind",
        "InvalidTicket", "InvalidTransition", "LoadReport", "LoadedSessions", "MemorySessionStore",
        "Permission", "ResumeRequest", "Resumption", "Session", "SessionAccept", "SessionChannel",
        "SessionChannelStatistics", "SessionConfig", "SessionManager", "SessionManagerStatistics",
        "SessionReject", "SessionServer", "SessionServerStatistics", "SessionState",
        "SessionStateChanged", "SessionStore", "SqliteSessionStore", "Ticket", "TokenClaims",
        "TokenVerifier", "Trigger", "describe_ticket", "issue_token", "open_session", "share_ticket",
    ],
    "aetherflow_sdk.replica": [
        "Awareness", "AwarenessChange", "ChangeStream", "Delete", "Insert", "Outgoing", "PeerPresence",
        "Replica", "ReplicaStatistics", "ReplicaSync", "Retain", "SqliteStore", "SyncProtocol",
        "SyncStatistics", "TextChange", "is_write_message",
    ],
    "aetherflow_node": [
        "DataDirError", "Document", "DocumentStatistics", "Identity", "Limits", "Node", "NodeStatistics",
        "PeerInfo", "Presence", "ServeRefused", "default_data_dir", "format_node_id", "open_node",
        "parse_node_id",
    ],
    "aetherflow_sdk.testing": [
        "ADDRESS_A", "ADDRESS_B", "DirectionStatistics", "EmulatedLink", "LinkConfig", "LinkDirection",
        "LinkStatistics", "Namespace", "NatSide", "NatTopology", "VethPair", "emulated_link", "nat_available",
        "nat_topology", "netns_available", "network_namespace", "register_cleanup", "veth_pair",
    ],
    "tui_editor": ["EditorApp", "EditorModel", "LineIndex", "ReadOnlyDocument"],
    "aetherflow_relay": [
        "DROP_REASONS", "RELAY_DOCUMENT", "TRANSITIONS", "ClientState", "CloseRequest", "RelayConfig",
        "RelayCore", "RelayStatistics",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module_name", sorted(PUBLIC_NAMES))
def test_public_names_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC_NAMES[module_name]), (
        f"{module_name}.__all__ changed: if on purpose, update PUBLIC_NAMES in tests/test_exports.py"
    )
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ lists a name twice"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_NAMES))
def test_every_public_name_exists_and_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which does not exist"
        value = getattr(module, name)
        if isinstance(value, type) or callable(value):
            assert value.__doc__, f"{module_name}.{name} has no docstring"


def test_star_import_gives_exactly_the_public_names() -> None:
    for module_name, names in PUBLIC_NAMES.items():
        namespace: dict[str, object] = {}
        exec(f"from {module_name} import *", namespace)
        assert sorted(k for k in namespace if k != "__builtins__") == sorted(names)


def test_every_exception_is_an_aetherflow_error() -> None:
    for module_name in PUBLIC_NAMES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                assert issubclass(value, aetherflow_sdk.AetherFlowError), f"{module_name}.{name}"


@pytest.mark.parametrize("package", ["aetherflow_sdk", "aetherflow_node", "tui_editor", "aetherflow_relay"])
def test_py_typed_ships(package: str) -> None:
    assert importlib.resources.files(package).joinpath("py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data.get("*", []) + package_data.get(package, [])
