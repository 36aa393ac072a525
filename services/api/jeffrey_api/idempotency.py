"""Idempotency-Key handling for POSTs: same key and body replays, same key with another body is 409.

The stored answer is written in the same database transaction as the effect it describes, so a
crash can never leave an effect without its key (or a key without its effect).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from jeffrey_api.errors import ApiError

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
