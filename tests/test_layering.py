"""The layering rule, checked on the source: arrows point down only (docs/architecture.md).

A module may import its own package, the shared base modules below it, and nothing above it.
Imports at module level and inside functions are both checked: a lazy import of a higher
layer is still an upward arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
APPS = Path(__file__).resolve().parent.parent / "apps"
# Programs above the node (apps/): they may import the node and the SDK; nothing below imports them.
APP_PACKAGES = ("tui_editor",)

BASE = {
    "aetherflow_sdk._errors",
    "aetherflow_sdk._identity",
    "aetherflow_sdk._uuid7",
    "aetherflow_sdk._channel",
}

# package -> the aetherflow modules (prefixes) it may import besides itself
ALLOWED: dict[str, set[str]] = {
    "aetherflow_sdk._errors": set(),
    "aetherflow_sdk._uuid7": {"aetherflow_sdk._errors"},
    "aetherflow_sdk._identity": {"aetherflow_sdk._errors"},
    "aetherflow_sdk._channel": {"aetherflow_sdk._errors"},
    "aetherflow_sdk.quantum": BASE,
    # Sessions and the replica run over the MessageChannel contract, not over Quantum itself,
    # so that neither depends on how the peer was found (LAN, direct, relayed).
    "aetherflow_sdk.session": BASE,
    "aetherflow_sdk.replica": BASE,
    "aetherflow_sdk.testing": BASE,
}


def _package_of(path: Path, root: Path) -> list[str]:
    """The dotted package a module file is in, as Python sets ``__package__`` (a package's own
    ``__init__`` is in the package itself)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1]


def _imports(path: Path, root: Path = SRC) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # ``from ..quantum import x`` is as much an arrow as ``from aetherflow_sdk.quantum import x``.
                package = _package_of(path, root)
                assert node.level <= len(package), f"{path}: relative import beyond the top-level package"
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            elif node.module:
                module = node.module
            else:
                continue
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith(("aetherflow", *APP_PACKAGES))}


def _module_files(package: str) -> list[Path]:
    path = SRC / package.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _allowed(name: str, own: str, allowed: set[str]) -> bool:
    if name in ("aetherflow_sdk", own) or name.startswith(own + "."):
        return True
    return any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_arrows_point_down(package: str) -> None:
    for path in _module_files(package):
        for name in _imports(path):
            assert _allowed(name, package, ALLOWED[package]), (
                f"{path.relative_to(SRC)} imports {name}: {package} may import only "
                f"{sorted(ALLOWED[package]) or 'nothing else of AetherFlow'}"
            )


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        ("aetherflow_sdk/session/_x.py", "from ..quantum import Connection", "aetherflow_sdk.quantum"),
        ("aetherflow_sdk/session/_x.py", "from . import _tokens", "aetherflow_sdk.session._tokens"),
        ("aetherflow_sdk/session/__init__.py", "from .. import quantum", "aetherflow_sdk.quantum"),
        ("aetherflow_sdk/session/__init__.py", "from ._state import S", "aetherflow_sdk.session._state"),
    ],
)
def test_relative_imports_are_resolved(tmp_path: Path, file: str, source: str, expected: str) -> None:
    path = tmp_path / file
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    assert expected in _imports(path, root=tmp_path)


def test_an_upward_relative_import_breaks_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "aetherflow_sdk" / "session" / "_x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from ..quantum import Connection\n")
    names = _imports(path, root=tmp_path)
    allowed = ALLOWED["aetherflow_sdk.session"]
    assert not all(_allowed(n, "aetherflow_sdk.session", allowed) for n in names)


def test_the_sdk_never_imports_the_node() -> None:
    for path in sorted((SRC / "aetherflow_sdk").rglob("*.py")):
        assert not any(n.startswith("aetherflow_node") for n in _imports(path)), path


def test_the_dispatcher_imports_no_subcommand() -> None:
    code = (
        "import sys, aetherflow_node._cli\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('aetherflow', 'trio', 'pycrdt')))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(loaded.stdout.split())
    assert modules <= {"aetherflow_node", "aetherflow_node._cli", "aetherflow_sdk", "aetherflow_sdk._errors",
                       "aetherflow_sdk._uuid7"}, modules  # fmt: skip


def test_apps_import_only_the_node_and_the_sdk() -> None:
    files = sorted(APPS.rglob("*.py"))
    assert any(path.parent.name == "tui_editor" for path in files)
    for path in files:
        own = path.relative_to(APPS).parts[0]
        for name in _imports(path, root=APPS):
            assert name.split(".")[0] in ("aetherflow_sdk", "aetherflow_node", own), (path, name)


def test_nothing_below_the_apps_imports_them() -> None:
    for path in sorted(SRC.rglob("*.py")):
        assert not any(n.split(".")[0] in APP_PACKAGES for n in _imports(path)), path


RELAY = SRC.parent / "relay"


def test_the_relay_stands_on_the_node_and_the_sdk_only() -> None:
    files = sorted((RELAY / "aetherflow_relay").rglob("*.py"))
    assert files, "relay/aetherflow_relay is missing"
    for path in files:
        for name in _imports(path, root=RELAY):
            assert name.split(".")[0] in ("aetherflow_relay", "aetherflow_node", "aetherflow_sdk"), (
                f"{path.relative_to(RELAY)} imports {name}: the relay may import only the node and the SDK"
            )


def test_nothing_imports_the_relay() -> None:
    for path in sorted(SRC.rglob("*.py")):
        assert not any(n.startswith("aetherflow_relay") for n in _imports(path)), path
