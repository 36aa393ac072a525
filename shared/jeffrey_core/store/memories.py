"""Memory repository: every query is scoped to one user; pagination is keyset, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jeffrey_core.store.models import Memory, utcnow
from jeffrey_core.store.pagination import Cursor, keyset_page


@dataclass(frozen=True)
class NewMemory:
    text: str
    meta: dict[str, Any]
    created_at: datetime | None = None


@dataclass(frozen=True)
class MemoryFilter:
    since: datetime | None = None
    until: datetime | None = None
    consolidated: bool | None = None
    emotion: str | None = None


def add_memories(session: Session, user_id: str, items: Sequence[NewMemory]) -> list[Memory]:
    """Insert memories for a user (caller commits); returns them with ids and timestamps set."""
    now = utcnow()
    rows = [
        Memory(
            user_id=user_id,
            text=item.text,
            meta=item.meta,
            created_at=item.created_at or now,
            ingested_at=now,
        )
        for item in items
    ]
    session.add_all(rows)
    session.flush()
    return rows


def get_memory(session: Session, user_id: str, memory_id: str) -> Memory | None:
    return session.scalar(select(Memory).where(Memory.user_id == user_id, Memory.id == memory_id))


def delete_memory(session: Session, user_id: str, memory_id: str) -> bool:
    """Delete one of the user's memories; False when it is not theirs or does not exist."""
    result = session.execute(delete(Memory).where(Memory.user_id == user_id, Memory.id == memory_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_memories(
    session: Session,
    user_id: str,
    filters: MemoryFilter,
    limit: int,
    cursor: Cursor | None = None,
) -> tuple[list[Memory], Cursor | None]:
    """One page, newest first, and the cursor of the next page (None on the last one)."""
    query = select(Memory).where(Memory.user_id == user_id)
    if filters.since is not None:
        query = query.where(Memory.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Memory.created_at < filters.until)
    if filters.consolidated is True:
        query = query.where(Memory.consolidated_at.is_not(None))
    elif filters.consolidated is False:
        query = query.where(Memory.consolidated_at.is_(None))
    if filters.emotion is not None:
        query = query.where(Memory.emotion_label == filters.emotion)
    return keyset_page(session, query, Memory.created_at, Memory.id, limit, cursor)
