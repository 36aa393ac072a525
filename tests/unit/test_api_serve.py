"""The API launcher (`python -m jeffrey_api.serve`): how many worker processes, and a clean metrics dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from jeffrey_api import serve
from jeffrey_core.settings import ApiSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(serve, "CGROUP_V2_CPU_MAX", cpu_max)
    monkeypatch.setattr(serve, "CGROUP_V1_QUOTA", tmp_path / "absent")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    return cpu_max


def test_a_cgroup_quota_caps_the_cpus_rounded_up(cgroup: Path) -> None:
    cgroup.write_text("150000 100000\n")
    assert serve.available_cpus() == 2
    cgroup.write_text("50000 100000\n")
    assert serve.available_cpus() == 1


def test_without_a_quota_every_cpu_of_the_affinity_counts(cgroup: Path) -> None:
    cgroup.write_text("max 100000\n")
    assert serve.available_cpus() == 4
    cgroup.unlink()
    assert serve.available_cpus() == 4


def test_api_workers_blank_means_automatic_and_zero_is_refused() -> None:
    assert ApiSettings(API_WORKERS="").workers is None
    assert ApiSettings(API_WORKERS="3").workers == 3
    with pytest.raises(ValidationError):
        ApiSettings(API_WORKERS="0")


def test_the_metrics_dir_starts_empty(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    serve.empty_metrics_dir(str(directory))
    assert directory.is_dir() and list(directory.iterdir()) == []
    serve.empty_metrics_dir(None)  # single process: nothing to do


def test_uvicorn_gets_the_worker_count_and_the_options() -> None:
    argv = serve.uvicorn_argv(3, ["--port", "8000"])
    assert argv[1:] == ["-m", "uvicorn", "jeffrey_api.main:app", "--workers", "3", "--port", "8000"]
