#!/usr/bin/env python3
"""Dream consolidation benchmark: N memories from K known themes (seeded), consolidated by the real engine.

    make bench-dream            # N = 1,000 and 10,000 on SQLite; prints and writes docs/dream-bench.json

Calls the same service the Celery task calls (`consolidate_one_batch`: lock, tuner, one transaction
per batch) in a loop instead of through the broker, against a throwaway redis-server, with the
batch-size tuner learning B as it goes, and reports memories/s,
the adjusted Rand index of the dreams against the known themes, run quality, and B over time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "services" / "worker")]

from sqlalchemy import select  # noqa: E402

from jeffrey_core.redis_client import create_sync_redis  # noqa: E402
from jeffrey_core.redis_keys import RedisKeys  # noqa: E402
from jeffrey_core.settings import DatabaseSettings, RedisSettings, Settings  # noqa: E402
from jeffrey_core.store import dreams as store  # noqa: E402
from jeffrey_core.store.engine import create_db_engine, create_session_factory  # noqa: E402
from jeffrey_core.store.memories import NewMemory, add_memories  # noqa: E402
from jeffrey_core.store.migrate import upgrade  # noqa: E402
from jeffrey_core.store.models import DreamRun, Memory, RunTrigger  # noqa: E402
from jeffrey_dev.stack import find_redis_server  # noqa: E402
from jeffrey_worker.consolidation import consolidate_one_batch  # noqa: E402
from jeffrey_worker.context import WorkerContext  # noqa: E402
from jeffrey_worker.dream import synthetic  # noqa: E402
from jeffrey_worker.metrics import worker_metrics  # noqa: E402


@contextlib.contextmanager
def private_redis(tmp: str) -> Iterator[str]:
    """A throwaway redis-server on a Unix socket (the lock, the tuner and events live in Redis)."""
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is needed (make venv installs a fallback)")
    sock = f"{tmp}/redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(sock).exists():
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.01)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(10)


def context(redis_url: str, database_url: str, target_seconds: float) -> WorkerContext:
    settings = Settings(
        redis=RedisSettings(REDIS_URL=redis_url, REDIS_KEY_PREFIX="bench"),
        database=DatabaseSettings(DATABASE_URL=database_url),
    )
    settings.dream.target_batch_seconds = target_seconds
    return WorkerContext(
        settings=settings,
        sessions=create_session_factory(create_db_engine(settings.database)),
        redis=create_sync_redis(settings.redis),
        redis_bytes=create_sync_redis(settings.redis, decode_responses=False),
        keys=RedisKeys("bench"),
        metrics=worker_metrics(),
        send=lambda *a, **k: None,  # the loop below sends the next batch itself
    )


def bench(n: int, themes: int, seed: int, ctx: WorkerContext) -> dict[str, object]:
    upgrade(ctx.settings.database.url)
    ctx.redis.delete(ctx.keys.dream_batch_size(), ctx.keys.dream_quality_average())
    memories = synthetic.generate(n, themes=themes, seed=seed, noise=0.05)
    user = f"bench-{n}-{seed}"
    with ctx.sessions() as session:
        add_memories(session, user, [NewMemory(m.text, {"theme": m.theme}, m.created_at) for m in memories])
        run_id = store.create_run(session, user, RunTrigger.API).id
        session.commit()
    sizes: list[int] = []
    started = time.perf_counter()
    seq: int | None = 0
    while seq is not None:  # what the Celery task does: run one batch, send the next
        outcome = consolidate_one_batch(ctx, run_id, seq)
        if outcome.batch_size:
            sizes.append(outcome.batch_size)
        seq = outcome.next_seq
    elapsed = time.perf_counter() - started
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        assert run is not None and run.status == "succeeded", outcome.as_result()
        rows = session.execute(
            select(Memory.meta, Memory.dream_id, Memory.id).where(Memory.user_id == user)
        ).all()
        truth = [meta["theme"] if meta["theme"] != "noise" else f"noise-{mid}" for meta, _, mid in rows]
        predicted = [dream or f"single-{mid}" for _, dream, mid in rows]
        dreams = len({d for _, d, _ in rows if d})
        return {
            "memories": n,
            "themes": themes,
            "noise_share": 0.05,
            "seconds": round(elapsed, 2),
            "memories_per_second": round(n / elapsed, 1),
            "adjusted_rand_index": round(synthetic.adjusted_rand_index(truth, predicted), 4),
            "quality": run.quality,
            "dreams": dreams,
            "singletons": sum(1 for _, d, _ in rows if not d),
            "batches": run.batches,
            "dreams_merged_at_end": (run.timings or {}).get("dreams_merged"),
            "batch_size_first_last_max": [sizes[0], sizes[-1], max(sizes)],
            "batch_size_trace": sizes[:40],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--themes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--target-seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dream-bench.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, private_redis(tmp) as redis_url:
        for n in (int(s) for s in args.sizes.split(",")):
            url = args.database_url or f"sqlite:///{tmp}/bench-{n}.db"
            result = bench(n, args.themes, args.seed, context(redis_url, url, args.target_seconds))
            results.append(result)
            print(
                f"N={n:>6}: {result['memories_per_second']:>7} memories/s  ARI {result['adjusted_rand_index']}"
                f"  quality {result['quality']:.3f}  dreams {result['dreams']}  singletons {result['singletons']}"
                f"  batches {result['batches']}  B first/last/max {result['batch_size_first_last_max']}"
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
