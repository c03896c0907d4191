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


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("aetherflow")}


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
