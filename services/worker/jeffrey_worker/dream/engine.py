"""One consolidation batch against the database, in the caller's transaction.

Loads the next B unconsolidated memories of the run's user (keyset cursor, oldest first), stores
missing vectors, plans (attach / cluster / score), writes dreams, marks every memory consolidated
with the run id, records singletons and moves the run's cursor and counters. The caller commits:
a crash before that commit leaves no trace, so a redelivered batch starts from the same cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from jeffrey_core.store.annotations import write_annotation
from jeffrey_core.store.models import Consolidation, Dream, DreamRun, Memory
from jeffrey_worker.dream import planner
from jeffrey_worker.dream.vectors import MODEL_NAME, Embedder, from_bytes, to_bytes

REVISITED_SINGLETONS = 100
DREAMS_CONSIDERED = 500


class ConcurrentConsolidationError(RuntimeError):
    """Another writer consolidated some of this batch's memories first: roll back, nothing is lost."""


@dataclass
class BatchOutcome:
    processed: int
    created: int
    updated: int
    quality: float | None
    seconds: float
    exhausted: bool  # fewer memories than B were left: the run is complete


Annotator = Callable[[list[str]], list[dict[str, Any]]]


def run_batch(
    session: Session,
    run: DreamRun,
    batch_size: int,
    embedder: Embedder,
    now: datetime,
    annotate: Annotator | None = None,
) -> BatchOutcome:
    started = time.perf_counter()
    query = select(Memory).where(Memory.user_id == run.user_id, Memory.consolidated_at.is_(None))
    if run.cursor_created_at is not None and run.cursor_id is not None:
        query = query.where(
            or_(
                Memory.created_at > run.cursor_created_at,
                and_(Memory.created_at == run.cursor_created_at, Memory.id > run.cursor_id),
            )
        )
    rows = list(session.scalars(query.order_by(Memory.created_at, Memory.id).limit(batch_size)))
    if not rows:
        return BatchOutcome(0, 0, 0, None, time.perf_counter() - started, exhausted=True)

    if annotate is not None:
        _annotate_missing(session, rows, annotate)
    items = [_item(row, embedder) for row in rows]
    revisit = session.scalars(
        select(Memory)
        .where(
            Memory.user_id == run.user_id,
            Memory.consolidated_at.is_not(None),
            Memory.dream_id.is_(None),
            Memory.embedding_model == MODEL_NAME,
        )
        .order_by(Memory.created_at.desc(), Memory.id.desc())
        .limit(REVISITED_SINGLETONS)
    ).all()
    items += [_item(row, embedder, revisit=True) for row in revisit]
    dream_rows = session.scalars(
        select(Dream)
        .where(Dream.user_id == run.user_id)
        .order_by(Dream.updated_at.desc())
        .limit(DREAMS_CONSIDERED)
    ).all()
    states = [_state(row, session) for row in dream_rows]
    plan = planner.plan_batch(items, states)

    dream_of: dict[str, str | None] = {}
    by_id = {row.id: row for row in dream_rows}
    for state in plan.updated:
        assert state.id is not None
        _write_state(by_id[state.id], state, now)
        dream_of.update((m.memory_id, state.id) for m in state.new_members)
    for state in plan.created:
        row = Dream(
            user_id=run.user_id, run_id=run.id, algorithm_version=planner.ALGORITHM_VERSION, created_at=now
        )
        _write_state(row, state, now)
        session.add(row)
        session.flush()
        dream_of.update((m.memory_id, row.id) for m in state.new_members)

    batch_ids = [row.id for row in rows]
    session.flush()  # vectors written above go out before the guarded updates below
    changed = 0
    for memory_id in batch_ids:
        result = session.execute(
            update(Memory)
            .where(Memory.id == memory_id, Memory.consolidated_at.is_(None))
            .values(consolidated_at=now, consolidation_run_id=run.id, dream_id=dream_of.get(memory_id))
        )
        changed += result.rowcount  # type: ignore[attr-defined]
    if changed != len(batch_ids):
        raise ConcurrentConsolidationError(
            f"{len(batch_ids) - changed} memories were consolidated by someone else"
        )
    session.add_all(
        Consolidation(memory_id=mid, run_id=run.id, dream_id=dream_of.get(mid), consolidated_at=now)
        for mid in batch_ids
    )
    for item in items:
        if item.revisit and dream_of.get(item.memory_id):
            session.execute(
                update(Memory).where(Memory.id == item.memory_id).values(dream_id=dream_of[item.memory_id])
            )
            session.execute(
                update(Consolidation)
                .where(Consolidation.memory_id == item.memory_id)
                .values(dream_id=dream_of[item.memory_id])
            )

    seconds = time.perf_counter() - started
    _advance_run(run, rows[-1], len(rows), plan, batch_size, seconds, now)
    session.flush()
    return BatchOutcome(
        len(rows), len(plan.created), len(plan.updated), plan.quality, seconds, len(rows) < batch_size
    )


def _annotate_missing(session: Session, rows: list[Memory], annotate: Annotator) -> None:
    """Dreams weigh emotions: annotate the batch's memories the sweep has not reached yet."""
    missing = [row for row in rows if row.emotion_model_version is None]
    if not missing:
        return
    for row, emotion in zip(missing, annotate([row.text for row in missing]), strict=True):
        lang = emotion.pop("lang", None)
        if write_annotation(session, row.id, emotion, lang):
            session.refresh(row)


def _item(row: Memory, embedder: Embedder, revisit: bool = False) -> planner.PlanItem:
    if row.embedding is None or row.embedding_model != MODEL_NAME:
        vector = embedder.embed(row.text)
        row.embedding, row.embedding_model = to_bytes(vector), MODEL_NAME
    else:
        vector = from_bytes(row.embedding)
    emotion = row.emotion or {}
    return planner.PlanItem(
        memory_id=row.id,
        text=row.text,
        created_at=row.created_at,
        vector=vector,
        terms=embedder.term_weights(row.text),
        emotion_label=row.emotion_label,
        emotion_confidence=float(emotion.get("confidence") or 0.0),
        revisit=revisit,
    )


def _state(row: Dream, session: Session) -> planner.DreamState:
    centroid = from_bytes(row.centroid)
    summary = session.get(Memory, row.summary_memory_id)
    summary_vector = (
        from_bytes(summary.embedding)
        if summary is not None and summary.embedding
        else np.zeros_like(centroid)
    )
    return planner.DreamState(
        id=row.id,
        centroid_sum=centroid * row.member_count,
        member_count=row.member_count,
        term_weights=dict(row.term_weights),
        emotion_weights=dict(row.emotion_weights),
        summary=row.summary,
        summary_memory_id=row.summary_memory_id,
        summary_vector=summary_vector,
        first_memory_at=row.first_memory_at,
        last_memory_at=row.last_memory_at,
    )


def _write_state(row: Dream, state: planner.DreamState, now: datetime) -> None:
    row.centroid = to_bytes(state.centroid)
    row.member_count = state.member_count
    row.term_weights = state.term_weights
    row.theme = state.theme
    row.emotion_weights = {k: round(v, 4) for k, v in state.emotion_weights.items()}
    row.dominant_emotion = state.dominant_emotion
    row.summary = state.summary
    row.summary_memory_id = state.summary_memory_id
    row.first_memory_at = state.first_memory_at
    row.last_memory_at = state.last_memory_at
    row.salience = state.salience(now)
    row.updated_at = now


def _advance_run(
    run: DreamRun,
    last: Memory,
    count: int,
    plan: planner.Plan,
    batch_size: int,
    seconds: float,
    now: datetime,
) -> None:
    run.batches += 1
    run.memories_processed += count
    run.memories_total = max(run.memories_total, run.memories_processed)
    run.dreams_created += len(plan.created)
    run.dreams_updated += len(plan.updated)
    run.cursor_created_at, run.cursor_id = last.created_at, last.id
    run.batch_size = batch_size
    if plan.quality is not None:
        weight = run.quality_weight + plan.points
        run.quality = round(
            ((run.quality or 0.0) * run.quality_weight + plan.quality * plan.points) / weight, 6
        )
        run.quality_weight = weight
    timings = dict(run.timings or {})
    timings["last_batch_seconds"] = round(seconds, 4)
    timings["batch_seconds_total"] = round(timings.get("batch_seconds_total", 0.0) + seconds, 4)
    run.timings = timings
    run.updated_at = now


def merge_dreams(session: Session, user_id: str, now: datetime) -> int:
    """Fold together the user's dreams that ended up on the same theme; returns how many were absorbed.

    Batches cluster what they see; a theme first met in two different batches can start two dreams.
    Run once at the end of a run, in its own transaction: members move to the kept dream, the
    absorbed dream is deleted.
    """
    rows = session.scalars(
        select(Dream)
        .where(Dream.user_id == user_id)
        .order_by(Dream.updated_at.desc())
        .limit(DREAMS_CONSIDERED)
    ).all()
    states = [_state(row, session) for row in rows]
    merges = planner.plan_merges(states)
    if not merges:
        return 0
    absorbed_ids: set[str] = set()
    for kept, absorbed in merges:
        target, gone = rows[kept], rows[absorbed]
        session.execute(update(Memory).where(Memory.dream_id == gone.id).values(dream_id=target.id))
        session.execute(
            update(Consolidation).where(Consolidation.dream_id == gone.id).values(dream_id=target.id)
        )
        absorbed_ids.add(gone.id)
    for index, row in enumerate(rows):
        if row.id not in absorbed_ids and any(kept == index for kept, _ in merges):
            _write_state(row, states[index], now)
    for row in rows:
        if row.id in absorbed_ids:
            session.delete(row)
    session.flush()
    return len(absorbed_ids)
