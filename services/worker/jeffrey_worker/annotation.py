"""Annotate memories that have no emotion yet, in micro-batches, each batch committed on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core.store.annotations import pending_annotation, write_annotation
from jeffrey_worker.emotion.model import EmotionResult


@dataclass
class AnnotationStats:
    batches: int = 0
    written: int = 0
    skipped: int = 0
    results_written: list[EmotionResult] = field(default_factory=list)
    more_pending: bool = False


def annotate_pending(
    sessions: sessionmaker[Session],
    detect: Callable[[list[str]], list[EmotionResult]],
    batch_size: int,
    budget_seconds: float,
    include_fallback: bool = False,
) -> AnnotationStats:
    """Walk pending memories oldest first until none is left or the time budget is spent."""
    stats = AnnotationStats()
    deadline = time.monotonic() + budget_seconds
    while True:
        if time.monotonic() >= deadline:
            stats.more_pending = True
            return stats
        with sessions() as session:
            rows = pending_annotation(session, batch_size, include_fallback)
        if not rows:
            return stats
        results = detect([text for _, text in rows])
        with sessions() as session:
            for (memory_id, _), result in zip(rows, results, strict=True):
                if write_annotation(session, memory_id, _stored(result), result.lang):
                    stats.written += 1
                    stats.results_written.append(result)
                else:
                    stats.skipped += 1
            session.commit()
        stats.batches += 1
        if include_fallback and all(r.method.startswith("fallback") for r in results):
            # The model is still unavailable: do not spin on the same fallback rows.
            return stats


def _stored(result: EmotionResult) -> dict[str, object]:
    stored = result.as_dict()
    stored.pop("lang", None)  # kept in its own column
    return stored
