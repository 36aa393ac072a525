"""The API as compose runs it: `python -m jeffrey_api.serve` (uvicorn --workers), prometheus_client
multiprocess mode. Real processes: /metrics sums every worker's request counts whichever worker
answers the scrape, emits the scrape-time gauges (database, Redis) once, and forgets a killed worker's
live gauges while keeping its counts."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jeffrey_dev.stack import free_port
from tests.support.processes import ServiceProcess, eventually, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]
WORKERS = 2
SSE_CAP = 7
REQUESTS = 60
SCRAPES = 8
ONCE = ("jeffrey_dream_metrics_up", "jeffrey_dream_pending_memories", "jeffrey_dream_enabled", "python_info")


def _start(env: dict[str, str], log_dir: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    argv = [sys.executable, "-m", "jeffrey_api.serve", "--host", "127.0.0.1", "--port", str(port)]
    api = ServiceProcess("api-multiprocess", [*argv, "--no-access-log"], env, log_dir).start()
    return api, f"http://127.0.0.1:{port}"


def _scrape(base: str) -> list[tuple[str, dict[str, str], float]]:
    body = httpx.get(f"{base}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]


def _requests_counted(samples: list[tuple[str, dict[str, str], float]]) -> float:
    return sum(
        v for n, labels, v in samples if n == "http_requests_total" and labels["handler"] == "/healthz"
    )


def _pids(samples: list[tuple[str, dict[str, str], float]]) -> set[str]:
    return {labels["pid"] for n, labels, _ in samples if n == "process_resident_memory_bytes"}


def _stream_cap(samples: list[tuple[str, dict[str, str], float]]) -> float:
    return sum(v for n, _, v in samples if n == "jeffrey_api_event_streams_limit")


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _workers_up(base: str) -> bool:
    if not _healthy(base):
        return False
    samples = _scrape(base)
    return len(_pids(samples)) == WORKERS and _stream_cap(samples) == WORKERS * SSE_CAP


def test_metrics_sum_over_worker_processes_and_scrape_time_gauges_appear_once(
    redis_url: str, sqlite_url: str, log_dir: Path, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "api-metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    env = service_env(
        redis_url,
        sqlite_url,
        API_WORKERS=str(WORKERS),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        SSE_MAX_TOTAL=str(SSE_CAP),
    )
    api, base = _start(env, log_dir)
    try:
        eventually(lambda: _workers_up(base) or not api.running(), 60, "both API workers never reported")
        assert api.running(), api.output()[-3000:]
        assert not stale.exists(), "the launcher must empty PROMETHEUS_MULTIPROC_DIR before the workers start"
        before = _requests_counted(_scrape(base))
        for _ in range(REQUESTS):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200

        for _ in range(SCRAPES):  # each scrape may be answered by either worker
            samples = _scrape(base)
            assert _requests_counted(samples) >= before + REQUESTS
            series = Counter((name, tuple(sorted(labels.items()))) for name, labels, _ in samples)
            assert [s for s, n in series.items() if n > 1] == []
            for name in ONCE:
                assert sum(1 for n, _, _ in samples if n == name) == 1, name
            assert _stream_cap(samples) == WORKERS * SSE_CAP
            assert len(_pids(samples)) == WORKERS

        # A worker killed outright (no shutdown): uvicorn starts another; the scrape drops the dead
        # one's live gauges (the stream cap is not counted three times) and keeps its request counts.
        victim = sorted(_pids(_scrape(base)))[0]
        os.kill(int(victim), signal.SIGKILL)
        eventually(
            lambda: victim not in _pids(_scrape(base)) and _workers_up(base),
            60,
            "the killed worker was not replaced, or its live gauges were still summed",
        )
        assert _requests_counted(_scrape(base)) >= before + REQUESTS
    finally:
        api.stop()
