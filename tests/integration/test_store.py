"""The memory repository on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from jeffrey_core.settings import DatabaseSettings
from jeffrey_core.store import engine as engine_module
from jeffrey_core.store import idempotency as idem
from jeffrey_core.store import memories as repo
from jeffrey_core.store.engine import create_db_engine, create_session_factory, ping

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(database_url: str):  # type: ignore[no-untyped-def]
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=database_url))
    with create_session_factory(engine)() as s:
        yield s
    engine.dispose()


def _add(session: Session, user: str, count: int, start: datetime = T0) -> list[str]:
    rows = repo.add_memories(
        session,
        user,
        [
            repo.NewMemory(text=f"memory {i}", meta={"i": i}, created_at=start + timedelta(minutes=i))
            for i in range(count)
        ],
    )
    session.commit()
    return [r.id for r in rows]


def test_migrations_create_the_schema(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=database_url))
    ping(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"memories", "idempotency_keys", "alembic_version"} <= tables
    columns = {c["name"] for c in inspect(engine).get_columns("memories")}
    assert {"embedding", "emotion", "consolidated_at", "dream_id", "lang", "meta"} <= columns
    engine.dispose()


def test_pages_walk_every_memory_once_newest_first(session: Session, user_id: str) -> None:
    ids = _add(session, user_id, 7)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = repo.list_memories(session, user_id, repo.MemoryFilter(), 3, cursor)
        seen += [m.id for m in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_equal_timestamps_are_paginated_by_id(session: Session, user_id: str) -> None:
    rows = repo.add_memories(
        session, user_id, [repo.NewMemory(text=f"t{i}", meta={}, created_at=T0) for i in range(5)]
    )
    session.commit()
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = repo.list_memories(session, user_id, repo.MemoryFilter(), 2, cursor)
        seen += [m.id for m in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.id for r in rows) and len(seen) == 5


def test_times_come_back_in_utc(session: Session, user_id: str) -> None:
    paris = datetime(2026, 3, 1, 13, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Paris")
    )
    (memory_id,) = [
        r.id
        for r in repo.add_memories(session, user_id, [repo.NewMemory(text="x", meta={}, created_at=paris)])
    ]
    session.commit()
    session.expire_all()
    row = repo.get_memory(session, user_id, memory_id)
    assert row is not None and row.created_at == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert row.created_at.tzinfo is not None


def test_filters(session: Session, user_id: str) -> None:
    ids = _add(session, user_id, 4)
    first = repo.get_memory(session, user_id, ids[0])
    assert first is not None
    first.consolidated_at = T0
    first.emotion_label = "joy"
    session.commit()

    def listed(**kw: object) -> set[str]:
        page, _ = repo.list_memories(session, user_id, repo.MemoryFilter(**kw), 50)  # type: ignore[arg-type]
        return {m.id for m in page}

    assert listed(consolidated=True) == {ids[0]}
    assert listed(consolidated=False) == set(ids[1:])
    assert listed(emotion="joy") == {ids[0]}
    assert listed(since=T0 + timedelta(minutes=2)) == set(ids[2:])
    assert listed(until=T0 + timedelta(minutes=2)) == set(ids[:2])


def test_users_never_see_or_delete_each_others_memories(session: Session, user_id: str) -> None:
    (mine,) = _add(session, user_id, 1)
    other = user_id + "-other"
    assert repo.get_memory(session, other, mine) is None
    assert repo.delete_memory(session, other, mine) is False
    assert repo.list_memories(session, other, repo.MemoryFilter(), 50)[0] == []
    assert repo.delete_memory(session, user_id, mine) is True
    session.commit()
    assert repo.get_memory(session, user_id, mine) is None


def test_idempotency_key_is_unique_per_user(session: Session, user_id: str) -> None:
    idem.save_idempotent_response(session, user_id, "k1", "h", 201, {"id": "a"}, 60)
    session.commit()
    stored = idem.find_idempotent_response(session, user_id, "k1")
    assert stored is not None and stored.response == {"id": "a"}
    idem.save_idempotent_response(session, user_id + "-b", "k1", "h", 201, {"id": "b"}, 60)
    session.commit()
    session.expunge_all()
    with pytest.raises(IntegrityError):
        idem.save_idempotent_response(session, user_id, "k1", "h2", 201, {"id": "c"}, 60)
        session.commit()
    session.rollback()


def test_expired_idempotency_keys_are_forgotten(session: Session, user_id: str) -> None:
    idem.save_idempotent_response(session, user_id, "old", "h", 201, {}, 60)
    session.commit()
    stored = idem.find_idempotent_response(session, user_id, "old")
    assert stored is not None
    stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    session.commit()
    assert idem.find_idempotent_response(session, user_id, "old") is None
    session.commit()
    idem.save_idempotent_response(session, user_id, "older", "h", 201, {}, 60)
    idem.save_idempotent_response(session, user_id, "fresh", "h", 201, {}, 60)
    session.commit()
    older = idem.find_idempotent_response(session, user_id, "older")
    assert older is not None
    older.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    session.commit()
    assert idem.purge_expired_idempotency_keys(session) >= 1
    session.commit()
    session.expunge_all()
    assert idem.find_idempotent_response(session, user_id, "older") is None
    assert idem.find_idempotent_response(session, user_id, "fresh") is not None


def _emotion(version: str, label: str = "joy") -> dict[str, object]:
    return {"label": label, "confidence": 0.8, "model_version": version, "method": "m"}


def test_annotation_writes_are_idempotent(session: Session, user_id: str) -> None:
    from jeffrey_core.store.annotations import count_pending, pending_annotation, write_annotation

    first, second = _add(session, user_id, 2)
    assert {first, second} <= {mid for mid, _ in pending_annotation(session, 1000)}
    assert write_annotation(session, first, _emotion("en-1"), "en") is True
    assert (
        write_annotation(session, first, _emotion("en-1", "anger"), "en") is False
    )  # redelivery: no rewrite
    assert write_annotation(session, first, _emotion("fallback-1", "neutral"), "en") is False
    # A fallback result is replaced by the model's, never the other way round.
    assert write_annotation(session, second, _emotion("fallback-1", "neutral"), "en") is True
    assert write_annotation(session, second, _emotion("fallback-1", "neutral"), "en") is False
    assert second not in {mid for mid, _ in pending_annotation(session, 1000)}
    assert second in {mid for mid, _ in pending_annotation(session, 1000, include_fallback=True)}
    assert write_annotation(session, second, _emotion("en-1", "sadness"), "en") is True
    session.commit()
    session.expire_all()
    rows = {mid: repo.get_memory(session, user_id, mid) for mid in (first, second)}
    assert rows[first].emotion_label == "joy" and rows[second].emotion_label == "sadness"  # type: ignore[union-attr]
    assert rows[first].lang == "en" and rows[first].annotated_at is not None  # type: ignore[union-attr]
    assert count_pending(session) >= 0


def test_batched_annotation_writes_follow_the_same_rules(session: Session, user_id: str) -> None:
    """write_annotations: one statement per kind of result, and it names exactly the rows it wrote."""
    from jeffrey_core.store.annotations import write_annotations

    fresh, model_done, fallback_done, for_fallback = _add(session, user_id, 4)
    assert write_annotations(
        session,
        [(model_done, _emotion("en-1"), "en"), (fallback_done, _emotion("fallback-1", "neutral"), "en")],
    ) == {model_done, fallback_done}
    written = write_annotations(
        session,
        [
            (fresh, _emotion("en-1", "fear"), "en"),  # new: written
            (model_done, _emotion("en-1", "anger"), "en"),  # redelivery over a model result: not written
            (fallback_done, _emotion("en-1", "sadness"), "fr"),  # the model replaces a fallback
            (for_fallback, _emotion("fallback-1", "neutral"), None),  # a fallback on a new memory
            ("no-such-memory", _emotion("en-1"), "en"),
        ],
    )
    assert written == {fresh, fallback_done, for_fallback}
    assert write_annotations(session, [(fresh, _emotion("fallback-1", "neutral"), "en")]) == set()
    session.commit()
    session.expire_all()
    labels = {mid: repo.get_memory(session, user_id, mid) for mid in (fresh, model_done, fallback_done)}
    assert [labels[m].emotion_label for m in (fresh, model_done, fallback_done)] == ["fear", "joy", "sadness"]  # type: ignore[union-attr]
    assert labels[fallback_done].lang == "fr" and labels[fresh].emotion["label"] == "fear"  # type: ignore[union-attr,index]


def test_deleting_a_memory_takes_it_out_of_its_dream(session: Session, user_id: str) -> None:
    import numpy as np

    from jeffrey_core.store.models import Dream

    ids = _add(session, user_id, 3)
    vectors = [np.array(v, np.float32) for v in ([1, 0, 0], [0.9, 0.1, 0], [0.8, 0, 0.2])]
    rows = [repo.get_memory(session, user_id, i) for i in ids]
    dream = Dream(
        user_id=user_id,
        run_id="r",
        theme=["a"],
        term_weights={"a": 1.0},
        summary=rows[0].text,  # type: ignore[union-attr]
        summary_memory_id=ids[0],
        emotion_weights={},
        salience=0.5,
        member_count=3,
        first_memory_at=T0,
        last_memory_at=T0,
        centroid=np.ones(3, np.float32).tobytes(),
        algorithm_version="t",
    )
    session.add(dream)
    session.flush()
    for row, vector in zip(rows, vectors, strict=True):
        row.dream_id, row.embedding = dream.id, vector.tobytes()  # type: ignore[union-attr]
    session.commit()

    assert repo.delete_memory(session, user_id, ids[0])
    session.commit()
    session.refresh(dream)
    assert dream.member_count == 2 and dream.summary_memory_id in ids[1:]
    assert dream.summary != "memory 0", "the summary never keeps the deleted text"
    assert repo.delete_memory(session, user_id, ids[1])
    session.commit()
    assert session.get(Dream, dream.id) is None, "a dream left with one member is no dream"
    left = repo.get_memory(session, user_id, ids[2])
    assert left is not None and left.dream_id is None


def test_idle_postgres_connection_found_dead_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pre-ping for a connection used a moment ago; one idle longer than the bypass window is pinged
    at checkout, and if its server side is gone the pool hands out a fresh one instead of failing."""
    engine = create_db_engine(DatabaseSettings(url=postgres_url, pool_size=1))
    killer = create_db_engine(DatabaseSettings(url=postgres_url, pool_size=1))

    def kill_pooled() -> None:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with killer.connect() as conn:  # the pooled connection's server process ends; the pool can't tell
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()

    try:
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_SECONDS", 3600.0)  # everything counts as "just used"
        kill_pooled()
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # not pinged: the dead connection fails its first statement
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_SECONDS", 0.0)  # everything counts as idle
        kill_pooled()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1  # pinged, found dead, replaced
    finally:
        engine.dispose()
        killer.dispose()


def test_rows_inserted_together_read_back_exactly(session: Session, user_id: str) -> None:
    """Several rows at once go by COPY on PostgreSQL (one INSERT per row on SQLite): whatever the
    text and meta hold (tabs, newlines, backslashes, quotes, emoji, nesting, nulls, nothing), it reads
    back as written, and an aware created_at keeps its instant."""
    awkward = [
        "tab\there",
        "line\nbreak\r\n",
        "back\\slash \\N \\.",
        "quote \" and ' ",
        "émoji 😀 中文",
        "a,b;c|d",
    ]
    metas: list[dict[str, object]] = [
        {"k": text, "nested": {"list": [1, 2.5, None, True, text]}} for text in awkward
    ]
    awkward.append("no meta at all")  # written as the constant "{}"
    metas.append({})
    paris = datetime(2026, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    written = repo.insert_memories(
        session,
        user_id,
        [repo.NewMemory(text=t, meta=m, created_at=paris) for t, m in zip(awkward, metas, strict=True)],
    )
    session.commit()
    session.expunge_all()
    for row in written:
        stored = repo.get_memory(session, user_id, row["id"])
        assert stored is not None
        assert (stored.text, stored.meta) == (row["text"], row["meta"])
        assert stored.created_at.astimezone(UTC) == paris.astimezone(UTC)
        assert stored.ingested_at.astimezone(UTC) == row["ingested_at"].astimezone(UTC)
