"""Keyset pagination shared by every listing (memories, dreams, runs): newest first by (created, id).

The cursor is an opaque token (base64 of the last row's timestamp and id); clients pass back
`next_cursor` unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

Row = TypeVar("Row")


class InvalidCursorError(ValueError):
    """The pagination cursor was not produced by this API."""


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
