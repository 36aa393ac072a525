"""Run the real consolidation service outside Celery: for `make bench-dream`, `make eval-dreams` and tests.

A throwaway redis-server (the lock, the tuner and events live in Redis), a WorkerContext over a
database URL, and `consolidate_user`, which stores texts for a user and drives a run batch by batch
through `consolidate_one_batch` — the function the Celery task calls — then reads back which dream
each memory joined.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jeffrey_core.settings import DatabaseSettings, RedisSettings, Settings
from jeffrey_core.store import dreams as store
from jeffrey_core.store.memories import NewMemory, add_memories
from jeffrey_core.store.migrate import upgrade
from jeffrey_core.store.models import Dream, DreamRun, Memory, RunTrigger
from jeffrey_dev.stack import find_redis_server


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server on a Unix socket in a temporary folder, stopped on exit; yields its URL."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("redis-server is needed (make venv installs a fallback)")
    with tempfile.TemporaryDirectory() as tmp:
        sock = f"{tmp}/redis.sock"
        argv = [binary, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not Path(sock).exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.01)
            yield f"unix://{sock}"
        finally:
            proc.terminate()
            proc.wait(10)


def worker_context(redis_url: str, database_url: str, **dream: Any) -> Any:
    """A WorkerContext for `database_url` (migrated here); `send` does nothing (the caller loops)."""
    from jeffrey_worker.context import build_context

    upgrade(database_url)
    settings = Settings(
        redis=RedisSettings(REDIS_URL=redis_url, REDIS_KEY_PREFIX="harness"),
        database=DatabaseSettings(DATABASE_URL=database_url),
    )
    for name, value in dream.items():
        setattr(settings.dream, name, value)
    return build_context(settings, send=lambda *_a, **_k: None)


@dataclass
class RunResult:
    user: str
    memory_ids: list[str]
    dream_of: list[str | None]  # per memory, in input order
    seconds: float
    batch_sizes: list[int] = field(default_factory=list)
    quality: float | None = None
    batches: int = 0
    dreams: list[Dream] = field(default_factory=list)

    def labels(self) -> list[str]:
        """A cluster label per memory; each memory in no dream is its own cluster."""
        return [d or f"single-{m}" for m, d in zip(self.memory_ids, self.dream_of, strict=True)]


def add_texts(
    ctx: Any, user: str, texts: Sequence[str], created: Sequence[datetime] | None = None
) -> list[str]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = (
        list(created) if created is not None else [start + timedelta(minutes=i) for i in range(len(texts))]
    )
    with ctx.sessions() as session:
        rows = add_memories(session, user, [NewMemory(t, {}, c) for t, c in zip(texts, stamps, strict=True)])
        session.commit()
        return [r.id for r in rows]


def run_once(ctx: Any, user: str) -> tuple[float, list[int], str]:
    """One dream run for `user`, batch after batch, as the chain of Celery tasks would do it."""
    from jeffrey_worker.consolidation import consolidate_one_batch

    with ctx.sessions() as session:
        run_id = store.create_run(session, user, RunTrigger.API).id
        session.commit()
    sizes: list[int] = []
    started = time.perf_counter()
    seq: int | None = 0
    while seq is not None:
        outcome = consolidate_one_batch(ctx, run_id, seq)
        if outcome.batch_size:
            sizes.append(outcome.batch_size)
        seq = outcome.next_seq
    return time.perf_counter() - started, sizes, run_id


def annotate_all(ctx: Any) -> None:
    """What workers do within seconds of each POST: emotions and dream vectors, stored on the memory."""
    from jeffrey_worker import annotation

    while True:
        stats = annotation.sweep(ctx)
        if stats is None or not stats.more_pending:
            return


def consolidate_user(ctx: Any, user: str, texts: Sequence[str]) -> RunResult:
    ids = add_texts(ctx, user, texts)
    annotate_all(ctx)
    seconds, sizes, run_id = run_once(ctx, user)
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        assert run is not None and run.status == "succeeded", (run and run.status, run and run.error)
        dream_of = dict(
            session.execute(select(Memory.id, Memory.dream_id).where(Memory.user_id == user)).all()
        )
        dreams = list(session.scalars(select(Dream).where(Dream.user_id == user)))
        return RunResult(
            user, ids, [dream_of[i] for i in ids], seconds, sizes, run.quality, run.batches, dreams
        )
