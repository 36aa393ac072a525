"""Architecture rules: the API never imports worker code; importing a module has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.unit


def test_api_source_never_imports_the_worker_package() -> None:
    offenders = []
    for path in (ROOT / "services" / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            bad = [n for n in names if n.split(".")[0] == "jeffrey_worker"]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in bad]
    assert offenders == []


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
