"""The dream read model against real databases: one user's view, and everyone's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from jeffrey_api.read_model import read_dream_view, read_users_due
from jeffrey_core.settings import DatabaseSettings
from jeffrey_core.store import dreams as store
from jeffrey_core.store import memories as repo
from jeffrey_core.store.engine import create_db_engine, create_session_factory
from jeffrey_core.store.models import Consolidation, Dream, Memory, RunStatus, RunTrigger

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _session(url: str) -> Iterator[Session]:
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=url))
    with create_session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    yield from _session(database_url)


@pytest.fixture
def fresh_session(sqlite_url: str) -> Iterator[Session]:
    yield from _session(sqlite_url)


def seed(session: Session, user: str) -> None:
    """6 memories (2 consolidated into a joy dream, 1 without a dream), 4 runs in 4 states."""
    added = repo.add_memories(
        session, user, [repo.NewMemory(f"{user} memory {i}", {}, T0 + timedelta(minutes=i)) for i in range(6)]
    )
    rows = [session.get_one(Memory, row.id) for row in added]  # add_memories' rows are not in the session
    runs = {status: store.create_run(session, user, RunTrigger.API) for status in RunStatus}
    for status, run in runs.items():
        run.status = status.value
    done = runs[RunStatus.SUCCEEDED]
    done.started_at, done.finished_at, done.quality = T0, T0 + timedelta(seconds=30), 0.8
    failed = runs[RunStatus.FAILED]
    failed.started_at, failed.finished_at = T0, T0 + timedelta(seconds=5)
    dream = Dream(
        user_id=user,
        run_id=done.id,
        theme=["x"],
        term_weights={},
        summary="s",
        summary_memory_id=rows[0].id,
        dominant_emotion="joy",
        emotion_weights={},
        salience=1.0,
        member_count=2,
        first_memory_at=T0,
        last_memory_at=T0,
        centroid=b"",
        algorithm_version="test",
    )
    session.add(dream)
    session.flush()
    for row, dream_id in ((rows[0], dream.id), (rows[1], dream.id), (rows[2], None)):
        row.consolidated_at, row.dream_id = T0, dream_id
        session.add(Consolidation(memory_id=row.id, run_id=done.id, dream_id=dream_id))
    session.commit()


def test_one_users_view(session: Session, user_id: str) -> None:
    seed(session, user_id)
    seed(session, user_id + "-other")
    v = read_dream_view(session, user_id)
    assert v.runs == {status: 1 for status in RunStatus}
    assert v.active_runs == 2 and v.total_runs == 4
    assert v.last_success is not None and v.last_success.quality == 0.8
    assert v.average_quality == pytest.approx(0.8)
    assert v.pending_memories == 3 and v.consolidated_memories == 3
    assert v.dreams_by_emotion == {"joy": 1}
    assert v.run_durations == (5.0, 30.0)


def test_everyones_view_adds_the_users_up(fresh_session: Session) -> None:
    for user in ("ann", "bob", "cy"):
        seed(fresh_session, user)
    v = read_dream_view(fresh_session)
    assert v.user_id is None
    assert v.count(RunStatus.QUEUED) == 3 and v.count(RunStatus.RUNNING) == 3 and v.active_runs == 6
    assert v.pending_memories == 9 and v.consolidated_memories == 9
    assert v.dreams_by_emotion == {"joy": 3}
    assert v.run_durations == (5.0, 5.0, 5.0, 30.0, 30.0, 30.0)
    assert v.last_run is not None and v.last_run.status in set(RunStatus)


def test_users_due_counts_users_at_or_above_the_minimum(session: Session, user_id: str) -> None:
    """Each seed leaves 3 memories pending; JeffreyNoDreamSuccess24h reads this count
    (jeffrey_dream_users_due). The PostgreSQL database is shared by the session's tests: compare
    with the count before seeding."""
    before_3, before_4 = read_users_due(session, 3), read_users_due(session, 4)
    seed(session, user_id)
    seed(session, user_id + "-other")
    assert read_users_due(session, 3) == before_3 + 2
    assert read_users_due(session, 4) == before_4


def test_users_due_on_a_fresh_database_is_zero(fresh_session: Session) -> None:
    assert read_users_due(fresh_session, 1) == 0
    seed(fresh_session, "ann")
    assert read_users_due(fresh_session, 1) == 1 and read_users_due(fresh_session, 4) == 0
