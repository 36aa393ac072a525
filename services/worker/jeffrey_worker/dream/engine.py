"""One consolidation batch against the database, in the caller's transaction: query → plan → apply.

`load_batch` reads the next B unconsolidated memories of the run's user (keyset cursor, oldest
first), the user's recent singletons and dreams (with their summary vectors, in one query each);
`embed_missing` stores a vector on each memory that has none for the current embedder (the only
step that writes memory vectors); the planner decides attach / cluster / score without I/O;
`apply_plan` writes dreams, marks every memory consolidated with the run id (guarded, one UPDATE
per target dream) and moves the run's cursor and counters. The caller commits: a crash before that
commit leaves no trace, so a redelivered batch starts from the same cursor.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from jeffrey_core.store.annotations import write_annotations
from jeffrey_core.store.models import Consolidation, Dream, DreamRun, Memory
from jeffrey_worker.dream import planner
from jeffrey_worker.dream.encoder import RoutedEncoder, TextEncoder, routed
from jeffrey_worker.dream.vectors import from_bytes, to_bytes

REVISITED_SINGLETONS = 100
DREAMS_CONSIDERED = 500

# ORM UPDATEs by default re-evaluate their WHERE clause in Python against every object of the
# session ("evaluate" synchronisation), once per statement: with a 500-memory batch and one UPDATE per
# target dream that was over a third of consolidation time (py-spy, issue 12; 10k memories of one user
# 11.5 -> 6.5 s without it). The statements run without it and the columns they write are expired on
# the session's objects instead (`_expire`), so a later read reloads them from the database; the
# sessions are made with expire_on_commit=False.
NO_SYNC = {"synchronize_session": False}


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
    created_emotions: list[str | None] = field(default_factory=list)


@dataclass
class BatchInput:
    """What one batch reads: its memories, the singletons it may revisit, the user's dreams."""

    rows: list[Memory]
    revisit: list[Memory]
    dreams: list[Dream]
    summary_vectors: dict[str, bytes]


Annotator = Callable[[list[str]], list[dict[str, Any]]]


def run_batch(
    session: Session,
    run: DreamRun,
    batch_size: int,
    embedder: TextEncoder | RoutedEncoder,
    now: datetime,
    annotate: Annotator | None = None,
) -> BatchOutcome:
    started = time.perf_counter()
    encoders = routed(embedder)
    batch = load_batch(session, run, batch_size, list(encoders.spaces))
    if not batch.rows:
        return BatchOutcome(0, 0, 0, None, time.perf_counter() - started, exhausted=True)
    if annotate is not None:
        annotate_missing(session, batch.rows, annotate)
    embed_missing(batch.rows, encoders)
    plans = plan_spaces(batch, encoders)
    plan = planner.combine([p for _, p in plans])
    apply_plan(session, run, batch, plan, now, [name for name, p in plans for _ in p.created])
    seconds = time.perf_counter() - started
    _advance_run(run, batch.rows[-1], len(batch.rows), plan, batch_size, seconds, now)
    session.flush()
    return BatchOutcome(
        len(batch.rows),
        len(plan.created),
        len(plan.updated),
        plan.quality,
        seconds,
        len(batch.rows) < batch_size,
        [state.dominant_emotion for state in plan.created],
    )


def plan_spaces(batch: BatchInput, encoders: RoutedEncoder) -> list[tuple[str, planner.Plan]]:
    """Plan each vector space on its own: its memories (batch and revisited singletons), the dreams
    whose centroids are of its width, its thresholds. Vectors of different models are never compared."""
    items: dict[str, list[planner.PlanItem]] = defaultdict(list)
    for row in batch.rows:
        items[str(row.embedding_model)].append(_item(row, encoders))
    for row in batch.revisit:
        items[str(row.embedding_model)].append(_item(row, encoders, revisit=True))
    plans = []
    for name, space_items in sorted(items.items()):
        space = encoders.spaces[name]
        width = 4 * space.dim  # float32 bytes
        states = [_state(row, batch.summary_vectors) for row in batch.dreams if len(row.centroid) == width]
        limits = space.thresholds
        plans.append((name, planner.plan_batch(space_items, states, limits.attach, limits.merge)))
    return plans


def load_batch(session: Session, run: DreamRun, batch_size: int, model_names: list[str]) -> BatchInput:
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
        return BatchInput([], [], [], {})
    revisit = session.scalars(
        select(Memory)
        .where(
            Memory.user_id == run.user_id,
            Memory.consolidated_at.is_not(None),
            Memory.dream_id.is_(None),
            Memory.embedding_model.in_(model_names),
        )
        .order_by(Memory.created_at.desc(), Memory.id.desc())
        .limit(REVISITED_SINGLETONS)
    ).all()
    dreams = load_dreams(session, run.user_id)
    return BatchInput(rows, list(revisit), dreams, summary_vectors(session, dreams))


def load_dreams(session: Session, user_id: str) -> list[Dream]:
    """The user's most recently updated dreams (the ones a new memory can join)."""
    query = select(Dream).where(Dream.user_id == user_id).order_by(Dream.updated_at.desc())
    return list(session.scalars(query.limit(DREAMS_CONSIDERED)))


def summary_vectors(session: Session, dreams: Iterable[Dream]) -> dict[str, bytes]:
    """Vector of each dream's summary memory, in one query."""
    ids = [d.summary_memory_id for d in dreams]
    if not ids:
        return {}
    query = select(Memory.id, Memory.embedding).where(Memory.id.in_(ids), Memory.embedding.is_not(None))
    return {memory_id: blob for memory_id, blob in session.execute(query) if blob}


def annotate_missing(session: Session, rows: list[Memory], annotate: Annotator) -> None:
    """Dreams weigh emotions: annotate the batch's memories the sweep has not reached yet."""
    missing = [row for row in rows if row.emotion_model_version is None]
    if not missing:
        return
    emotions = annotate([row.text for row in missing])
    annotations = [(row.id, e, e.pop("lang", None)) for row, e in zip(missing, emotions, strict=True)]
    written = write_annotations(session, annotations)  # one statement per kind, not one per memory
    for row in missing:
        if row.id in written:
            session.refresh(row)


def embed_missing(rows: list[Memory], encoders: RoutedEncoder) -> int:
    """Store a vector on each memory that has none from the encoder of its space (annotation usually
    did it, or the model changed since: re-embedded lazily, batch by batch); returns how many were
    written."""
    stale = [
        row
        for row in rows
        if row.embedding is None or row.embedding_model != encoders.space_for(row.text).model_name
    ]
    if stale:
        for row, (name, vector) in zip(stale, encoders.embed([row.text for row in stale]), strict=True):
            row.embedding, row.embedding_model = to_bytes(vector), name
    return len(stale)


def apply_plan(
    session: Session,
    run: DreamRun,
    batch: BatchInput,
    plan: planner.Plan,
    now: datetime,
    created_models: list[str],
) -> None:
    """Write the plan: dream rows, then the guarded consolidation of every batch memory.
    `created_models`: the vector space of each created dream, in order."""
    dream_of: dict[str, str | None] = {}
    by_id = {row.id: row for row in batch.dreams}
    for state in plan.updated:
        assert state.id is not None
        _write_state(by_id[state.id], state, now)
        dream_of.update((m.memory_id, state.id) for m in state.new_members)
    for state, model_name in zip(plan.created, created_models, strict=True):
        row = Dream(
            user_id=run.user_id,
            run_id=run.id,
            algorithm_version=f"{planner.ALGORITHM_VERSION}:{model_name}"[:32],
            created_at=now,
        )
        _write_state(row, state, now)
        session.add(row)
        session.flush()
        dream_of.update((m.memory_id, row.id) for m in state.new_members)
    session.flush()  # vectors and dreams go out before the guarded updates below
    batch_ids = [row.id for row in batch.rows]
    _consolidate(session, run.id, batch_ids, dream_of, now)
    revisited = {row.id for row in batch.revisit} & {m for m, d in dream_of.items() if d}
    for dream_id, members in _group_by_dream(revisited, dream_of).items():
        _move_to_dream(session, Memory.id.in_(members), Consolidation.memory_id.in_(members), dream_id)
    _expire(session, (Memory, Consolidation), ["consolidated_at", "consolidation_run_id", "dream_id"])


def _move_to_dream(
    session: Session, memories: ColumnElement[bool], consolidations: ColumnElement[bool], dream_id: str | None
) -> None:
    """Point the matching memories and consolidation rows at `dream_id` (then `_expire` the column)."""
    session.execute(update(Memory).where(memories).values(dream_id=dream_id), execution_options=NO_SYNC)
    session.execute(
        update(Consolidation).where(consolidations).values(dream_id=dream_id), execution_options=NO_SYNC
    )


def _expire(session: Session, classes: tuple[type, ...], attributes: list[str]) -> None:
    for obj in list(session.identity_map.values()):
        if isinstance(obj, classes):
            session.expire(obj, [a for a in attributes if hasattr(type(obj), a)])


def _group_by_dream(
    memory_ids: Iterable[str], dream_of: dict[str, str | None]
) -> dict[str | None, list[str]]:
    groups: dict[str | None, list[str]] = defaultdict(list)
    for memory_id in memory_ids:
        groups[dream_of.get(memory_id)].append(memory_id)
    return groups


def _consolidate(
    session: Session, run_id: str, batch_ids: list[str], dream_of: dict[str, str | None], now: datetime
) -> None:
    """Mark the batch consolidated; only rows still unconsolidated change, so a race is detected."""
    changed = 0
    for dream_id, members in _group_by_dream(batch_ids, dream_of).items():
        result = session.execute(
            update(Memory)
            .where(Memory.id.in_(members), Memory.consolidated_at.is_(None))
            .values(consolidated_at=now, consolidation_run_id=run_id, dream_id=dream_id),
            execution_options=NO_SYNC,
        )
        changed += result.rowcount  # type: ignore[attr-defined]
    if changed != len(batch_ids):
        raise ConcurrentConsolidationError(
            f"{len(batch_ids) - changed} memories were consolidated by someone else"
        )
    session.add_all(
        Consolidation(memory_id=mid, run_id=run_id, dream_id=dream_of.get(mid), consolidated_at=now)
        for mid in batch_ids
    )


def _item(row: Memory, embedder: RoutedEncoder, revisit: bool = False) -> planner.PlanItem:
    assert row.embedding is not None, "embed_missing() runs before items are built"
    emotion = row.emotion or {}
    return planner.PlanItem(
        memory_id=row.id,
        text=row.text,
        created_at=row.created_at,
        vector=from_bytes(row.embedding),
        terms=embedder.term_weights(row.text),
        emotion_label=row.emotion_label,
        emotion_confidence=float(emotion.get("confidence") or 0.0),
        revisit=revisit,
    )


def _state(row: Dream, vectors: dict[str, bytes]) -> planner.DreamState:
    centroid = from_bytes(row.centroid)
    blob = vectors.get(row.summary_memory_id)
    summary_vector = from_bytes(blob) if blob else np.zeros_like(centroid)
    if summary_vector.shape != centroid.shape:  # written by another embedder
        summary_vector = np.zeros_like(centroid)
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


def merge_dreams(session: Session, user_id: str, now: datetime, embedder: TextEncoder | RoutedEncoder) -> int:
    """Fold together the user's dreams that ended up on the same theme; returns how many were absorbed.

    Batches cluster what they see; a theme first met in two different batches (or runs) can start
    two dreams. Runs after every batch, over the user's recent dreams, each vector space on its own.
    Members move to the kept dream, the absorbed dream is deleted (in the caller's transaction).
    """
    recent = load_dreams(session, user_id)
    vectors = summary_vectors(session, recent)
    absorbed = 0
    for space in routed(embedder).spaces.values():
        width = 4 * space.dim  # float32 bytes
        rows = [row for row in recent if len(row.centroid) == width]
        absorbed += _merge_space(session, rows, vectors, space.thresholds.merge, now)
    return absorbed


def _merge_space(
    session: Session, rows: list[Dream], vectors: dict[str, bytes], threshold: float, now: datetime
) -> int:
    states = [_state(row, vectors) for row in rows]
    merges = planner.plan_merges(states, threshold)
    if not merges:
        return 0
    for kept, absorbed in merges:
        target, gone = rows[kept], rows[absorbed]
        _move_to_dream(session, Memory.dream_id == gone.id, Consolidation.dream_id == gone.id, target.id)
    _expire(session, (Memory, Consolidation), ["dream_id"])
    absorbed_ids = {rows[absorbed].id for _, absorbed in merges}
    planner.name_themes(
        [state for row, state in zip(rows, states, strict=True) if row.id not in absorbed_ids]
    )
    for index in sorted({kept for kept, _ in merges}):
        if rows[index].id not in absorbed_ids:
            _write_state(rows[index], states[index], now)
    for row in rows:
        if row.id in absorbed_ids:
            session.delete(row)
    session.flush()
    return len(absorbed_ids)
