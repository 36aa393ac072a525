"""The worker's explicit dependencies: one `WorkerContext` per process, handed to every service.

Built once per pool process (in `worker_process_init`, or on first use under the solo pool and in
tests), never at import: settings, database sessions, Redis clients, the key builder, metrics, the
enqueue function, the clock, and — loaded lazily, once — the emotion model and the text embedder.
Services take the context as their first argument, the way arq hands jobs a `ctx`; nothing below
the task adapters calls `get_settings()` or opens a client of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from celery import Celery
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core import enqueue
from jeffrey_core.events import publish
from jeffrey_core.redis_client import create_sync_redis
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import Settings
from jeffrey_core.store.engine import create_db_engine, create_session_factory
from jeffrey_core.store.models import utcnow
from jeffrey_worker.dream.encoder import RoutedEncoder, load_encoder
from jeffrey_worker.dream.tuner import BatchSizeTuner, RedisTunerStore
from jeffrey_worker.dream.vectors import Embedder, idf_from_emotion_model
from jeffrey_worker.emotion_service import GuardedDetector, build_guarded_detector
from jeffrey_worker.metrics import WorkerMetrics, worker_metrics

Send = Callable[..., Any]


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    redis: Redis  # str responses
    redis_bytes: Redis  # bytes responses (pybreaker's storage)
    keys: RedisKeys
    metrics: WorkerMetrics
    send: Send  # jeffrey_core.enqueue.send bound to this worker's app, patient policy
    clock: Callable[[], datetime] = utcnow
    _detector: GuardedDetector | None = field(default=None, repr=False)
    _embedder: RoutedEncoder | None = field(default=None, repr=False)

    @property
    def detector(self) -> GuardedDetector:
        """The emotion model behind its shared circuit breaker, loaded on first use."""
        if self._detector is None:
            self._detector = build_guarded_detector(self.settings.emotion, self.redis_bytes, self.keys)
        return self._detector

    @property
    def embedder(self) -> RoutedEncoder:
        """The sentence encoders, one space per language (or the lexical fallback when none is
        installed), loaded on first use."""
        if self._embedder is None:
            dream = self.settings.dream
            words = Embedder(idf_from_emotion_model())
            self._embedder = load_encoder(
                dream.embedding_model,
                dream.embedding_tokenizer,
                words,
                dream.french_encoder,
                dream.french_embedding_model,
                dream.french_embedding_tokenizer,
            )
        return self._embedder

    def tuner(self) -> BatchSizeTuner:
        """The dream batch-size tuner; its state is shared by every worker through Redis."""
        dream = self.settings.dream
        store = RedisTunerStore(self.redis, self.keys.dream_batch_size(), self.keys.dream_quality_average())
        return BatchSizeTuner(
            store,
            minimum=dream.batch_min,
            maximum=dream.batch_max,
            initial=dream.batch_initial,
            target_seconds=dream.target_batch_seconds,
        )

    def publish(self, kind: str, **fields: Any) -> None:
        """A progress event on the events channel (fire and forget)."""
        publish(self.redis, self.keys.events_channel(), kind, **fields)


def build_context(settings: Settings, send: Send) -> WorkerContext:
    """The context for `settings`; `send` enqueues (the worker binds its app; tools pass their own)."""
    engine = create_db_engine(settings.database)
    return WorkerContext(
        settings=settings,
        sessions=create_session_factory(engine),
        redis=create_sync_redis(settings.redis),
        redis_bytes=create_sync_redis(settings.redis, decode_responses=False),
        keys=RedisKeys(settings.redis.key_prefix),
        metrics=worker_metrics(),
        send=send,
    )


_contexts: dict[int, WorkerContext] = {}


def install(settings: Settings, app: Celery) -> WorkerContext:
    """Build this process's context (a forked pool child never reuses its parent's sockets)."""
    send = partial(enqueue.send, app, caller=enqueue.Caller.WORKER)
    _contexts[os.getpid()] = context = build_context(settings, send)
    return context


def current(settings: Settings, app: Celery) -> WorkerContext:
    """This process's context, built on first use where `worker_process_init` did not run (solo pool)."""
    return _contexts.get(os.getpid()) or install(settings, app)
