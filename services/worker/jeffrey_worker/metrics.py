"""Worker metrics, correct under the prefork pool (prometheus_client multiprocess mode).

Each pool process writes its samples to files in PROMETHEUS_MULTIPROC_DIR; the worker's main
process serves the aggregate on WORKER_METRICS_PORT (default 9808). The directory is emptied when
the worker starts and a pool process that exits is marked dead. prometheus_client decides its
storage when first imported, so it is imported only after `prepare_multiprocess_dir()` has run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BREAKER_STATES = {"closed": 0, "open": 1, "half-open": 2}


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (created if unset); call before forking."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="jeffrey-worker-metrics-"))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def start_exporter(host: str, port: int) -> None:
    """Serve the aggregate of every pool process on host:port (main process only)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
    log.info("worker metrics on http://%s:%s/metrics", host, port)


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@dataclass(frozen=True)
class WorkerMetrics:
    confidence: Any
    predictions: Any
    inference_seconds: Any
    breaker_state: Any
    annotations: Any
    dream_batches: Any
    dream_batch_seconds: Any
    memories_consolidated: Any
    dreams_created: Any


@lru_cache(maxsize=1)
def worker_metrics() -> WorkerMetrics:
    """The metric objects, created on first use in each process."""
    from prometheus_client import Counter, Gauge, Histogram

    return WorkerMetrics(
        confidence=Histogram(
            "jeffrey_emotion_ml_confidence",
            "Confidence of each emotion prediction (calibrated probability of the chosen label).",
            ["method"],
            buckets=CONFIDENCE_BUCKETS,
        ),
        predictions=Counter(
            "jeffrey_emotion_predictions_total",
            "Emotion predictions by Ekman label and method.",
            ["label", "method"],
        ),
        inference_seconds=Histogram(
            "jeffrey_emotion_inference_seconds",
            "Duration of one emotion inference call (a micro-batch).",
            ["method"],
            buckets=LATENCY_BUCKETS,
        ),
        breaker_state=Gauge(
            "jeffrey_emotion_breaker_state",
            "Emotion model circuit breaker: 0 closed, 1 open, 2 half-open.",
            multiprocess_mode="livemostrecent",
        ),
        annotations=Counter(
            "jeffrey_emotion_annotations_total",
            "Memories annotated (written) or skipped (already annotated: a redelivery).",
            ["outcome"],
        ),
        dream_batches=Counter(
            "jeffrey_dream_batches_total",
            "Dream batches by outcome (committed, time_limit, retry, failed).",
            ["outcome"],
        ),
        dream_batch_seconds=Histogram(
            "jeffrey_dream_batch_duration_seconds",
            "Duration of one committed dream consolidation batch.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60),
        ),
        # Counted when the batch that does it commits, so they only go up (unlike row counts).
        memories_consolidated=Counter(
            "jeffrey_dream_memories_consolidated_total",
            "Memories consolidated by committed dream batches.",
        ),
        dreams_created=Counter(
            "jeffrey_dreams_created_total",
            "Dreams created by committed dream batches, by dominant emotion at creation.",
            ["dominant_emotion"],
        ),
    )


def base_method(method: str) -> str:
    """Collapse 'fallback:<reason>' to 'fallback' so label values stay few."""
    return method.split(":", 1)[0]
