"""Memory repository: every query is scoped to one user; pagination is keyset, newest first."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session

from jeffrey_core.store.models import IdempotencyKey, Memory, utcnow

Row = TypeVar("Row")


class InvalidCursorError(ValueError):
    """The pagination cursor was not produced by this API."""


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


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps({"t": self.created_at.isoformat(), "id": self.id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            created_at = datetime.fromisoformat(data["t"])
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
            return cls(created_at=created_at, id=str(data["id"]))
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidCursorError("cursor is malformed; pass back next_cursor unchanged") from exc


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


def keyset_page(
    session: Session, query: Select[Row], created: Any, ident: Any, limit: int, cursor: Cursor | None
) -> tuple[list[Row], Cursor | None]:
    """One page of `query`, newest first by (created, id), and the cursor of the next (None on the last)."""
    if cursor is not None:
        query = query.where(
            or_(created < cursor.created_at, and_(created == cursor.created_at, ident < cursor.id))
        )
    rows = list(session.scalars(query.order_by(created.desc(), ident.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], Cursor(getattr(last, created.key), getattr(last, ident.key))


def find_idempotent_response(session: Session, user_id: str, key: str) -> IdempotencyKey | None:
    """The stored answer for this key, if it has not expired (an expired one is removed)."""
    row = session.get(IdempotencyKey, (user_id, key))
    if row is None:
        return None
    if row.expires_at <= utcnow():
        session.delete(row)
        session.flush()
        return None
    return row


def save_idempotent_response(
    session: Session,
    user_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
    ttl_seconds: int,
) -> None:
    """Record the answer in the caller's transaction: the effect and its key commit together."""
    now = utcnow()
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()


def purge_expired_idempotency_keys(session: Session) -> int:
    """Delete every expired key; returns how many went."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
