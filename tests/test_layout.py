"""The architecture stays easy to see: imports run one way, the method is decided in one place, files stay small.

dil (CLI, server launcher, tracking, report) -> flows -> tasks -> dil_core. dil_core never imports Prefect or
MLflow; nothing outside :mod:`dil_core.methods` asks which method a campaign runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dil", "dil_core", "flows", "tasks")
#: Which project packages each package may import at all.
ALLOWED = {
    "dil_core": {"dil_core"},
    "tasks": {"dil_core", "tasks"},
    "flows": {"dil_core", "tasks", "flows"},
    "dil": {"dil_core", "tasks", "flows", "dil"},
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, *, top_level_only: bool, modules: dict[str, Path] | None = None) -> set[str]:
    """Modules ``path`` imports (``from package import submodule`` counts as the submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules or {})
            names |= subs if subs and len(subs) == len(node.names) else {node.module}
    return names


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_run_one_way(module: str) -> None:
    pkg = module.split(".")[0]
    used = {name.split(".")[0] for name in _imports(_modules()[module], top_level_only=False)}
    project = used & set(PACKAGES)
    assert project <= ALLOWED[pkg], f"{module} imports {sorted(project - ALLOWED[pkg])}"
    if pkg == "dil_core":
        assert not used & {"prefect", "mlflow"}, f"{module} imports {sorted(used & {'prefect', 'mlflow'})}"


def test_no_import_cycle() -> None:
    mods = _modules()
    graph = {m: {n for n in _imports(p, top_level_only=True, modules=mods) if n in mods and n != m}
             for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(n):], n]))
            if n not in state:
                visit(n, [*trail, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_the_method_is_asked_for_in_one_place() -> None:
    pattern = re.compile(r"\bmethod\s*[!=]=")
    hits = [f"{p.relative_to(REPO)}:{i}" for folder in (*PACKAGES, "bench") for p in sorted((REPO / folder).rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_files_stay_small() -> None:
    long = [f"{p.relative_to(REPO)} ({n} lines)" for folder in (*PACKAGES, "bench")
            for p in sorted((REPO / folder).rglob("*.py")) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert long == []
