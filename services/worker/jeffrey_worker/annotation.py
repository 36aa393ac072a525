"""Annotate memories that have no emotion yet, in micro-batches, each batch committed on its own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core.contract import MAX_DETECT_TEXTS, MAX_TEXT_CHARS
from jeffrey_core.store.annotations import pending_annotation, write_annotations, write_embeddings
from jeffrey_worker.context import WorkerContext
from jeffrey_worker.dream.encoder import RoutedEncoder, TextEncoder, routed
from jeffrey_worker.dream.vectors import to_bytes
from jeffrey_worker.emotion.model import EmotionResult
from jeffrey_worker.emotion_service import record_predictions

log = logging.getLogger(__name__)


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
    encoder: TextEncoder | RoutedEncoder | None = None,
) -> AnnotationStats:
    """Walk pending memories oldest first until none is left or the time budget is spent.

    With an `encoder`, each batch's dream vectors are computed and stored in the same transaction."""
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
        vectors = _vectors(encoder, rows)
        with sessions() as session:
            write_embeddings(session, vectors)
            annotations = [(i, _stored(r), r.lang) for (i, _), r in zip(rows, results, strict=True)]
            written = write_annotations(session, annotations)
            session.commit()
        for (memory_id, _), result in zip(rows, results, strict=True):
            if memory_id in written:
                stats.written += 1
                stats.results_written.append(result)
            else:
                stats.skipped += 1
        stats.batches += 1
        if include_fallback and all(r.method.startswith("fallback") for r in results):
            # The model is still unavailable: do not spin on the same fallback rows.
            return stats


def _vectors(
    encoder: TextEncoder | RoutedEncoder | None, rows: list[tuple[str, str]]
) -> dict[str, tuple[bytes, str]]:
    """Each memory's (vector bytes, model name), each text in its language's space."""
    if encoder is None:
        return {}
    embedded = routed(encoder).embed([text for _, text in rows])
    return {
        memory_id: (to_bytes(vector), name)
        for (memory_id, _), (name, vector) in zip(rows, embedded, strict=True)
    }


def _stored(result: EmotionResult) -> dict[str, object]:
    stored = result.as_dict()
    stored.pop("lang", None)  # kept in its own column
    return stored


def sweep(ctx: WorkerContext) -> AnnotationStats | None:
    """One annotation sweep under the sweep lock; None when another sweep holds it.

    `more_pending` in the result means the time budget ran out with memories left: send another.
    """
    settings = ctx.settings
    timeout = settings.celery.task_time_limit + 5
    lock = ctx.redis.lock(ctx.keys.emotion_sweep_lock(), timeout=timeout, blocking=False)
    if not lock.acquire(blocking=False):
        return None
    try:
        detector = ctx.detector
        stats = annotate_pending(
            ctx.sessions,
            detector.detect,
            batch_size=settings.emotion.annotate_batch_size,
            budget_seconds=settings.celery.task_soft_time_limit * 0.6,
            include_fallback=detector.breaker.current_state == "closed",
            encoder=ctx.embedder,
        )
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("annotation sweep lock expired before release")
    record_predictions(ctx.metrics, stats.results_written)
    ctx.metrics.annotations.labels(outcome="written").inc(stats.written)
    ctx.metrics.annotations.labels(outcome="skipped").inc(stats.skipped)
    if stats.written:
        log.info("annotated %d memories in %d batches", stats.written, stats.batches)
    return stats


def validate_texts(texts: object) -> list[str]:
    """The texts of a detect message (the API validated them; checked again: messages can be forged)."""
    if (
        not isinstance(texts, list)
        or not 1 <= len(texts) <= MAX_DETECT_TEXTS
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_TEXT_CHARS for t in texts)
    ):
        raise ValueError(
            f"texts must be a list of 1-{MAX_DETECT_TEXTS} strings of 1-{MAX_TEXT_CHARS} characters"
        )
    return texts


def detect(ctx: WorkerContext, texts: list[str]) -> list[dict[str, object]]:
    """Emotion of each text, in order, through the breaker (fallback results say so in `method`)."""
    results = ctx.detector.detect(validate_texts(texts))
    record_predictions(ctx.metrics, results)
    return [r.as_dict() for r in results]
