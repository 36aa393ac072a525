"""Prometheus collector of DreamEngine state, read at scrape time from the database and Redis.

Computed from shared state rather than counted in-process, so every API replica reports the
same values. Results are cached for a few seconds; a failing read drops the family for that
scrape and sets `jeffrey_dream_metrics_up` to 0 instead of failing /metrics.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from jeffrey_api.admission import queue_depth
from jeffrey_api.state import AppState
from jeffrey_core.contract import Queue
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import RunStatus

log = logging.getLogger(__name__)
RUN_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
CACHE_SECONDS = 5.0


class DreamCollector(Collector):
    def __init__(self, state_getter: Any) -> None:
        self._state_getter = state_getter
        self._cached: tuple[float, list[Any]] | None = None

    def collect(self) -> Iterator[Any]:
        if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
            yield from self._cached[1]
            return
        state: AppState | None = self._state_getter()
        if state is None:
            return
        families: list[Any] = []
        up = 1.0
        try:
            families += self._database(state)
        except Exception as exc:
            log.warning("dream metrics: database read failed (%s)", exc.__class__.__name__)
            up = 0.0
        try:
            families += self._redis(state)
        except Exception as exc:
            log.warning("dream metrics: redis read failed (%s)", exc.__class__.__name__)
            up = 0.0
        families.append(
            GaugeMetricFamily("jeffrey_dream_metrics_up", "1 when dream metrics could be read.", up)
        )
        self._cached = (time.monotonic(), families)
        yield from families

    def _database(self, state: AppState) -> list[Any]:
        with state.sessions() as session:
            counts = store.run_counts(session)
            last_success = store.last_run(session, status=RunStatus.SUCCEEDED)
            pending = store.count_pending(session)
            durations = sorted(store.run_durations(session))
            consolidated = store.consolidation_total(session)
            by_emotion = store.dreams_by_emotion(session)
        runs = CounterMetricFamily(
            "jeffrey_dream_runs", "Dream runs finished, by outcome.", labels=["outcome"]
        )
        for outcome in ("succeeded", "failed"):
            runs.add_metric([outcome], counts.get(outcome, 0))
        active = GaugeMetricFamily("jeffrey_dream_runs_active", "Runs queued or running.")
        active.add_metric([], counts.get("queued", 0) + counts.get("running", 0))
        families: list[Any] = [runs, active]
        families.append(
            CounterMetricFamily(
                "jeffrey_dream_memories_consolidated", "Memories consolidated (all runs).", consolidated
            )
        )
        dreams = CounterMetricFamily(
            "jeffrey_dreams", "Dreams by dominant emotion.", labels=["dominant_emotion"]
        )
        for emotion, count in sorted(by_emotion.items()):
            dreams.add_metric([emotion], count)
        families.append(dreams)
        families.append(
            GaugeMetricFamily("jeffrey_dream_pending_memories", "Memories not yet consolidated.", pending)
        )
        if last_success is not None:
            if last_success.quality is not None:
                families.append(
                    GaugeMetricFamily(
                        "jeffrey_dream_quality", "Quality of the last successful run.", last_success.quality
                    )
                )
            if last_success.finished_at is not None:
                families.append(
                    GaugeMetricFamily(
                        "jeffrey_dream_last_success_timestamp_seconds",
                        "When the last successful run finished (Unix time).",
                        last_success.finished_at.timestamp(),
                    )
                )
        buckets = [(str(b), bisect.bisect_right(durations, b)) for b in RUN_BUCKETS] + [
            ("+Inf", len(durations))
        ]
        histogram = HistogramMetricFamily(
            "jeffrey_dream_run_duration_seconds", "Duration of finished dream runs."
        )
        histogram.add_metric([], buckets, sum_value=sum(durations))
        families.append(histogram)
        return families

    def _redis(self, state: AppState) -> list[Any]:
        redis = state.sync_redis
        enabled, batch_size = redis.mget(state.keys.dream_enabled(), state.keys.dream_batch_size())
        depth = GaugeMetricFamily(
            "jeffrey_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        saturation = GaugeMetricFamily(
            "jeffrey_queue_saturation_ratio", "Queue depth over its admission limit.", labels=["queue"]
        )
        depths: dict[str, int] = {}
        for queue in Queue:
            depths[queue.value] = queue_depth(redis, queue.value)
            depth.add_metric([queue.value], depths[queue.value])
            limit = state.settings.admission.max_depth(queue)
            if limit:
                saturation.add_metric([queue.value], round(depths[queue.value] / limit, 4))
        families: list[Any] = []
        hygiene = redis.get(state.keys.redis_hygiene())
        if hygiene:
            report = json.loads(hygiene)
            without_ttl = GaugeMetricFamily(
                "jeffrey_redis_keys_without_ttl",
                "Project keys with no TTL, by whether their owner is documented (periodic scan).",
                labels=["documented"],
            )
            without_ttl.add_metric(["true"], report["documented"])
            without_ttl.add_metric(["false"], report["undocumented"])
            families.append(without_ttl)
        return [
            *families,
            depth,
            saturation,
            GaugeMetricFamily(
                "jeffrey_dream_dlq_size", "Tasks in the dead-letter queue.", depths[Queue.DEAD_LETTER.value]
            ),
            GaugeMetricFamily(
                "jeffrey_dream_batch_size",
                "Learned dream batch size B.",
                float(batch_size) if batch_size else state.settings.dream.batch_initial,
            ),
            GaugeMetricFamily(
                "jeffrey_dream_enabled", "1 when scheduled dreaming is on.", 0.0 if enabled == "0" else 1.0
            ),
        ]
