"""The sans-IO rule, enforced: core/, wire/ and replica.py never import I/O or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "raftd"
FORBIDDEN = {"asyncio", "socket", "time", "os", "select", "selectors", "threading", "uvloop",
             "subprocess", "signal"}
PURE = [*sorted((ROOT / "core").glob("*.py")), *sorted((ROOT / "wire").glob("*.py")),
        ROOT / "replica.py", ROOT / "statemachine.py"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pure_modules_import_no_io() -> None:
    assert len(PURE) > 10
    offenders = {
        str(p.relative_to(ROOT.parent)): sorted(imported_modules(p) & FORBIDDEN) for p in PURE
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_uses_no_global_randomness() -> None:
    for path in sorted((ROOT / "core").glob("*.py")):
        text = path.read_text()
        assert "random.random(" not in text and "random.randint(" not in text, path
