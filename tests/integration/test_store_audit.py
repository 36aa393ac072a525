"""The audit store (jeffrey_core.store.audit) on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from jeffrey_core.settings import DatabaseSettings
from jeffrey_core.store.audit import AuditAction, AuditFilter, list_audit, record_audit
from jeffrey_core.store.engine import create_db_engine, create_session_factory

pytestmark = pytest.mark.integration


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=database_url))
    with create_session_factory(engine)() as s:
        yield s
    engine.dispose()


def test_migration_creates_the_audit_table(session: Session) -> None:
    inspector = inspect(session.get_bind())
    columns = {c["name"] for c in inspector.get_columns("audit")}
    assert columns == {"id", "at", "actor", "action", "target", "request_id", "outcome"}


def test_rows_are_appended_and_paged_newest_first(session: Session) -> None:
    actor = f"ops-{uuid.uuid4().hex[:8]}"
    written = []
    for n in range(5):
        row = record_audit(session, actor, AuditAction.DLQ_DELETE, f"dl-{n}", f"req-{n}", "ok")
        session.commit()
        written.append(row.id)
    record_audit(session, actor, AuditAction.DLQ_REPLAY, "dl-x", None, "dead_letter_not_found")
    session.commit()
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = list_audit(session, AuditFilter(actor=actor, action="dlq.delete"), 2, cursor)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == written[::-1]
    (failed,) = list_audit(session, AuditFilter(actor=actor, action="dlq.replay"), 10, None)[0]
    assert (failed.target, failed.request_id, failed.outcome) == ("dl-x", None, "dead_letter_not_found")
    assert failed.at.tzinfo is not None


def test_long_values_are_cut_to_their_columns(session: Session) -> None:
    actor = "a" * 300
    row = record_audit(session, actor, AuditAction.ACT_FOR_USER, "t" * 1000, "r" * 500, "o" * 100)
    session.commit()
    session.expire_all()
    (stored,) = list_audit(session, AuditFilter(actor="a" * 128), 1, None)[0]
    assert stored.id == row.id
    assert (len(stored.target or ""), len(stored.request_id or ""), len(stored.outcome)) == (256, 128, 64)


def test_nul_and_lone_surrogates_in_a_target_are_stored_replaced(session: Session) -> None:
    """A user_id from the query or the path reaches the audit row as sent: PostgreSQL refuses NUL and
    no database takes a lone surrogate, so they are replaced rather than losing the row (found by
    schemathesis on PostgreSQL)."""
    actor = f"ops-{uuid.uuid4().hex[:8]}"
    record_audit(session, actor, AuditAction.ACT_FOR_USER, "a\x00b\ud800c\ud83d\ude00d", "req\x00", "ok")
    session.commit()
    session.expire_all()
    (stored,) = list_audit(session, AuditFilter(actor=actor), 1, None)[0]
    assert (stored.target, stored.request_id) == ("a\ufffdb\ufffdc\U0001f600d", "req\ufffd")
