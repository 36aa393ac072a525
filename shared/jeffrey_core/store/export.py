"""A user's data as plain JSON-ready records, for export: memories, dreams (with their members) and runs.

Every column is exported except the derived float vectors (`embedding`, `centroid`): they are model
output, not something the person wrote, and they are re-computed from the text on import. Rows are read
in keyset pages (oldest first), so an export of any size holds one page in memory at a time.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from jeffrey_core.store.models import Base, Consolidation, Dream, DreamRun, Memory

PAGE = 500
LEFT_OUT = frozenset({"embedding", "centroid"})


@dataclass(frozen=True)
class ExportCounts:
    memories: int
    dreams: int
    runs: int

    @property
    def total(self) -> int:
        return self.memories + self.dreams + self.runs


def count_user_data(session: Session, user_id: str) -> ExportCounts:
    def count(model: type[Base], column: InstrumentedAttribute[str]) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(column == user_id)) or 0)

    return ExportCounts(
        memories=count(Memory, Memory.user_id),
        dreams=count(Dream, Dream.user_id),
        runs=count(DreamRun, DreamRun.user_id),
    )


def export_records(session: Session, user_id: str) -> Iterator[dict[str, Any]]:
    """One record per memory, dream and run of `user_id`, each with a `type` field."""
    for memories in _pages(session, Memory, Memory.user_id, Memory.created_at, Memory.id, user_id):
        yield from ({"type": "memory", **_columns(memory)} for memory in memories)
    for dreams in _pages(session, Dream, Dream.user_id, Dream.created_at, Dream.id, user_id):
        members = _member_ids(session, [dream.id for dream in dreams])  # one query per page, not per dream
        yield from (
            {"type": "dream", **_columns(dream), "member_ids": members.get(dream.id, [])} for dream in dreams
        )
    for runs in _pages(session, DreamRun, DreamRun.user_id, DreamRun.queued_at, DreamRun.id, user_id):
        yield from ({"type": "run", **_columns(run)} for run in runs)


def _member_ids(session: Session, dream_ids: list[str]) -> dict[str, list[str]]:
    query = select(Consolidation.dream_id, Consolidation.memory_id).where(
        Consolidation.dream_id.in_(dream_ids)
    )
    members: dict[str, list[str]] = {}
    for dream_id, memory_id in session.execute(
        query.order_by(Consolidation.dream_id, Consolidation.memory_id)
    ):
        if dream_id is not None:  # the column is nullable; the IN above never matches NULL
            members.setdefault(dream_id, []).append(memory_id)
    return members


def _pages(
    session: Session,
    model: type[Any],
    owner: InstrumentedAttribute[str],
    created: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    user_id: str,
) -> Iterator[list[Any]]:
    """Pages of the rows of `model` owned by `user_id`, oldest first, `PAGE` rows each (keyset, no OFFSET)."""
    after: tuple[datetime, str] | None = None
    while True:
        query = select(model).where(owner == user_id)
        if after is not None:
            query = query.where(or_(created > after[0], and_(created == after[0], ident > after[1])))
        rows = list(session.scalars(query.order_by(created, ident).limit(PAGE)).all())
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        last = rows[-1]
        after = (getattr(last, created.key), getattr(last, ident.key))
        session.expunge_all()  # keep one page in the identity map


def _columns(row: Base) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in LEFT_OUT:
            continue
        value = getattr(row, column.key)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        out[column.key] = value
    return out
