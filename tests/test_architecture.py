"""ARCHITECTURE.md's module table is the code's: every module has a row, each row's "may
import" column is exactly what the module imports inside kdtune, and the "only X imports Y"
rules hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdtune"
# Third-party frameworks that one module (or the modules of one package) may import.
ONLY: dict[str, str] = {"ray": "tune", "mlflow": "tracking", "click": "cli"}


def unit_of(module: str) -> str:
    """A row of the table: ``kdtune.data.coco`` → ``data.coco``, ``kdtune.space`` → ``space``
    (its ``__init__``); ``kdtune`` itself (and its ``__version__``) → ``kdtune``."""
    parts = module.split(".")[1:]
    if not parts or parts[0].startswith("__"):
        return "kdtune"
    return ".".join(parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(kdtune units, top-level third-party names) that ``path`` imports, at any depth."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "kdtune" and _is_package(node.module):
                # `from kdtune.data import PoseSet` imports the package, but
                # `from kdtune import api` imports the module kdtune.api
                names = [
                    f"{node.module}.{a.name}"
                    if _is_module(f"{node.module}.{a.name}")
                    else node.module
                    for a in node.names
                ]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] == "kdtune":
                ours.add(unit_of(name))
            else:
                theirs.add(name.split(".")[0])
    return ours, theirs


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").is_file()


def code_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    ours: dict[str, set[str]] = {}
    theirs: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(module_name(path))
        if unit == "kdtune":
            continue  # the package's face: the version string
        mine, other = imports_of(path)
        ours.setdefault(unit, set()).update(mine - {unit, "kdtune"})
        theirs.setdefault(unit, set()).update(other)
    return ours, theirs


def table() -> dict[str, set[str]]:
    """``module -> may import`` from the markdown table of ARCHITECTURE.md."""
    rows: dict[str, set[str]] = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`[a-z_.]+`", cells[0]):
            continue
        allowed = set(re.findall(r"`?([a-z_.]+)`?", cells[2])) - {"lazily", "in"}
        rows[cells[0].strip("`")] = allowed
    return rows


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    ours, _ = code_graph()
    assert set(table()) == set(ours)


@pytest.mark.parametrize("unit", sorted(code_graph()[0]))
def test_may_import_column_is_what_the_module_imports(unit: str) -> None:
    ours, _ = code_graph()
    assert ours[unit] == table()[unit], f"ARCHITECTURE.md row of {unit!r}"


def test_only_one_module_imports_each_heavy_framework() -> None:
    _, theirs = code_graph()
    for framework, owner in ONLY.items():
        users = sorted(u for u, names in theirs.items() if framework in names)
        assert users and all(u == owner or u.startswith(owner + ".") for u in users), framework


def test_the_table_has_no_cycle() -> None:
    graph = table()
    seen: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        if seen.get(node) == 2:
            return
        assert seen.get(node) != 1, " -> ".join((*path, node))
        seen[node] = 1
        for dep in graph.get(node, set()):
            visit(dep, (*path, node))
        seen[node] = 2

    for node in graph:
        visit(node, ())
