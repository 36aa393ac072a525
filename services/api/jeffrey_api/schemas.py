"""Request and response bodies of the public API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from jeffrey_api.validation import MAX_JSON_DEPTH, BoundedDatetime, SafeText, bounded_json, safe_text
from jeffrey_core.contract import MAX_DETECT_TEXTS, MAX_TEXT_CHARS, EmotionDetection
from jeffrey_core.store.models import Memory

MAX_BATCH = 500
MAX_META_BYTES = 16 * 1024


# Made once: `json.dumps(..., default=str)` builds a new encoder on every call.
_META_ENCODER = json.JSONEncoder(default=str)


class MemoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SafeText = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, description="What the user lived or said."
    )
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form JSON object, up to 16 KiB and {MAX_JSON_DEPTH} levels deep.",
    )
    created_at: BoundedDatetime | None = Field(
        None, description="When it happened (ISO 8601; naive means UTC; years 1970..9999 in UTC)."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be blank")
        return value

    @field_validator("meta", mode="before")
    @classmethod
    def _bounded_meta(cls, value: Any) -> Any:
        # Before pydantic walks it: a deep tree is refused without recursing through it, and a
        # bounded one is measured by the C encoder (one validator call, not two, per memory).
        if _small_flat(value):
            return value
        bounded_json(value)
        if len(_META_ENCODER.encode(value)) > MAX_META_BYTES:
            raise ValueError(f"meta must serialise to at most {MAX_META_BYTES} bytes")
        return value


# Most meta objects are a few flat key/value pairs ({"src": "app"}). For those the checks of the general
# path are done without walking or encoding: the encoded size has an upper bound (the encoder writes
# a character as at most 12 bytes, a surrogate pair in \u escapes), and the strings are checked
# together as `bounded_json` checks them. The general path was a seventh of a batch POST's CPU.
_FLAT_SCALAR_BYTES = {bool: 5, type(None): 4, int: 20, float: 24}
_BYTES_PER_CHAR = 12


def _small_flat(value: Any) -> bool:
    """True when `value` is a flat dict of scalars that provably passes the meta checks (its strings
    are checked here); False sends it down the general path."""
    if type(value) is not dict or len(value) > 64:
        return False
    size, strings = 2, []
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str:
            return False
        if kind is str:
            strings.append(item)
            size += _BYTES_PER_CHAR * len(item) + 2
        elif kind in _FLAT_SCALAR_BYTES and (kind is not int or -(10**18) < item < 10**18):
            size += _FLAT_SCALAR_BYTES[kind]
        else:
            return False
        strings.append(key)
        size += _BYTES_PER_CHAR * len(key) + 6  # quotes, ": " and ", "
    if size > MAX_META_BYTES:
        return False
    safe_text("".join(strings))
    return True


class MemoryBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memories: list[MemoryCreate] = Field(min_length=1, max_length=MAX_BATCH)


def _body_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "memories" in value else "single"


MemoryPostBody = Annotated[
    Annotated[MemoryCreate, Tag("single")] | Annotated[MemoryBatchCreate, Tag("batch")],
    Discriminator(_body_kind),
]


class EmotionOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    label: str | None = None
    fine_label: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    method: str | None = None
    model_version: str | None = None


class MemoryOut(BaseModel):
    id: str
    user_id: str
    text: str
    lang: str | None
    created_at: datetime
    ingested_at: datetime
    meta: dict[str, Any]
    emotion: EmotionOut | None
    consolidated_at: datetime | None
    dream_id: str | None

    @classmethod
    def from_row(cls, row: Memory) -> MemoryOut:
        return cls(
            id=row.id,
            user_id=row.user_id,
            text=row.text,
            lang=row.lang,
            created_at=row.created_at,
            ingested_at=row.ingested_at,
            meta=row.meta or {},
            emotion=EmotionOut(**row.emotion) if row.emotion else None,
            consolidated_at=row.consolidated_at,
            dream_id=row.dream_id,
        )


class MemoryBatchOut(BaseModel):
    items: list[MemoryOut]


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None


class DetectRequest(BaseModel):
    """Either `text` or `texts` (1-MAX_DETECT_TEXTS), each 1-MAX_TEXT_CHARS characters."""

    model_config = ConfigDict(extra="forbid")

    text: SafeText | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    texts: list[Annotated[SafeText, Field(min_length=1, max_length=MAX_TEXT_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_DETECT_TEXTS
    )
    timeout: float | None = Field(
        None,
        gt=0,
        le=30,
        description="Seconds to wait for a worker (default 5; cut to API_RESULT_MAX_WAIT, 10).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DetectRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        return self


class DetectBatchOut(BaseModel):
    items: list[EmotionDetection]


class EchoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field("ping", min_length=1, max_length=200)
    timeout: float = Field(5.0, gt=0, le=30)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class DreamRunOut(BaseModel):
    id: str
    user_id: str
    trigger: str
    status: str
    batches: int
    memories_processed: int
    memories_total: int
    dreams_created: int
    dreams_updated: int
    quality: float | None
    batch_size: int | None
    timings: dict[str, Any]
    error: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> DreamRunOut:
        return cls.model_validate(row, from_attributes=True)


class DreamRunPage(BaseModel):
    items: list[DreamRunOut]
    next_cursor: str | None


class DreamRunAccepted(BaseModel):
    run_id: str
    status: str
    status_url: str


class DreamOut(BaseModel):
    id: str
    user_id: str
    run_id: str
    theme: list[str]
    summary: str
    dominant_emotion: str | None
    emotion_distribution: dict[str, float]
    salience: float
    member_count: int
    first_memory_at: datetime
    last_memory_at: datetime
    algorithm_version: str
    created_at: datetime
    updated_at: datetime
    member_ids: list[str] | None = None

    @classmethod
    def from_row(cls, row: Any, member_ids: list[str] | None = None) -> DreamOut:
        total = sum(row.emotion_weights.values()) or 1.0
        return cls(
            id=row.id,
            user_id=row.user_id,
            run_id=row.run_id,
            theme=row.theme,
            summary=row.summary,
            dominant_emotion=row.dominant_emotion,
            emotion_distribution={k: round(v / total, 4) for k, v in sorted(row.emotion_weights.items())},
            salience=row.salience,
            member_count=row.member_count,
            first_memory_at=row.first_memory_at,
            last_memory_at=row.last_memory_at,
            algorithm_version=row.algorithm_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            member_ids=member_ids,
        )


class DreamPage(BaseModel):
    items: list[DreamOut]
    next_cursor: str | None


class ToggleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
