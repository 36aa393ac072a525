"""SQLAlchemy 2.x models. Times are stored as naive UTC and come back timezone-aware."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Same column type on SQLite and PostgreSQL: naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in ACTIVE_RUN_STATUSES

    @property
    def finished(self) -> bool:
        return self in FINISHED_RUN_STATUSES


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED)


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    API = "api"
    REPLAY = "replay"


class Base(DeclarativeBase):
    pass


class Memory(Base):
    """A short text a user lived or said; annotated by the emotion model, consolidated into dreams."""

    __tablename__ = "memories"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    lang: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # Emotion annotation: label kept in its own column so it can be filtered and indexed;
    # the rest (confidence, scores, method, model_version) lives in `emotion`.
    emotion_label: Mapped[str | None] = mapped_column(String(32))
    emotion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    emotion_model_version: Mapped[str | None] = mapped_column(String(64))
    annotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consolidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consolidation_run_id: Mapped[str | None] = mapped_column(String(36))
    dream_id: Mapped[str | None] = mapped_column(String(36))
    # float32 vector bytes, filled by the DreamEngine; model name recorded beside it.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_memories_user_created", "user_id", "created_at", "id"),
        Index("ix_memories_user_consolidated", "user_id", "consolidated_at"),
        Index("ix_memories_user_emotion", "user_id", "emotion_label"),
        Index("ix_memories_pending_emotion", "emotion_model_version", "ingested_at"),
        Index("ix_memories_dream", "dream_id"),
        # A user's consolidated memories that joined no dream, newest first (each batch revisits them).
        Index(
            "ix_memories_user_singletons",
            "user_id",
            "created_at",
            "id",
            postgresql_where=sql_text("consolidated_at IS NOT NULL AND dream_id IS NULL"),
            sqlite_where=sql_text("consolidated_at IS NOT NULL AND dream_id IS NULL"),
        ),
    )


class IdempotencyKey(Base):
    """The stored answer to a POST with an Idempotency-Key, written in the same transaction as its effect."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class Dream(Base):
    """A theme the DreamEngine found in one user's memories."""

    __tablename__ = "dreams"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)  # the run that created it
    theme: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    term_weights: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    summary_memory_id: Mapped[str] = mapped_column(String(36), nullable=False)
    dominant_emotion: Mapped[str | None] = mapped_column(String(32))
    emotion_weights: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    salience: Mapped[float] = mapped_column(Float, nullable=False)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False)
    first_memory_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_memory_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    centroid: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    algorithm_version: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_dreams_user_created", "user_id", "created_at", "id"),)


class DreamRun(Base):
    """One consolidation run for one user: a chain of batch tasks, each committing its progress here."""

    __tablename__ = "dream_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # a RunTrigger value
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # a RunStatus value
    batches: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    memories_processed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    memories_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dreams_created: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dreams_updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    quality: Mapped[float | None] = mapped_column(Float)
    quality_weight: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    cursor_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cursor_id: Mapped[str | None] = mapped_column(String(36))
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Optimistic concurrency: two copies of the same batch message cannot both commit progress.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy's declarative API
    __table_args__ = (
        Index("ix_dream_runs_user_queued", "user_id", "queued_at", "id"),
        Index("ix_dream_runs_status", "status", "updated_at"),
    )


class Consolidation(Base):
    """One row per consolidated memory: its primary key makes a second consolidation impossible."""

    __tablename__ = "consolidations"

    memory_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    dream_id: Mapped[str | None] = mapped_column(String(36))
    consolidated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_consolidations_dream", "dream_id"),)


class AuditRecord(Base):
    """One admin action (jeffrey_core.store.audit): append-only, no API deletes it."""

    __tablename__ = "audit"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)  # the token's subject
    action: Mapped[str] = mapped_column(String(64), nullable=False)  # an AuditAction value
    target: Mapped[str | None] = mapped_column(String(256))
    request_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(64), nullable=False)  # "ok" or the error code

    __table_args__ = (
        Index("ix_audit_at", "at", "id"),
        Index("ix_audit_actor_at", "actor", "at", "id"),
    )
