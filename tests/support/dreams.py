"""Helpers for tests that check dream runs in the database and kill worker processes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, func, select

from jeffrey_core.store.models import Consolidation, Memory


def consolidated(database_url: str, user: str) -> tuple[int, int, int]:
    """(memories, consolidated memories, consolidation rows) of a user: equal when each is done once."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Memory).where(Memory.user_id == user)) or 0
        done = conn.scalar(
            select(func.count())
            .select_from(Memory)
            .where(Memory.user_id == user, Memory.consolidated_at.is_not(None))
        )
        rows = conn.scalar(
            select(func.count())
            .select_from(Consolidation)
            .join(Memory, Memory.id == Consolidation.memory_id)
            .where(Memory.user_id == user)
        )
    engine.dispose()
    return int(total), int(done or 0), int(rows or 0)


def pool_children(pid: int) -> list[int]:
    """Live pool processes of a prefork worker (children of its main process)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
