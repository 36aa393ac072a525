"""Writing emotion annotations onto memories, idempotently.

A write lands only on a memory that has no annotation yet, or whose annotation came from the
fallback and the new one from the model. A redelivered task therefore changes nothing (and the
caller, told so, does not count it twice), and a fallback never overwrites a model's result.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from jeffrey_core.store.models import Memory, utcnow

FALLBACK_PREFIX = "fallback"


def pending_annotation(
    session: Session, limit: int, include_fallback: bool = False, claim: bool = False
) -> list[tuple[str, str]]:
    """(id, text) of memories to annotate, oldest first.

    With `claim`, the rows are locked until the session's transaction ends and rows another
    transaction has locked are skipped (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite, one writer,
    ignores the clause): concurrent sweeps each take a disjoint batch."""
    condition: ColumnElement[bool] = Memory.emotion_model_version.is_(None)
    if include_fallback:
        condition = or_(condition, Memory.emotion_model_version.like(f"{FALLBACK_PREFIX}%"))
    query = (
        select(Memory.id, Memory.text).where(condition).order_by(Memory.ingested_at, Memory.id).limit(limit)
    )
    if claim:
        query = query.with_for_update(skip_locked=True)
    return [(row.id, row.text) for row in session.execute(query)]


def _annotation_update(model_result: bool) -> Update:
    """The UPDATE of one memory's annotation, built once per kind (statement building was a
    tenth of a sweep's Python time in the issue 12 profile); parameters bound per call."""
    table = cast(Table, Memory.__table__)
    version = table.c.emotion_model_version
    replaceable: ColumnElement[bool] = version.is_(None)
    if model_result:  # a model's result also replaces a fallback's
        replaceable = or_(replaceable, version.like(f"{FALLBACK_PREFIX}%"))
    return (
        update(table)
        .where(table.c.id == bindparam("memory_id"), replaceable)
        .values(
            emotion=bindparam("emotion"),
            emotion_label=bindparam("label"),
            emotion_model_version=bindparam("version"),
            annotated_at=bindparam("at"),
            lang=bindparam("lang"),
        )
    )


_UPDATES = {True: _annotation_update(True), False: _annotation_update(False)}


def write_annotation(session: Session, memory_id: str, emotion: dict[str, Any], lang: str | None) -> bool:
    """Store `emotion` on the memory unless it already holds an equal or better one; True when written."""
    version = str(emotion["model_version"])
    # Core, not the ORM: nothing to synchronise (no caller holds the memory loaded; evaluating the
    # WHERE against the session's objects was a quarter of a sweep's time, issue 12 profile).
    statement = _UPDATES[not version.startswith(FALLBACK_PREFIX)]
    params = {"memory_id": memory_id, "emotion": emotion, "label": emotion["label"], "version": version}
    result = session.execute(statement, params | {"at": utcnow(), "lang": lang})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def count_pending(session: Session) -> int:
    """Memories still waiting for an annotation."""
    return int(session.scalar(select(func.count()).where(Memory.emotion_model_version.is_(None))) or 0)


def write_embeddings(session: Session, vectors: dict[str, bytes], model_name: str) -> None:
    """Store each memory's vector (float32 bytes) with the model that made it.

    Annotation embeds every memory once, so consolidation reads vectors instead of computing them."""
    if not vectors:
        return
    table = cast(Table, Memory.__table__)  # Core, not the ORM: no rowcount check on executemany
    statement = (
        update(table)
        .where(table.c.id == bindparam("memory_id"))
        .values(embedding=bindparam("blob"), embedding_model=model_name)
    )
    # One executemany; a memory deleted meanwhile is simply skipped (Core does not check rowcount).
    session.execute(statement, [{"memory_id": i, "blob": blob} for i, blob in vectors.items()])
