"""Queue path benchmark: echo round trips through the project's Celery configuration and base task
against a bare Celery app with default settings and a no-op task, same pool, same Redis, same run.

    python -m bench.queue [--tasks 2000] [--rounds 3]

Each side: one private redis-server db, a prefork worker with -c 2, both up for the whole run; in each
of `--rounds` rounds, N / rounds tasks are sent to one side then the other, every result awaited;
tasks/s = tasks / (first send .. last result), the ratio the mean of the rounds' ratios (interleaved,
so a drifting machine moves both sides alike). Also the peak RSS of the worker's processes.
Writes bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import SECRET, Proc, children, peak_rss_mb, redis_server, wait_until, write_result
from bench.gateway import project_env

FLAGS = ["--without-mingle", "--without-gossip", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]


def _worker(name: str, argv: list[str], env: dict[str, str], tmp: Path) -> Proc:
    proc = Proc.start(name, [sys.executable, "-m", "celery", *argv, *FLAGS], env, tmp)
    if not wait_until(lambda: len(children(proc.pid)) >= 2 or proc.popen.poll() is not None, 60, 0.1):
        proc.stop()
        raise RuntimeError(f"{name} worker did not start: {proc.output()[-2000:]}")
    return proc


def _round_trips(send: Any, n: int) -> dict[str, Any]:
    for result in [send(f"warm-{i}") for i in range(50)]:
        result.get(timeout=60)
    started = time.perf_counter()
    results = [send(f"message-{i}") for i in range(n)]
    sent = time.perf_counter() - started
    for result in results:
        result.get(timeout=120)
    elapsed = time.perf_counter() - started
    return {
        "tasks": n,
        "seconds": round(elapsed, 3),
        "send_seconds": round(sent, 3),
        "tasks_per_s": round(n / elapsed, 1),
    }


def _rss(proc: Proc) -> dict[str, Any]:
    return {"parent_mb": peak_rss_mb(proc.pid), "pool_mb": [peak_rss_mb(c) for c in children(proc.pid)]}


@contextlib.contextmanager
def bare_side(redis_url: str, tmp: Path) -> Iterator[tuple[Any, Proc]]:
    """A bare Celery app (default settings, no-op task) and its worker: (send, worker)."""
    env = {**os.environ, "BARE_REDIS_URL": redis_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    os.environ["BARE_REDIS_URL"] = redis_url
    from bench.bare_celery import app, noop

    app.conf.broker_url = app.conf.result_backend = redis_url
    proc = _worker("bare-worker", ["-A", "bench.bare_celery", "worker"], env, tmp)
    try:
        yield (lambda m: noop.delay(m)), proc
    finally:
        proc.stop()
        app.close()


@contextlib.contextmanager
def project_side(redis_url: str, tmp: Path) -> Iterator[tuple[Any, Proc]]:
    """The project's Celery configuration, base task and worker (`jeffrey.system.echo`): (send, worker)."""
    from jeffrey_core import enqueue
    from jeffrey_core.celery_factory import create_celery
    from jeffrey_core.contract import TaskName
    from jeffrey_core.settings import get_settings

    env = project_env(redis_url, f"sqlite:///{tmp}/queue.db")
    env["JEFFREY_SECRET_KEY"] = SECRET
    for key in ("REDIS_URL", "DATABASE_URL"):
        os.environ[key] = env[key]
    get_settings.cache_clear()
    app = create_celery(get_settings(), main="bench-client")
    argv = ["-A", "jeffrey_worker.app", "worker", "-E", "-Q", "dream,emotion,default"]
    proc = _worker("project-worker", argv, env, tmp)
    try:

        def send(message: str) -> Any:
            return enqueue.send(app, TaskName.SYSTEM_ECHO, caller=enqueue.Caller.REQUEST, message=message)

        yield send, proc
    finally:
        proc.stop()
        app.close()


def _combined(rounds: list[dict[str, Any]], proc: Proc) -> dict[str, Any]:
    tasks = sum(r["tasks"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    return {
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(tasks / seconds, 1),
        "rounds": rounds,
        "worker_rss": _rss(proc),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare_rounds: list[dict[str, Any]] = []
    project_rounds: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        redis_server(Path(tmpdir)) as redis_url,
        bare_side(redis_url.replace("/0", "/1"), Path(tmpdir)) as (bare_send, bare_proc),
        project_side(redis_url.replace("/0", "/2"), Path(tmpdir)) as (project_send, project_proc),
    ):
        per_round = args.tasks // args.rounds
        for r in range(args.rounds):
            bare_rounds.append(_round_trips(bare_send, per_round))
            project_rounds.append(_round_trips(project_send, per_round))
            ratio = project_rounds[-1]["tasks_per_s"] / bare_rounds[-1]["tasks_per_s"]
            print(
                f"round {r + 1}: bare {bare_rounds[-1]['tasks_per_s']} tasks/s,"
                f" project {project_rounds[-1]['tasks_per_s']} tasks/s, ratio {ratio:.3f}"
            )
        bare = _combined(bare_rounds, bare_proc)
        project = _combined(project_rounds, project_proc)
    ratios = [p["tasks_per_s"] / b["tasks_per_s"] for p, b in zip(project_rounds, bare_rounds, strict=True)]
    ratio = round(sum(ratios) / len(ratios), 3)
    print(
        f"bare {bare['tasks_per_s']} tasks/s, project {project['tasks_per_s']} tasks/s; ratio {ratio} (target >= 0.8)"
    )
    write_result(
        "queue",
        {"pool": "prefork -c 2", "rounds": args.rounds, "baseline": bare, "project": project, "ratio": ratio},
    )


if __name__ == "__main__":
    main()
