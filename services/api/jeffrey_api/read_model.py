"""One read model of the DreamEngine's state, shared by /dream/status, /metrics and auto-debug.

Each reader runs one query set and returns a frozen view; the derived values (active runs, queue
saturation) are computed here once, so the three consumers cannot disagree:

- `read_dream_view(session, user_id)`: runs by status, last run, last success, quality, pending
  and consolidated memories, dreams by emotion, run durations (one user, or everyone with None);
- `read_users_due(session, minimum)`: how many users the next scheduled pass would dream for;
- `read_queue_view(redis, admission)`: depth, admission limit and saturation of each Celery queue;
- `read_hygiene(redis, keys)`: the periodic report of Redis keys without a TTL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jeffrey_api.admission import queue_depth
from jeffrey_core.contract import Queue
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import AdmissionSettings
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import Consolidation, Dream, DreamRun, Memory, RunStatus

# Above this share of its admission limit a queue is reported (auto-debug; the alert uses the same).
SATURATION_WARNING = 0.85


@dataclass(frozen=True)
class RunSummary:
    id: str
    status: RunStatus
    queued_at: datetime
    finished_at: datetime | None
    quality: float | None

    @classmethod
    def of(cls, run: DreamRun | None) -> RunSummary | None:
        if run is None:
            return None
        return cls(run.id, RunStatus(run.status), run.queued_at, run.finished_at, run.quality)


@dataclass(frozen=True)
class DreamView:
    """The dream state of one user (`user_id`) or of everyone (`user_id` None), read at one moment."""

    user_id: str | None
    runs: Mapping[RunStatus, int]
    last_run: RunSummary | None
    last_success: RunSummary | None
    average_quality: float | None
    pending_memories: int
    consolidated_memories: int
    dreams_by_emotion: Mapping[str, int]
    run_durations: tuple[float, ...] = field(default=())  # seconds, finished runs, ascending

    def count(self, status: RunStatus) -> int:
        return self.runs.get(status, 0)

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())

    @property
    def active_runs(self) -> int:
        """Runs queued or running."""
        return sum(n for status, n in self.runs.items() if status.active)

    def last_success_age(self, now: float) -> float | None:
        """Seconds since the last successful run finished; None when there was none."""
        if self.last_success is None or self.last_success.finished_at is None:
            return None
        return now - self.last_success.finished_at.timestamp()


def read_dream_view(session: Session, user_id: str | None = None) -> DreamView:
    return DreamView(
        user_id=user_id,
        runs={RunStatus(status): n for status, n in store.run_counts(session, user_id).items()},
        last_run=RunSummary.of(store.last_run(session, user_id)),
        last_success=RunSummary.of(store.last_run(session, user_id, RunStatus.SUCCEEDED)),
        average_quality=store.average_quality(session, user_id),
        pending_memories=store.count_pending(session, user_id),
        consolidated_memories=_consolidated(session, user_id),
        dreams_by_emotion=_dreams_by_emotion(session, user_id),
        run_durations=tuple(sorted(_run_durations(session, user_id))),
    )


def read_users_due(session: Session, minimum: int) -> int:
    """Users with at least `minimum` memories not consolidated: the scheduled pass starts a run for each."""
    return len(store.users_with_pending(session, minimum))


def _consolidated(session: Session, user_id: str | None) -> int:
    query = select(func.count()).select_from(Consolidation)
    if user_id is not None:
        query = query.join(Memory, Memory.id == Consolidation.memory_id).where(Memory.user_id == user_id)
    return int(session.scalar(query) or 0)


def _dreams_by_emotion(session: Session, user_id: str | None) -> dict[str, int]:
    query = select(Dream.dominant_emotion, func.count()).group_by(Dream.dominant_emotion)
    if user_id is not None:
        query = query.where(Dream.user_id == user_id)
    return {emotion or "none": int(n) for emotion, n in session.execute(query)}


def _run_durations(session: Session, user_id: str | None) -> list[float]:
    finished = [s.value for s in RunStatus if s.finished]
    query = select(DreamRun.started_at, DreamRun.finished_at).where(
        DreamRun.status.in_(finished), DreamRun.started_at.is_not(None), DreamRun.finished_at.is_not(None)
    )
    if user_id is not None:
        query = query.where(DreamRun.user_id == user_id)
    return [(end - start).total_seconds() for start, end in session.execute(query) if start and end]


@dataclass(frozen=True)
class QueueLoad:
    queue: Queue
    depth: int
    limit: int | None  # the admission limit; None for queues the API never sends to

    @property
    def saturation(self) -> float | None:
        """depth / limit, rounded to 4 places (1.0 = the API answers 429); None without a limit."""
        return None if not self.limit else round(self.depth / self.limit, 4)


@dataclass(frozen=True)
class QueueView:
    loads: Mapping[Queue, QueueLoad]

    def __getitem__(self, queue: Queue) -> QueueLoad:
        return self.loads[queue]

    def __iter__(self) -> Iterator[QueueLoad]:
        return iter(self.loads.values())


def queue_view(depths: Mapping[Queue, int], admission: AdmissionSettings) -> QueueView:
    return QueueView({q: QueueLoad(q, depth, admission.max_depth(q)) for q, depth in depths.items()})


def read_queue_view(
    client: redis.Redis, admission: AdmissionSettings, queues: Iterable[Queue] = tuple(Queue)
) -> QueueView:
    return queue_view({q: queue_depth(client, q.value) for q in queues}, admission)


@dataclass(frozen=True)
class HygieneReport:
    """What the worker's periodic scan found (jeffrey_worker.tasks.redis_hygiene)."""

    documented: int
    undocumented: int
    examples: list[Any] = field(default_factory=list)
    at: float | None = None


def read_hygiene(client: redis.Redis, keys: RedisKeys) -> HygieneReport | None:
    """The last scan's report; None when no scan ran within its TTL."""
    raw = client.get(keys.redis_hygiene())
    if not raw:
        return None
    report = json.loads(raw)
    return HygieneReport(
        documented=int(report["documented"]),
        undocumented=int(report["undocumented"]),
        examples=list(report.get("examples") or []),
        at=report.get("at"),
    )
