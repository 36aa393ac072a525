"""Scaling and memory: worker processes 1 / 2 / 4, consolidation at 1k / 10k / 100k, what saturates
first against one Redis and one PostgreSQL, and the peak RSS of every process (issue 12, items 4-5).

    python -m bench.scale [--processes 1,2,4] [--users-per-config 4] [--per-user 5000]
                          [--annotate 1000] [--sizes 1000,10000] [--big-users 10]

One private redis-server and one PostgreSQL database made for the run and dropped after it. The API
(one uvicorn process), beat and Flower run for the whole benchmark; for each worker count k a prefork
worker `-c k` is started, warmed (k concurrent small runs load the pool processes' models), then:

- consolidation: `--users-per-config` users' runs of `--per-user` annotated memories each, sent
  through the broker at once (one user's run is one batch after another, so processes work on
  different users); memories/s = all memories / (first send .. last run succeeded);
- annotation end to end: `--annotate` memories POSTed through the API in batches of 100; the API's
  kick (and beat's periodic sweep) sends the sweep to the worker; memories/s = N / (first POST ..
  last row annotated).

While each phase runs, a sampler reads Redis `INFO stats` (total_commands_processed, every 0.5 s)
and PostgreSQL `pg_stat_activity` for the run's database. Then, without the worker, consolidation is
timed with the engine called directly (`consolidate_one_batch` in a loop) at each of `--sizes`
memories for one user, and for `--big-users` users of 10,000 memories each, one after another in the
same tables (100k). Peak RSS is each process's VmHWM. Seeded data: one set of synthetic memories
(seed 7) annotated once and copied to each user. Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Proc,
    children,
    cpu_seconds,
    peak_rss_mb,
    postgres_database,
    redis_server,
    wait_until,
    write_result,
)
from bench.gateway import _mint, _serve, project_env
from bench.pipeline import _store, _texts
from bench.queue import FLAGS

BIG_USER_MEMORIES = 10_000


class Sampler:
    """Redis commands/s and PostgreSQL connections of the run's database, sampled in a thread."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        import redis
        from sqlalchemy import create_engine

        self.redis = redis.Redis.from_url(redis_url)
        self.engine = create_engine(database_url, pool_size=1)
        self.samples: list[tuple[float, int, int, int]] = []
        self.redis_cpu: list[float] = []
        self.pg_cpu: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> tuple[float, int, int, int]:
        from sqlalchemy import text

        info = self.redis.info()
        commands = int(info["total_commands_processed"])
        self.redis_cpu.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
        query = text(
            "SELECT pid, state FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for pid, _ in rows:  # CPU seconds of each backend serving the run's database
            with contextlib.suppress(OSError, IndexError, ValueError):
                self.pg_cpu.setdefault(pid, []).append(cpu_seconds(pid))
        active = sum(1 for _, state in rows if state == "active")
        return time.perf_counter(), commands, len(rows), active

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(0.5)

    def start(self) -> None:
        self.samples, self.redis_cpu, self.pg_cpu, self._stop = [], [], {}, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self, memories: int) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.samples.append(self._sample())
        s = self.samples
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(s) if b[0] > a[0]]
        commands = s[-1][1] - s[0][1]
        return {
            "redis_peak_ops_per_s": round(max(rates, default=0.0)),
            "redis_mean_ops_per_s": round(commands / max(1e-9, s[-1][0] - s[0][0])),
            "redis_commands": commands,
            "redis_commands_per_memory": round(commands / max(1, memories), 2),
            "pg_peak_connections": max(x[2] for x in s),
            "pg_peak_active": max(x[3] for x in s),
            # CPU each server spent per memory: what caps throughput once workers have their own
            # machines (one core of that server per 1000 / ms memories/s).
            "redis_cpu_ms_per_memory": round(
                1000 * (self.redis_cpu[-1] - self.redis_cpu[0]) / max(1, memories), 3
            ),
            "pg_cpu_ms_per_memory": round(
                1000 * sum(v[-1] - v[0] for v in self.pg_cpu.values()) / max(1, memories), 3
            ),
        }

    def close(self) -> None:
        self.redis.close()
        self.engine.dispose()


class Seed:
    """One user's annotated memories, read once and copied (new ids) to any number of users."""

    def __init__(self, ctx: Any, user: str) -> None:
        from sqlalchemy import select

        from jeffrey_core.store.models import Memory

        self.ctx = ctx
        self.table: Any = Memory.__table__
        with ctx.sessions() as session:
            query = select(self.table).where(self.table.c.user_id == user)
            self.rows = [dict(r._mapping) for r in session.execute(query.order_by(self.table.c.created_at))]

    def copy(self, target: str, n: int) -> None:
        from sqlalchemy import insert

        from jeffrey_core.store.models import new_id

        rows = [{**r, "id": new_id(), "user_id": target} for r in self.rows[:n]]
        with self.ctx.sessions() as session:
            for i in range(0, len(rows), 2000):
                session.execute(insert(self.table), rows[i : i + 2000])
            session.commit()


def _rss_tree(proc: Proc) -> dict[str, Any]:
    return {"parent_mb": peak_rss_mb(proc.pid), "pool_mb": [peak_rss_mb(c) for c in children(proc.pid)]}


def _worker(k: int, env: dict[str, str], tmp: Path) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", "jeffrey_worker.app", "worker", "-E"]
    argv += ["-Q", "dream,emotion,default", *FLAGS]
    argv[argv.index("-c") + 1] = str(k)
    worker = Proc.start(f"worker-c{k}", argv, env, tmp)
    if not wait_until(lambda: len(children(worker.pid)) >= k or worker.popen.poll() is not None, 90, 0.1):
        worker.stop()
        raise RuntimeError(f"worker -c {k} did not start: {worker.output()[-2000:]}")
    return worker


def _runs(ctx: Any, app: Any, users: list[str]) -> float:
    """Dream runs for `users`, all sent at once through the broker; seconds until all succeeded."""
    from sqlalchemy import func, select

    from jeffrey_core import enqueue
    from jeffrey_core.contract import TaskName
    from jeffrey_core.store import dreams as store
    from jeffrey_core.store.models import DreamRun, RunTrigger

    with ctx.sessions() as session:
        ids = [store.create_run(session, u, RunTrigger.API).id for u in users]
        session.commit()
    started = time.perf_counter()
    for run_id in ids:
        enqueue.send(
            app, TaskName.DREAM_CONSOLIDATE_BATCH, caller=enqueue.Caller.REQUEST, run_id=run_id, seq=0
        )

    def finished() -> bool:
        with ctx.sessions() as session:
            query = select(func.count()).where(
                DreamRun.id.in_(ids), DreamRun.status.in_(("succeeded", "failed"))
            )
            return bool(session.scalar(query) == len(ids))

    if not wait_until(finished, 900, 0.1):
        raise RuntimeError("dream runs did not finish through the broker within 900 s")
    seconds = time.perf_counter() - started
    with ctx.sessions() as session:
        statuses = session.scalars(select(DreamRun.status).where(DreamRun.id.in_(ids))).all()
    if set(statuses) != {"succeeded"}:
        raise RuntimeError(f"dream runs ended {statuses}")
    return seconds


def _annotate_e2e(ctx: Any, api: str, token: str, n: int, seed: int) -> float:
    """POST n memories through the API (batches of 100); seconds until every one is annotated."""
    import httpx
    from sqlalchemy import func, select

    from jeffrey_core.store.models import Memory

    texts = [m.text for m in _texts(n, seed=seed)]
    headers = {"Authorization": f"Bearer {token}"}
    with ctx.sessions() as session:
        before = session.scalar(select(func.count()).where(Memory.user_id == "bench-user")) or 0
    started = time.perf_counter()
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for i in range(0, n, 100):
            body = {"memories": [{"text": t} for t in texts[i : i + 100]]}
            response = client.post("/api/v1/memories", json=body)
            response.raise_for_status()

    def done() -> bool:
        with ctx.sessions() as session:
            where = (Memory.user_id == "bench-user", Memory.emotion_model_version.is_not(None))
            return (session.scalar(select(func.count()).where(*where)) or 0) >= before + n

    if not wait_until(done, 600, 0.1):
        raise RuntimeError("annotation through the API did not finish within 600 s")
    return time.perf_counter() - started


def bench_processes(
    k: int,
    args: argparse.Namespace,
    ctx: Any,
    seed: Seed,
    env: dict[str, str],
    tmp: Path,
    api: tuple[str, str],
) -> dict[str, Any]:
    from jeffrey_core.celery_factory import create_celery

    sampler = Sampler(env["REDIS_URL"], env["DATABASE_URL"])
    worker = _worker(k, env, tmp)
    app = create_celery(ctx.settings, main=f"bench-scale-c{k}")
    try:
        warm = [f"warm-c{k}-{i}" for i in range(k)]
        users = [f"scale-c{k}-{i}" for i in range(args.users_per_config)]
        for user in warm:
            seed.copy(user, 200)
        for user in users:
            seed.copy(user, args.per_user)
        _runs(ctx, app, warm)  # each pool process loads its models on its first run
        memories = args.users_per_config * args.per_user
        sampler.start()
        seconds = _runs(ctx, app, users)
        consolidation = {"memories": memories, "users": len(users), "seconds": round(seconds, 2)}
        consolidation |= {"memories_per_s": round(memories / seconds, 1), **sampler.stop(memories)}
        sampler.start()
        seconds = _annotate_e2e(ctx, api[0], api[1], args.annotate, seed=100 + k)
        annotation = {"memories": args.annotate, "seconds": round(seconds, 2)}
        annotation |= {"memories_per_s": round(args.annotate / seconds, 1), **sampler.stop(args.annotate)}
        print(
            f"-c {k}: consolidation {consolidation['memories_per_s']}/s, annotation API → worker"
            f" {annotation['memories_per_s']}/s, Redis peak {consolidation['redis_peak_ops_per_s']} ops/s"
        )
        return {"consolidation": consolidation, "annotation": annotation, "worker_rss": _rss_tree(worker)}
    finally:
        worker.stop()
        app.close()
        sampler.close()


def _timed_run(ctx: Any, user: str) -> dict[str, Any]:
    """One dream run for `user` with the engine called directly, timing each batch: seconds, and
    milliseconds per memory in the first and last thirds of the run (growth with the user's history)."""
    from jeffrey_core.store import dreams as store
    from jeffrey_core.store.models import RunTrigger
    from jeffrey_worker.consolidation import consolidate_one_batch

    with ctx.sessions() as session:
        run_id = store.create_run(session, user, RunTrigger.API).id
        session.commit()
    batches: list[tuple[int, float]] = []
    seq: int | None = 0
    done = 0
    while seq is not None:
        started = time.perf_counter()
        outcome = consolidate_one_batch(ctx, run_id, seq)
        processed = int(outcome.snapshot.get("memories_processed") or done)
        if processed > done:
            batches.append((processed - done, time.perf_counter() - started))
        seq, done = outcome.next_seq, processed
    third = max(1, len(batches) // 3)

    def ms_per_memory(part: list[tuple[int, float]]) -> float:
        return round(1000 * sum(t for _, t in part) / max(1, sum(n for n, _ in part)), 3)

    return {
        "seconds": round(sum(t for _, t in batches), 2),
        "batches": len(batches),
        "first_third_ms_per_memory": ms_per_memory(batches[:third]),
        "last_third_ms_per_memory": ms_per_memory(batches[-third:]),
    }


def bench_sizes(ctx: Any, seed: Seed, sizes: list[int], big_users: int) -> dict[str, Any]:
    """The engine called directly: one user at each size, then big_users × 10k one after another."""
    out: dict[str, Any] = {}
    for n in sizes:
        seed.copy(f"size-{n}", n)
        run = _timed_run(ctx, f"size-{n}")
        out[str(n)] = {"memories": n, "memories_per_s": round(n / run["seconds"], 1), **run}
        print(f"direct, {n} memories of one user: {run}")
    if big_users:
        runs = []
        for i in range(big_users):
            seed.copy(f"big-{i}", BIG_USER_MEMORIES)
            runs.append(_timed_run(ctx, f"big-{i}"))
        total, seconds = big_users * BIG_USER_MEMORIES, sum(r["seconds"] for r in runs)
        out[str(total)] = {
            "memories": total,
            "users": big_users,
            "seconds": round(seconds, 2),
            "memories_per_s": round(total / seconds, 1),
            "per_user_seconds": [r["seconds"] for r in runs],
            "per_user": runs,
        }
        print(f"direct, {total} memories over {big_users} users: {seconds:.2f} s")
    return out


def _support(env: dict[str, str], tmp: Path) -> dict[str, Proc]:
    """Beat and Flower, up for the whole benchmark (their RSS is read at the end)."""
    from jeffrey_dev.stack import free_port

    beat = [sys.executable, "-m", "celery", "-A", "jeffrey_beat.app", "beat", "--loglevel", "WARNING"]
    flower = [sys.executable, "-m", "celery", "-A", "jeffrey_worker.app", "flower"]
    flower += [f"--port={free_port()}", "--address=127.0.0.1"]
    flower_env = {**env, "FLOWER_BASIC_AUTH": "admin:bench-flower-password"}
    return {
        "beat": Proc.start("beat", beat, env, tmp),
        "flower": Proc.start("flower", flower, flower_env, tmp),
    }


def _seed(ctx: Any, n: int) -> tuple[Seed, dict[str, Any]]:
    from jeffrey_dev.dream_harness import annotate_all

    _store(ctx, "seed", _texts(n, seed=7))
    started = time.perf_counter()
    annotate_all(ctx)
    seconds = time.perf_counter() - started
    print(f"seeded and annotated {n} memories in-process: {seconds:.1f} s ({n / seconds:.0f}/s)")
    return Seed(ctx, "seed"), {"memories": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1)}


def run(args: argparse.Namespace, tmp: Path, redis_url: str, database_url: str) -> dict[str, Any]:
    from jeffrey_dev.dream_harness import worker_context

    ctx = worker_context(redis_url, database_url)
    env = project_env(redis_url, database_url)
    env["REDIS_KEY_PREFIX"] = ctx.settings.redis.key_prefix
    api, base = _serve("api", "jeffrey_api.main:app", env, tmp)
    support = _support(env, tmp)
    try:
        big = [BIG_USER_MEMORIES] if args.big_users else []
        seed, seeding = _seed(ctx, max([*big, args.per_user, *args.sizes]))
        token = _mint(env)
        processes = {
            str(k): bench_processes(k, args, ctx, seed, env, tmp, (base, token)) for k in args.processes
        }
        sizes = bench_sizes(ctx, seed, args.sizes, args.big_users)
        rss = {"api_mb": peak_rss_mb(api.pid)}
        rss |= {f"{name}_mb": peak_rss_mb(p.pid) for name, p in support.items()}
        alive = {name: p.popen.poll() is None for name, p in support.items()}
        return {"seeding": seeding, "processes": processes, "sizes": sizes, "rss": rss, "alive": alive}
    finally:
        for proc in [api, *support.values()]:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--users-per-config", type=int, default=4)
    parser.add_argument("--per-user", type=int, default=5000)
    parser.add_argument("--annotate", type=int, default=1000)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--big-users", type=int, default=10)
    parser.add_argument("--out", default="scale", help="result name: bench/results/<out>.json")
    args = parser.parse_args()
    args.processes = [int(x) for x in args.processes.split(",") if x]
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    # SIGTERM unwinds like Ctrl-C: the servers stop and the database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        redis_server(Path(tmpdir)) as redis_url,
        postgres_database() as database_url,
    ):
        if database_url is None:
            raise SystemExit("bench.scale needs PostgreSQL (BENCH_POSTGRES_URL)")
        data = run(args, Path(tmpdir), redis_url, database_url)
    data["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.out, data)


if __name__ == "__main__":
    main()
