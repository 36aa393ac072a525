"""Erase one user's rows: memories, their consolidations, dreams, runs and idempotency keys.

Safe while a dream run of that user is active, in two steps:
1. `stop_runs` marks the user's active runs failed (error "erased") and commits. The run row is
   versioned, so a batch already in flight cannot commit after this (its guarded UPDATE finds another
   version and its whole transaction rolls back), and every later copy of a batch message sees a
   finished run and does nothing.
2. `delete_rows` deletes everything of the user in one transaction. A run queued by beat between the
   two steps is stopped and deleted too: `erase_rows` repeats until no active run is left.
Audit rows are kept (they record what admins did, including this erasure).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from jeffrey_core.store.models import (
    ACTIVE_RUN_STATUSES,
    Consolidation,
    Dream,
    DreamRun,
    IdempotencyKey,
    Memory,
    RunStatus,
    utcnow,
)

ERASED = "erased"
MAX_ROUNDS = 5
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


@dataclass
class ErasedRows:
    memories: int = 0
    dreams: int = 0
    runs: int = 0
    idempotency_keys: int = 0
    run_ids: set[str] = field(default_factory=set)
    memory_ids: set[str] = field(default_factory=set)

    def add(self, other: ErasedRows, stopped: set[str]) -> None:
        self.memories += other.memories
        self.dreams += other.dreams
        self.runs += other.runs
        self.idempotency_keys += other.idempotency_keys
        self.run_ids |= other.run_ids | stopped
        self.memory_ids |= other.memory_ids


def stop_runs(session: Session, user_id: str) -> set[str]:
    """Mark the user's active runs failed (bumping their version) and commit; their ids."""
    ids = set(
        session.scalars(
            select(DreamRun.id).where(
                DreamRun.user_id == user_id, DreamRun.status.in_([s.value for s in ACTIVE_RUN_STATUSES])
            )
        )
    )
    if ids:
        now = utcnow()
        session.execute(
            update(DreamRun)
            .where(DreamRun.id.in_(ids), DreamRun.status.in_([s.value for s in ACTIVE_RUN_STATUSES]))
            .values(
                status=RunStatus.FAILED.value,
                error=ERASED,
                finished_at=now,
                updated_at=now,
                version=DreamRun.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return ids


def delete_rows(session: Session, user_id: str) -> ErasedRows:
    """Delete every row of the user in one transaction; what it deleted (counted once committed)."""
    erased = ErasedRows(
        memory_ids=set(session.scalars(select(Memory.id).where(Memory.user_id == user_id))),
        run_ids=set(session.scalars(select(DreamRun.id).where(DreamRun.user_id == user_id))),
    )
    member_of_user = select(Memory.id).where(Memory.user_id == user_id)
    session.execute(delete(Consolidation).where(Consolidation.memory_id.in_(member_of_user)))
    erased.dreams = _count(session.execute(delete(Dream).where(Dream.user_id == user_id)))
    erased.memories = _count(session.execute(delete(Memory).where(Memory.user_id == user_id)))
    erased.runs = _count(session.execute(delete(DreamRun).where(DreamRun.user_id == user_id)))
    erased.idempotency_keys = _count(
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id))
    )
    session.commit()
    return erased


def erase_rows(session: Session, user_id: str) -> ErasedRows:
    """Stop the user's runs, then delete all their rows; repeated while a new run slipped in between.

    On PostgreSQL the batch in flight and the deletes can lock the same rows in opposite orders (it
    updates a dream this deletes, this deletes memories it updated): one of the two is chosen as the
    deadlock victim. When it is this transaction, it rolls back and goes again; the batch then ends
    (its run's version changed, so it rolls back too) and the next round finds the rows free."""
    erased = ErasedRows()
    for round_ in range(MAX_ROUNDS):
        try:
            stopped = stop_runs(session, user_id)
            erased.add(delete_rows(session, user_id), stopped)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            session.rollback()
            time.sleep(0.2 * (round_ + 1))
            continue
        if not _has_rows(session, user_id):
            return erased
    raise RuntimeError(f"user data kept reappearing during erasure after {MAX_ROUNDS} rounds")


def _has_rows(session: Session, user_id: str) -> bool:
    checks = (
        select(Memory.id).where(Memory.user_id == user_id).limit(1),
        select(DreamRun.id).where(DreamRun.user_id == user_id).limit(1),
        select(Dream.id).where(Dream.user_id == user_id).limit(1),
    )
    return any(session.scalar(query) is not None for query in checks)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
