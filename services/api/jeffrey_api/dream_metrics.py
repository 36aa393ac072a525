"""Prometheus collector of DreamEngine state, read at scrape time from the database and Redis.

Computed from shared state rather than counted in-process, so every API replica reports the
same values. Current row counts are gauges (`jeffrey_dreams`, `jeffrey_dream_memories_consolidated`):
they go down when dreams merge or memories are deleted. The events themselves are counted by the
worker, where they happen (`jeffrey_dreams_created_total`, `jeffrey_dream_memories_consolidated_total`).
`jeffrey_dream_runs_total` stays a counter because run rows are never deleted and a finished run
never changes status. Results are cached for a few seconds; a failing read drops the family for
that scrape and sets `jeffrey_dream_metrics_up` to 0 instead of failing /metrics.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from jeffrey_api.dream_state import read_view
from jeffrey_api.read_model import DreamView, QueueView, read_hygiene, read_queue_view, read_users_due
from jeffrey_api.state import AppState
from jeffrey_core.contract import DreamToggle, Queue
from jeffrey_core.store.models import RunStatus

log = logging.getLogger(__name__)
RUN_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
CACHE_SECONDS = 5.0


class DreamCollector(Collector):
    def __init__(self, state_getter: Callable[[], AppState | None]) -> None:
        self._state_getter = state_getter
        self._cached: tuple[float, list[Any]] | None = None

    def collect(self) -> Iterator[Any]:
        if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
            yield from self._cached[1]
            return
        state = self._state_getter()
        if state is None:
            return
        families: list[Any] = []
        up = 1.0
        try:
            families += dream_families(read_view(state, None))
            families.append(_users_due(state))
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

    def _redis(self, state: AppState) -> list[Any]:
        redis = state.sync_redis
        enabled, batch_size = redis.mget(state.keys.dream_enabled(), state.keys.dream_batch_size())
        queues = read_queue_view(redis, state.settings.admission)
        families = queue_families(queues)
        hygiene = read_hygiene(redis, state.keys)
        if hygiene is not None:
            without_ttl = GaugeMetricFamily(
                "jeffrey_redis_keys_without_ttl",
                "Project keys with no TTL, by whether their owner is documented (periodic scan).",
                labels=["documented"],
            )
            without_ttl.add_metric(["true"], hygiene.documented)
            without_ttl.add_metric(["false"], hygiene.undocumented)
            families.append(without_ttl)
        return [
            *families,
            GaugeMetricFamily(
                "jeffrey_dream_batch_size",
                "Learned dream batch size B.",
                float(batch_size) if batch_size else state.settings.dream.batch_initial,
            ),
            GaugeMetricFamily(
                "jeffrey_dream_enabled",
                "1 when scheduled dreaming is on.",
                1.0 if DreamToggle.is_on(enabled) else 0.0,
            ),
        ]


def _users_due(state: AppState) -> GaugeMetricFamily:
    with state.sessions() as session:
        due = read_users_due(session, state.settings.dream.min_pending)
    return GaugeMetricFamily(
        "jeffrey_dream_users_due",
        "Users with at least DREAM_MIN_PENDING memories not consolidated (dreams are due for them).",
        due,
    )


def dream_families(view: DreamView) -> list[Any]:
    """The database metrics, from the global dream view."""
    runs = CounterMetricFamily(
        "jeffrey_dream_runs",
        "Dream runs finished, by outcome (run rows are never deleted).",
        labels=["outcome"],
    )
    for outcome in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        runs.add_metric([outcome.value], view.count(outcome))
    dreams = GaugeMetricFamily(
        "jeffrey_dreams", "Dreams that exist now, by dominant emotion.", labels=["dominant_emotion"]
    )
    for emotion, count in sorted(view.dreams_by_emotion.items()):
        dreams.add_metric([emotion], count)
    families: list[Any] = [
        runs,
        GaugeMetricFamily("jeffrey_dream_runs_active", "Runs queued or running.", view.active_runs),
        GaugeMetricFamily(
            "jeffrey_dream_memories_consolidated",
            "Memories consolidated that exist now (consolidation rows).",
            view.consolidated_memories,
        ),
        dreams,
        GaugeMetricFamily(
            "jeffrey_dream_pending_memories", "Memories not yet consolidated.", view.pending_memories
        ),
        _duration_histogram(view.run_durations),
    ]
    success = view.last_success
    if success is not None and success.quality is not None:
        families.append(
            GaugeMetricFamily("jeffrey_dream_quality", "Quality of the last successful run.", success.quality)
        )
    if success is not None and success.finished_at is not None:
        families.append(
            GaugeMetricFamily(
                "jeffrey_dream_last_success_timestamp_seconds",
                "When the last successful run finished (Unix time).",
                success.finished_at.timestamp(),
            )
        )
    return families


def _duration_histogram(durations: tuple[float, ...]) -> HistogramMetricFamily:
    """`durations` ascending, as the view holds them."""
    buckets = [(str(b), bisect.bisect_right(durations, b)) for b in RUN_BUCKETS]
    histogram = HistogramMetricFamily(
        "jeffrey_dream_run_duration_seconds", "Duration of finished dream runs."
    )
    histogram.add_metric([], [*buckets, ("+Inf", len(durations))], sum_value=sum(durations))
    return histogram


def queue_families(queues: QueueView) -> list[Any]:
    depth = GaugeMetricFamily(
        "jeffrey_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
    )
    saturation = GaugeMetricFamily(
        "jeffrey_queue_saturation_ratio", "Queue depth over its admission limit.", labels=["queue"]
    )
    for load in queues:
        depth.add_metric([load.queue.value], load.depth)
        if load.saturation is not None:
            saturation.add_metric([load.queue.value], load.saturation)
    dlq = GaugeMetricFamily(
        "jeffrey_dream_dlq_size", "Tasks in the dead-letter queue.", queues[Queue.DEAD_LETTER].depth
    )
    return [depth, saturation, dlq]
