"""Writing emotion annotations onto memories, idempotently.

A write lands only on a memory that has no annotation yet, or whose annotation came from the
fallback and the new one from the model. A redelivered task therefore changes nothing (and the
caller, told so, does not count it twice), and a fallback never overwrites a model's result.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from jeffrey_core.store.models import Memory, utcnow

FALLBACK_PREFIX = "fallback"


def pending_annotation(session: Session, limit: int, include_fallback: bool = False) -> list[tuple[str, str]]:
    """(id, text) of memories to annotate, oldest first."""
    condition: ColumnElement[bool] = Memory.emotion_model_version.is_(None)
    if include_fallback:
        condition = or_(condition, Memory.emotion_model_version.like(f"{FALLBACK_PREFIX}%"))
    query = (
        select(Memory.id, Memory.text).where(condition).order_by(Memory.ingested_at, Memory.id).limit(limit)
    )
    return [(row.id, row.text) for row in session.execute(query)]


def write_annotation(session: Session, memory_id: str, emotion: dict[str, Any], lang: str | None) -> bool:
    """Store `emotion` on the memory unless it already holds an equal or better one; True when written."""
    return memory_id in write_annotations(session, [(memory_id, emotion, lang)])


def write_annotations(
    session: Session, annotations: list[tuple[str, dict[str, Any], str | None]]
) -> set[str]:
    """`write_annotation` for many memories, [(memory id, emotion, lang)]: the ids it wrote.

    One executemany per kind of result (model or fallback: they replace different annotations), then
    one SELECT of the rows that carry this call's `annotated_at`, which only this transaction's
    writes can (a concurrent writer's UPDATE waits on the row lock and then finds the guard false).
    One guarded UPDATE per memory, to learn each one's rowcount, was a sixth of a sweep (issue 12)."""
    if not annotations:
        return set()
    table = cast(Table, Memory.__table__)
    stamp = utcnow()
    for fallback in (False, True):
        rows = [
            {
                "memory_id": i,
                "emotion": e,
                "label": e["label"],
                "version": str(e["model_version"]),
                "lang": lang,
            }
            for i, e, lang in annotations
            if str(e["model_version"]).startswith(FALLBACK_PREFIX) == fallback
        ]
        if not rows:
            continue
        replaceable: ColumnElement[bool] = table.c.emotion_model_version.is_(None)
        if not fallback:
            replaceable = or_(replaceable, table.c.emotion_model_version.like(f"{FALLBACK_PREFIX}%"))
        statement = (
            update(table)
            .where(table.c.id == bindparam("memory_id"), replaceable)
            .values(
                emotion=bindparam("emotion"),
                emotion_label=bindparam("label"),
                emotion_model_version=bindparam("version"),
                annotated_at=stamp,
                lang=bindparam("lang"),
            )
        )
        session.execute(statement, rows)
    ids = [i for i, _, _ in annotations]
    written = select(table.c.id).where(table.c.id.in_(ids), table.c.annotated_at == stamp)
    return set(session.scalars(written))


def count_pending(session: Session) -> int:
    """Memories still waiting for an annotation."""
    return int(session.scalar(select(func.count()).where(Memory.emotion_model_version.is_(None))) or 0)


def write_embeddings(session: Session, vectors: dict[str, tuple[bytes, str]]) -> None:
    """Store each memory's vector (float32 bytes) with the model that made it: {id: (blob, model)}.

    Annotation embeds every memory once, so consolidation reads vectors instead of computing them."""
    if not vectors:
        return
    table = cast(Table, Memory.__table__)  # Core, not the ORM: no rowcount check on executemany
    statement = (
        update(table)
        .where(table.c.id == bindparam("memory_id"))
        .values(embedding=bindparam("blob"), embedding_model=bindparam("model"))
    )
    # One executemany; a memory deleted meanwhile is simply skipped (Core does not check rowcount).
    rows = [{"memory_id": i, "blob": blob, "model": model} for i, (blob, model) in vectors.items()]
    session.execute(statement, rows)
