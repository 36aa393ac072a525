"""`python -m jeffrey_api.serve [uvicorn options]`: the API as the compose service runs it.

Starts `uvicorn jeffrey_api.main:app --workers N`, N from API_WORKERS or, when that is blank, the
CPUs this container may use (the scheduler affinity, capped by a cgroup CPU quota). Uvicorn's own
supervisor restarts a worker that dies or stops answering its pings. When PROMETHEUS_MULTIPROC_DIR
is set, the directory is emptied first: samples of an earlier run must not be summed into this one
(jeffrey_api.multiprocess_metrics). prometheus_client is not imported here; uvicorn replaces this
process (exec), so signals from the container runtime reach uvicorn's supervisor directly.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

from jeffrey_core.settings import ApiSettings

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def available_cpus() -> int:
    """CPUs this process may run on, capped by the cgroup quota (`deploy.resources.limits.cpus`)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def cgroup_cpu_quota() -> float | None:
    """The cgroup CPU limit in CPUs (v2 `cpu.max`, else v1 cfs quota/period), None when unlimited."""
    try:
        if CGROUP_V2_CPU_MAX.exists():
            quota, period = CGROUP_V2_CPU_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if CGROUP_V1_QUOTA.exists() and CGROUP_V1_PERIOD.exists():
            quota_us = int(CGROUP_V1_QUOTA.read_text())
            return None if quota_us <= 0 else quota_us / int(CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return None


def empty_metrics_dir(value: str | None) -> None:
    """Start multiprocess mode from an empty directory (created when missing)."""
    if not value:
        return
    path = Path(value)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def uvicorn_argv(workers: int, options: list[str]) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "jeffrey_api.main:app", "--workers", str(workers), *options]


def main(options: list[str]) -> None:
    workers = ApiSettings().workers or available_cpus()
    empty_metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    argv = uvicorn_argv(workers, options)
    os.execv(argv[0], argv)  # noqa: S606 (our own interpreter and fixed arguments, no shell)


if __name__ == "__main__":
    main(sys.argv[1:])
