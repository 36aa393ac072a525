"""Architecture rules: which package may import which, no import cycles, no side effects at import.

- the API never imports worker or beat code, and the worker never imports the API's;
- no service imports `jeffrey_dev` (the CLI and the dev launcher);
- `jeffrey_core` (what the services share at run time) imports no service and not `jeffrey_dev`;
- no cycle among module-level imports of the project's own modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.unit


PACKAGES = {
    "jeffrey_core": ROOT / "shared" / "jeffrey_core",
    "jeffrey_dev": ROOT / "shared" / "jeffrey_dev",
    "jeffrey_api": ROOT / "services" / "api" / "jeffrey_api",
    "jeffrey_worker": ROOT / "services" / "worker" / "jeffrey_worker",
    "jeffrey_beat": ROOT / "services" / "beat" / "jeffrey_beat",
}
FORBIDDEN = {
    "jeffrey_api": {"jeffrey_worker", "jeffrey_beat", "jeffrey_dev"},
    "jeffrey_worker": {"jeffrey_api", "jeffrey_beat", "jeffrey_dev"},
    "jeffrey_beat": {"jeffrey_api", "jeffrey_worker", "jeffrey_dev"},
    "jeffrey_core": {"jeffrey_api", "jeffrey_worker", "jeffrey_beat", "jeffrey_dev"},
}


def _module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *parts)).removesuffix(".__init__")


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_packages_import_only_what_their_room_allows() -> None:
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in PACKAGES[package].rglob("*.py"):
            for name in _imports(ast.parse(path.read_text())):
                if name.split(".")[0] in forbidden:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def _module_level_graph() -> dict[str, set[str]]:
    """Edges between the project's modules from imports executed at import time (not inside functions)."""
    modules = {
        _module_name(package, path): path for package, root in PACKAGES.items() for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top = [
            n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        found = _imports(ast.Module(body=top, type_ignores=[]))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle() -> None:
    graph = _module_level_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_building_the_api_loads_no_worker_module() -> None:
    code = (
        "import sys, jeffrey_api.main as m; m.create_app(); "
        "bad = sorted(n for n in sys.modules if n.startswith('jeffrey_worker')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_api_module_builds_nothing() -> None:
    # With a setting that would refuse to start, a bare import must still succeed: no work at import.
    code = "import jeffrey_api.main, jeffrey_core.settings, jeffrey_core.store.models"
    env = {"PATH": "/usr/bin:/bin", "SECURITY_MODE": "prod", "JEFFREY_SECRET_KEY": "changethis"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


MAX_FUNCTION_LINES = 60


def test_no_function_in_the_product_is_over_sixty_lines() -> None:
    """Complexity is held to 10 by ruff (C901 in `make lint`); length is held here."""
    long = []
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
