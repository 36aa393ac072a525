"""Erasing a user's rows while a dream batch of theirs holds row locks (real PostgreSQL and SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core.settings import DatabaseSettings
from jeffrey_core.store import dreams as runs
from jeffrey_core.store import memories as repo
from jeffrey_core.store.engine import create_db_engine, create_session_factory
from jeffrey_core.store.erasure import erase_rows
from jeffrey_core.store.models import Dream, DreamRun, Memory, RunStatus, RunTrigger

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=database_url))
    yield create_session_factory(engine)
    engine.dispose()


def _seed(factory: sessionmaker[Session], user: str) -> tuple[str, str, str]:
    """(memory id, dream id, active run id) of a user with 4 memories, one dream and a running run."""
    with factory() as session:
        ids = [
            m.id
            for m in repo.add_memories(session, user, [repo.NewMemory(f"m{i}", {}, T0) for i in range(4)])
        ]
        run = runs.create_run(session, user, RunTrigger.API)
        run.status = RunStatus.RUNNING.value
        dream = Dream(
            user_id=user, run_id=run.id, theme=["x"], term_weights={}, summary="s", summary_memory_id=ids[0],
            dominant_emotion=None, emotion_weights={}, salience=1.0, member_count=2,
            first_memory_at=T0, last_memory_at=T0, centroid=b"", algorithm_version="t",
        )  # fmt: skip
        session.add(dream)
        session.commit()
        return ids[0], dream.id, run.id


@pytest.mark.parametrize("batch_pause", [0.3, 1.5])
def test_erasure_while_a_batch_holds_the_users_rows(
    factory: sessionmaker[Session], database_url: str, user_id: str, batch_pause: float
) -> None:
    """The batch locks a memory, then wants the dream the erasure already deleted (the opposite order).
    PostgreSQL aborts whichever waiter runs its deadlock check (deadlock_timeout, 1 s) once the cycle
    exists: with a short pause that is usually the erasure (which must go again), with a long one the
    batch. Either way the erasure ends with nothing of the user left."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: no row locks, no deadlock to provoke")
    memory_id, dream_id, run_id = _seed(factory, user_id)
    locked, done = threading.Event(), threading.Event()
    batch_error: list[BaseException] = []

    def batch() -> None:
        with factory() as session:
            try:
                session.execute(update(Memory).where(Memory.id == memory_id).values(consolidated_at=T0))
                locked.set()
                # Wait until the erasure is blocked on this memory (it holds the dream by then).
                session.execute(text("SELECT pg_sleep(:s)"), {"s": batch_pause})
                session.execute(update(Dream).where(Dream.id == dream_id).values(member_count=3))
                session.rollback()  # the real batch's versioned run UPDATE fails here: StaleDataError
            except Exception as exc:  # the deadlock victim
                batch_error.append(exc)
                session.rollback()
            finally:
                done.set()

    thread = threading.Thread(target=batch, daemon=True)
    thread.start()
    assert locked.wait(10)
    with factory() as session:
        erased = erase_rows(session, user_id)
    assert done.wait(30)
    thread.join(10)
    assert erased.memories == 4 and erased.dreams == 1 and erased.runs == 1 and run_id in erased.run_ids
    with factory() as session:
        for model in (Memory, Dream, DreamRun):
            count = session.scalar(select(func.count()).select_from(model).where(model.user_id == user_id))
            assert count == 0, model


def test_erasure_stops_active_runs_and_keeps_other_users(
    factory: sessionmaker[Session], user_id: str
) -> None:
    _seed(factory, user_id)
    other = user_id + "-other"
    _, _, other_run = _seed(factory, other)
    with factory() as session:
        erased = erase_rows(session, user_id)
    assert (erased.memories, erased.dreams, erased.runs) == (4, 1, 1)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Memory).where(Memory.user_id == other)) == 4
        assert session.get_one(DreamRun, other_run).status == RunStatus.RUNNING.value
