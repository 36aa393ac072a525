"""Dream and dream-run queries shared by the API and the workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jeffrey_core.store.models import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    Dream,
    DreamRun,
    Memory,
    RunStatus,
    RunTrigger,
    utcnow,
)
from jeffrey_core.store.pagination import Cursor, keyset_page

ACTIVE = tuple(s.value for s in ACTIVE_RUN_STATUSES)
FINISHED = tuple(s.value for s in FINISHED_RUN_STATUSES)


def create_run(session: Session, user_id: str, trigger: RunTrigger) -> DreamRun:
    run = DreamRun(
        user_id=user_id,
        trigger=trigger.value,
        status=RunStatus.QUEUED.value,
        memories_total=count_pending(session, user_id),
        timings={},
    )
    session.add(run)
    session.flush()
    return run


def count_pending(session: Session, user_id: str | None = None) -> int:
    query = select(func.count()).select_from(Memory).where(Memory.consolidated_at.is_(None))
    if user_id is not None:
        query = query.where(Memory.user_id == user_id)
    return int(session.scalar(query) or 0)


def users_with_pending(session: Session, minimum: int) -> list[tuple[str, int]]:
    query = (
        select(Memory.user_id, func.count())
        .where(Memory.consolidated_at.is_(None))
        .group_by(Memory.user_id)
        .having(func.count() >= minimum)
        .order_by(Memory.user_id)
    )
    return [(user, int(n)) for user, n in session.execute(query)]


def active_run(session: Session, user_id: str) -> DreamRun | None:
    query = select(DreamRun).where(DreamRun.user_id == user_id, DreamRun.status.in_(ACTIVE))
    return session.scalars(query.order_by(DreamRun.queued_at).limit(1)).first()


def stale_runs(session: Session, older_than: timedelta) -> Sequence[DreamRun]:
    """Active runs without progress in the database for a while: candidates for re-sending their batch
    (the worker's recovery sweep also requires the run's Redis heartbeat to be gone)."""
    cutoff = utcnow() - older_than
    return session.scalars(
        select(DreamRun).where(DreamRun.status.in_(ACTIVE), DreamRun.updated_at < cutoff)
    ).all()


def list_runs(
    session: Session, user_id: str | None, limit: int, cursor: Cursor | None
) -> tuple[list[DreamRun], Cursor | None]:
    query = select(DreamRun)
    if user_id is not None:
        query = query.where(DreamRun.user_id == user_id)
    return keyset_page(session, query, DreamRun.queued_at, DreamRun.id, limit, cursor)


def list_dreams(
    session: Session, user_id: str, limit: int, cursor: Cursor | None
) -> tuple[list[Dream], Cursor | None]:
    query = select(Dream).where(Dream.user_id == user_id)
    return keyset_page(session, query, Dream.created_at, Dream.id, limit, cursor)


def dream_member_ids(session: Session, dream_id: str) -> list[str]:
    query = select(Memory.id).where(Memory.dream_id == dream_id).order_by(Memory.created_at, Memory.id)
    return list(session.scalars(query))


def run_counts(session: Session, user_id: str | None = None) -> dict[str, int]:
    query = select(DreamRun.status, func.count()).group_by(DreamRun.status)
    if user_id is not None:
        query = query.where(DreamRun.user_id == user_id)
    return {status: int(n) for status, n in session.execute(query)}


def last_run(
    session: Session, user_id: str | None = None, status: RunStatus | None = None
) -> DreamRun | None:
    query = select(DreamRun)
    if user_id is not None:
        query = query.where(DreamRun.user_id == user_id)
    if status is not None:
        query = query.where(DreamRun.status == status.value).order_by(DreamRun.finished_at.desc())
    else:
        query = query.order_by(DreamRun.queued_at.desc())
    return session.scalars(query.limit(1)).first()


def average_quality(session: Session, user_id: str | None = None) -> float | None:
    query = select(func.avg(DreamRun.quality)).where(
        DreamRun.status == RunStatus.SUCCEEDED.value, DreamRun.quality.is_not(None)
    )
    if user_id is not None:
        query = query.where(DreamRun.user_id == user_id)
    value = session.scalar(query)
    return None if value is None else float(value)


def finish_run(session: Session, run: DreamRun, status: RunStatus, error: str | None = None) -> None:
    now = utcnow()
    run.status = status.value
    run.error = error
    run.finished_at = now
    run.updated_at = now
    if run.started_at is not None:
        run.timings = {**(run.timings or {}), "run_seconds": round((now - run.started_at).total_seconds(), 3)}
