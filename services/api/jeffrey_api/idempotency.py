"""Idempotency-Key handling for POSTs: same key and body replays, same key with another body is 409.

The stored answer is written in the same database transaction as the effect it describes, so a
crash can never leave an effect without its key (or a key without its effect).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jeffrey_api.errors import ApiError
from jeffrey_core.store import idempotency as repo
from jeffrey_core.store.engine import serialized_writes

_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")


def validate_key(key: str | None) -> str | None:
    """The header value when well formed (1-255 printable ASCII characters), else a 422."""
    if key is None:
        return None
    if not _KEY_PATTERN.match(key):
        raise ApiError(
            422, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters"
        )
    return key


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """A hash of what the request asks for; JSON key order and whitespace do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def conflict() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body",
    )


def commit_once(
    session: Session,
    owner: str,
    key: str | None,
    fingerprint: str,
    ttl_seconds: int,
    status_code: int,
    create: Callable[[], dict[str, Any] | BaseModel],
) -> tuple[Response, bool]:
    """Run `create` (which adds rows to `session`) and commit, at most once per Idempotency-Key.

    Returns the response and whether this call did the work (False for a replay), so the caller
    knows whether to enqueue follow-up tasks. `fingerprint` is only read when there is a key. On
    SQLite the whole transaction holds the process's writer lock (`serialized_writes`). A pydantic
    model from `create` is serialised by pydantic's compiled JSON dump, a dict by `json.dumps`.
    """
    with serialized_writes(session):
        outcome = _commit_once(session, owner, key, fingerprint, ttl_seconds, status_code, create)
    if isinstance(outcome, Response):
        return outcome, False
    if isinstance(outcome, BaseModel):
        return Response(outcome.model_dump_json(), status_code, media_type="application/json"), True
    return JSONResponse(outcome, status_code=status_code), True


def _commit_once(
    session: Session,
    owner: str,
    key: str | None,
    fingerprint: str,
    ttl_seconds: int,
    status_code: int,
    create: Callable[[], dict[str, Any] | BaseModel],
) -> Response | dict[str, Any] | BaseModel:
    """The replayed response, or the payload this call committed."""
    if key is not None:
        replay = _replay(session, owner, key, fingerprint)
        if replay is not None:
            return replay
    payload = create()
    if key is not None:
        stored = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        repo.save_idempotent_response(session, owner, key, fingerprint, status_code, stored, ttl_seconds)
    try:
        session.commit()
    except IntegrityError:
        # Another request with the same key committed first: answer as that one did.
        session.rollback()
        replay = _replay(session, owner, key, fingerprint) if key is not None else None
        if replay is None:
            raise
        return replay
    return payload


def _replay(session: Session, owner: str, key: str, fingerprint: str) -> JSONResponse | None:
    stored = repo.find_idempotent_response(session, owner, key)
    if stored is None:
        return None
    if stored.request_hash != fingerprint:
        raise conflict()
    return JSONResponse(
        stored.response, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"}
    )
