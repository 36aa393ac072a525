"""/metrics across the API's worker processes (prometheus_client multiprocess mode).

With PROMETHEUS_MULTIPROC_DIR set (compose, through `python -m jeffrey_api.serve`, which empties
the directory before the workers start), every worker process writes its counters and histograms
(the HTTP metrics of jeffrey_api.http_metrics) to files in that directory, and whichever
process answers a scrape returns the sum over all of them. What is read at scrape time from the
database and Redis (DreamCollector) is collected once, by the answering process; the open event
streams are a `livesum` gauge (the total over live processes); process_* metrics are read from
/proc for every live worker, labelled `pid`. A worker marks itself dead when it shuts down, and a
scrape drops the live-gauge files of workers that died without doing so (killed, out of memory).
Without the variable (`make run`, the tests) the API keeps one registry, written and scraped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from jeffrey_api.streams import StreamLimiter
from jeffrey_core.stack_env import pid_alive

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The shared metrics directory when multiprocess mode is on (created if missing), else None.

    prometheus_client reads the same variable when first imported to choose file-backed values."""
    value = os.environ.get(MULTIPROC_ENV)
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def scrape_registry(directory: Path) -> CollectorRegistry:
    """What /metrics serves in multiprocess mode: every process's files, summed, plus process_*."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(LiveProcessesCollector(directory))
    PlatformCollector(registry=registry)
    return registry


def watch_streams(limiter: StreamLimiter) -> None:
    """Report this process's event streams and cap into `livesum` gauges (summed over live workers).

    Creating the gauges also creates this process's live-gauge file, which marks it live."""
    active = Gauge(
        "jeffrey_api_event_streams",
        "Server-Sent Event streams open, summed over the live API processes.",
        multiprocess_mode="livesum",
        registry=None,
    )
    limit = Gauge(
        "jeffrey_api_event_streams_limit",
        "Most event streams accepted, summed over the live API processes (SSE_MAX_TOTAL each).",
        multiprocess_mode="livesum",
        registry=None,
    )
    limit.set(limiter.max_total)
    limiter.report_active_to(active.set)


def mark_self_dead(directory: Path) -> None:
    """Drop this process's live-gauge files (its counters stay: totals must not go down)."""
    mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


class LiveProcessesCollector(Collector):
    """process_* (CPU, resident memory, fds) of every live API worker, labelled by pid.

    prometheus_client's ProcessCollector reads one process; in multiprocess mode the answering
    process reads /proc for each pid that has a live-gauge file (the workers share a PID namespace).
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in live_pids(self._dir):
            reader = ProcessCollector(pid=lambda pid=pid: str(pid), registry=None)  # type: ignore[misc]
            for family in reader.collect():
                target = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    target.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


def live_pids(directory: Path) -> list[int]:
    """Pids with a live-gauge file whose process still runs; the files of dead ones are removed."""
    pids: set[int] = set()
    for path in directory.glob("gauge_live*_*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid_alive(pid):
            pids.add(pid)
        else:
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return sorted(pids)
