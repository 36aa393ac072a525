"""`jeffrey memories import`: stream a JSONL or CSV file through the API in batches.

Each line is checked locally first (a bad line is reported with its reason and skipped, never
aborting the import). Lines repeated inside the file are imported once. Every batch carries an
Idempotency-Key derived from its content, so importing the same file again stores nothing twice:
the replayed batches are counted as duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from jeffrey_core.contract import MAX_TEXT_CHARS

BATCH_SIZE = 200
MAX_ATTEMPTS = 5


@dataclass
class ImportSummary:
    imported: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    aborted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": [{"line": n, "reason": r} for n, r in self.rejected],
            "aborted": self.aborted,
        }


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, memory or None, rejection reason or None) for each data line."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                yield 1, None, "CSV header must have a 'text' column"
                return
            for row in reader:
                yield (
                    reader.line_num,
                    *_validate({k: v for k, v in row.items() if v not in (None, "")}, csv_row=True),
                )
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON: {exc.msg}"
                continue
            yield number, *_validate(record, csv_row=False)


class _Invalid(ValueError):
    """One line's problem, said for the person who wrote the file."""


def _validate(record: Any, csv_row: bool) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return _memory(record, csv_row), None
    except _Invalid as exc:
        return None, str(exc)


def _memory(record: Any, csv_row: bool) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise _Invalid("a line must be a JSON object")
    memory: dict[str, Any] = {"text": _text(record.get("text"))}
    meta = _meta(record.get("meta"), csv_row)
    if meta is not None:
        memory["meta"] = meta
    if record.get("created_at") is not None:
        memory["created_at"] = _created_at(record["created_at"])
    unknown = set(record) - {"text", "meta", "created_at"}
    if unknown and not csv_row:
        raise _Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    return memory


def _text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise _Invalid("'text' is missing or blank")
    if len(text) > MAX_TEXT_CHARS:
        raise _Invalid(f"'text' is longer than {MAX_TEXT_CHARS} characters")
    return text


def _meta(meta: Any, csv_row: bool) -> dict[str, Any] | None:
    if csv_row and isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise _Invalid("'meta' is not valid JSON") from exc
    if meta is not None and not isinstance(meta, dict):
        raise _Invalid("'meta' must be an object")
    return meta


def _created_at(value: Any) -> str:
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Invalid("'created_at' is not an ISO 8601 date-time") from exc
    return str(value)


def import_file(
    path: Path,
    client: httpx.Client,
    user_id: str | None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Send every valid line of `path`; `on_progress` gets the number of lines handled per step."""
    summary = ImportSummary()
    seen: set[str] = set()
    batch: list[tuple[int, dict[str, Any]]] = []
    for number, memory, reason in read_records(path):
        if memory is None:
            summary.rejected.append((number, reason or "invalid"))
            _tick(on_progress, 1)
            continue
        fingerprint = json.dumps(memory, sort_keys=True)
        if fingerprint in seen:
            summary.duplicates += 1
            _tick(on_progress, 1)
            continue
        seen.add(fingerprint)
        batch.append((number, memory))
        if len(batch) >= batch_size:
            if not _send(client, user_id, batch, summary):
                return summary
            _tick(on_progress, len(batch))
            batch = []
    if batch and _send(client, user_id, batch, summary):
        _tick(on_progress, len(batch))
    return summary


def _tick(on_progress: Callable[[int], None] | None, n: int) -> None:
    if on_progress:
        on_progress(n)


def _send(
    client: httpx.Client, user_id: str | None, batch: list[tuple[int, dict[str, Any]]], summary: ImportSummary
) -> bool:
    """Post one batch (retrying while the service is unavailable); False when the import must stop."""
    memories = [m for _, m in batch]
    key = (
        "import-" + hashlib.sha256(json.dumps([user_id, memories], sort_keys=True).encode()).hexdigest()[:40]
    )
    params = {"user_id": user_id} if user_id else {}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = client.post(
                "/api/v1/memories",
                json={"memories": memories},
                params=params,
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError as exc:
            if attempt == MAX_ATTEMPTS:
                summary.aborted = f"API unreachable: {exc.__class__.__name__}"
                return False
            time.sleep(min(2**attempt, 10))
            continue
        if response.status_code == 201:
            if response.headers.get("idempotent-replayed") == "true":
                summary.duplicates += len(batch)
            else:
                summary.imported += len(batch)
            return True
        if response.status_code in (429, 503) and attempt < MAX_ATTEMPTS:
            time.sleep(min(float(response.headers.get("retry-after", 2)), 30))
            continue
        if response.status_code == 422 and len(batch) > 1:
            # Something the local check missed: find the bad lines one by one, keep the good ones.
            return all(_send(client, user_id, [line], summary) for line in batch)
        if response.status_code == 422:
            summary.rejected.append((batch[0][0], _error_message(response)))
            return True
        summary.aborted = f"API answered {response.status_code}: {_error_message(response)}"
        return False
    return False


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip())
    return total - 1 if path.suffix.lower() == ".csv" else total
