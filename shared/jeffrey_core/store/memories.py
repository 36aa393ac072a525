"""Memory repository: every query is scoped to one user; pagination is keyset, newest first."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from jeffrey_core.store.models import Consolidation, Dream, Memory, new_id, utcnow
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
    """Insert memories for a user (caller commits); returns them with ids and timestamps set.

    One Core INSERT executed for the whole list (executemany; batched VALUES on PostgreSQL) in the
    session's transaction: ids and times are made here, so nothing needs reading back, and the
    unit of work's per-object bookkeeping is skipped. The returned rows are not in the session."""
    return [Memory(**values) for values in insert_memories(session, user_id, items)]


def insert_memories(session: Session, user_id: str, items: Sequence[NewMemory]) -> list[dict[str, Any]]:
    """`add_memories` returning each inserted row's column values as a dict instead of an ORM object
    (building instrumented objects was a fifth of a batch POST's CPU; the API only serialises them)."""
    now = utcnow()
    values = [
        {
            "id": new_id(),
            "user_id": user_id,
            "text": item.text,
            "meta": item.meta,
            "created_at": item.created_at or now,
            "ingested_at": now,
        }
        for item in items
    ]
    if len(values) > 1 and session.get_bind().dialect.name == "postgresql":
        _copy_in(session, values)
    elif values:
        session.execute(insert(cast(Table, Memory.__table__)), values)
    return values


_COPIED = ("id", "user_id", "text", "meta", "created_at", "ingested_at")


def _copy_in(session: Session, values: list[dict[str, Any]]) -> None:
    """Several rows into PostgreSQL by COPY on the session's connection (so in its transaction):
    one statement streamed, instead of one pipelined INSERT per row, which was two fifths of a batch
    POST's CPU (issue 12 profile)."""
    import psycopg

    connection = session.connection()
    dbapi = connection.connection.dbapi_connection
    table = cast(Table, Memory.__table__)
    statement = f"COPY {table.name} ({', '.join(_COPIED)}) FROM STDIN"
    # Each value as an INSERT binds it: the dates through UTCDateTime (naive UTC), meta as JSON text
    # (what psycopg's Json dumper writes, without a wrapper and a dumper call per row). A batch
    # shares one `ingested_at` and mostly empty metas, so each distinct date is converted once.
    to_naive = cast(Callable[[Any], Any], table.c["created_at"].type.bind_processor(connection.dialect))
    dates: dict[datetime, Any] = {}

    def date(value: datetime) -> Any:
        bound = dates.get(value)
        if bound is None:
            bound = dates[value] = to_naive(value)
        return bound

    try:
        with dbapi.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in values:
                meta = row["meta"]
                copy.write_row(
                    (  # in _COPIED's order
                        row["id"],
                        row["user_id"],
                        row["text"],
                        json.dumps(meta) if meta else "{}",
                        date(row["created_at"]),
                        date(row["ingested_at"]),
                    )
                )
    except psycopg.Error as exc:
        # As SQLAlchemy raises it for an INSERT (the API maps DataError, OperationalError, ...), values
        # hidden; a lost connection is taken out of the pool.
        if connection.dialect.is_disconnect(exc, dbapi, None):  # type: ignore[arg-type]
            connection.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, psycopg.Error, hide_parameters=True, dialect=connection.dialect
        ) from exc


def get_memory(session: Session, user_id: str, memory_id: str) -> Memory | None:
    return session.scalar(select(Memory).where(Memory.user_id == user_id, Memory.id == memory_id))


def delete_memory(session: Session, user_id: str, memory_id: str) -> bool:
    """Delete one of the user's memories, and take it out of its dream; False when it is not theirs.

    The dream's members, count, centroid, time span and summary are recomputed without it (the
    summary never keeps the deleted text); a dream left with fewer than 2 members is deleted."""
    row = get_memory(session, user_id, memory_id)
    if row is None:
        return False
    dream_id = row.dream_id
    session.execute(delete(Memory).where(Memory.id == memory_id))
    if dream_id is not None:
        _shrink_dream(session, dream_id)
    return True


def _shrink_dream(session: Session, dream_id: str) -> None:
    dream = session.get(Dream, dream_id)
    members = list(session.scalars(select(Memory).where(Memory.dream_id == dream_id)))
    if dream is None:
        return
    if len(members) < 2:
        session.execute(update(Memory).where(Memory.dream_id == dream_id).values(dream_id=None))
        session.execute(update(Consolidation).where(Consolidation.dream_id == dream_id).values(dream_id=None))
        session.delete(dream)
        return
    dream.member_count = len(members)
    dream.first_memory_at = min(m.created_at for m in members)
    dream.last_memory_at = max(m.created_at for m in members)
    vectors = [np.frombuffer(m.embedding, np.float32) for m in members if m.embedding]
    if len(vectors) == len(members) and len({len(v) for v in vectors}) == 1:
        centroid = np.mean(vectors, axis=0)
        centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-9)
        dream.centroid = centroid.astype(np.float32).tobytes()
        summary = members[int(np.argmax(np.stack(vectors) @ centroid))]
    else:
        summary = next((m for m in members if m.id == dream.summary_memory_id), members[0])
    dream.summary, dream.summary_memory_id = summary.text, summary.id
    dream.updated_at = utcnow()


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
