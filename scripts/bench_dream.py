#!/usr/bin/env python3
"""Dream consolidation benchmark: N memories from K known themes (seeded), consolidated by the real engine.

    make bench-dream            # N = 1,000 and 10,000 on SQLite; prints and writes docs/dream-bench.json

First runs the annotation sweep (emotions and dream vectors, what workers store right after each
POST) and times it; then calls the same service the Celery task calls (`consolidate_one_batch`:
lock, tuner, one transaction per batch) in a loop instead of through the broker, against a
throwaway redis-server, with the batch-size tuner learning B as it goes. Reports annotation and
consolidation memories/s, the adjusted Rand index of the dreams against the known themes, run
quality, and B over time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "services" / "worker")]

from sqlalchemy import select  # noqa: E402

from jeffrey_core.store.memories import NewMemory, add_memories  # noqa: E402
from jeffrey_core.store.models import DreamRun, Memory  # noqa: E402
from jeffrey_dev.dream_harness import annotate_all, private_redis, run_once, worker_context  # noqa: E402
from jeffrey_worker.dream import synthetic  # noqa: E402


def bench(n: int, themes: int, seed: int, ctx: Any) -> dict[str, object]:
    ctx.redis.delete(ctx.keys.dream_batch_size(), ctx.keys.dream_quality_average())
    memories = synthetic.generate(n, themes=themes, seed=seed, noise=0.05)
    user = f"bench-{n}-{seed}"
    with ctx.sessions() as session:
        add_memories(session, user, [NewMemory(m.text, {"theme": m.theme}, m.created_at) for m in memories])
        session.commit()
    started = time.perf_counter()
    annotate_all(ctx)  # emotions and dream vectors, as the workers store them right after each POST
    annotation_seconds = time.perf_counter() - started
    elapsed, sizes, run_id = run_once(ctx, user)  # what the chain of Celery tasks does, batch by batch
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        assert run is not None and run.status == "succeeded"
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
            "encoder": ctx.embedder.model_name,
            "annotation_seconds": round(annotation_seconds, 2),
            "annotated_per_second": round(n / annotation_seconds, 1),
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
    with tempfile.TemporaryDirectory() as tmp, private_redis() as redis_url:
        for n in (int(s) for s in args.sizes.split(",")):
            url = args.database_url or f"sqlite:///{tmp}/bench-{n}.db"
            ctx = worker_context(redis_url, url, target_batch_seconds=args.target_seconds)
            result = bench(n, args.themes, args.seed, ctx)
            results.append(result)
            print(
                f"N={n:>6}: annotated {result['annotated_per_second']}/s, consolidated"
                f" {result['memories_per_second']:>7} memories/s  ARI {result['adjusted_rand_index']}"
                f"  quality {result['quality']:.3f}  dreams {result['dreams']}  singletons {result['singletons']}"
                f"  batches {result['batches']}  B first/last/max {result['batch_size_first_last_max']}"
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
