"""Queue path benchmark: echo round trips through the project's Celery configuration and base task
against a bare Celery app with default settings and a no-op task, same pool, same Redis, same run.

    python -m bench.queue [--tasks 2000] [--rounds 3]

Four sides: bare Celery, the project as it runs, the project flushing its task events at every turn
of the worker's loop as stock Celery does (WORKER_EVENT_FLUSH_SECONDS=0: the worker before it
batched them), and the project with task events off (what they cost; Flower needs them, so the
project keeps them). Each: one private redis-server db, a prefork
worker with -c 2, all up for the whole run; in each of `--rounds` rounds, N / rounds tasks are sent to
each side in turn, every result awaited; tasks/s = tasks / (first send .. last result), the ratio the
mean of the rounds' ratios (interleaved, so a drifting machine moves all sides alike). Also the CPU
per task of the worker (parent + pool) and of this client, which drifts less than throughput, and
the peak RSS of the worker's processes.
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

from bench.common import (
    SECRET,
    Proc,
    children,
    cpu_seconds,
    peak_rss_mb,
    redis_server,
    wait_until,
    write_result,
)
from bench.gateway import project_env

FLAGS = ["--without-mingle", "--without-gossip", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]


def _worker(name: str, argv: list[str], env: dict[str, str], tmp: Path) -> Proc:
    proc = Proc.start(name, [sys.executable, "-m", "celery", *argv, *FLAGS], env, tmp)
    if not wait_until(lambda: len(children(proc.pid)) >= 2 or proc.popen.poll() is not None, 60, 0.1):
        proc.stop()
        raise RuntimeError(f"{name} worker did not start: {proc.output()[-2000:]}")
    return proc


def _worker_cpu(proc: Proc) -> float:
    return sum(cpu_seconds(pid) for pid in (proc.pid, *children(proc.pid)))


def _round_trips(send: Any, n: int, proc: Proc) -> dict[str, Any]:
    """n echo round trips; also the CPU they cost the worker (parent + pool) and this client, which
    drifts far less than throughput on a shared machine (the same side moved 0.2x between rounds)."""
    for result in [send(f"warm-{i}") for i in range(50)]:
        result.get(timeout=60)
    worker_before, client_before = _worker_cpu(proc), time.process_time()
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
        "worker_cpu_ms_per_task": round(1000 * (_worker_cpu(proc) - worker_before) / n, 3),
        "client_cpu_ms_per_task": round(1000 * (time.process_time() - client_before) / n, 3),
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
def project_side(
    redis_url: str, tmp: Path, events: bool = True, flush_seconds: str | None = None
) -> Iterator[tuple[Any, Proc]]:
    """The project's Celery configuration, base task and worker (`jeffrey.system.echo`): (send, worker).

    `events=False` is the same with task events off (bench/quiet_worker.py, and no task-sent event
    from the client): not how the project runs (Flower needs them), but it shows what they cost.
    `flush_seconds` overrides WORKER_EVENT_FLUSH_SECONDS for the worker."""
    from jeffrey_core import enqueue
    from jeffrey_core.celery_factory import create_celery
    from jeffrey_core.contract import TaskName
    from jeffrey_core.settings import get_settings

    env = project_env(redis_url, f"sqlite:///{tmp}/queue.db")
    env["JEFFREY_SECRET_KEY"] = SECRET
    if flush_seconds is not None:
        env["WORKER_EVENT_FLUSH_SECONDS"] = flush_seconds
    for key in ("REDIS_URL", "DATABASE_URL"):
        os.environ[key] = env[key]
    get_settings.cache_clear()
    app = create_celery(get_settings(), main="bench-client")
    hostname = f"project-{'events' if events else 'quiet'}{flush_seconds or ''}@bench"
    module, flags = ("jeffrey_worker.app", ["-E"]) if events else ("bench.quiet_worker", [])
    argv = ["-A", module, "worker", *flags, "-Q", "dream,emotion,default", "-n", hostname]
    proc = _worker(hostname, argv, env, tmp)
    if not events:
        app.conf.task_send_sent_event = False
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

    def mean(key: str) -> float:
        return round(sum(r[key] * r["tasks"] for r in rounds) / tasks, 3)

    return {
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(tasks / seconds, 1),
        "worker_cpu_ms_per_task": mean("worker_cpu_ms_per_task"),
        "client_cpu_ms_per_task": mean("client_cpu_ms_per_task"),
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
    names = ("bare", "project", "per_turn", "quiet")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        redis_server(Path(tmpdir)) as redis_url,
        bare_side(redis_url.replace("/0", "/1"), Path(tmpdir)) as bare,
        project_side(redis_url.replace("/0", "/2"), Path(tmpdir)) as project,
        project_side(redis_url.replace("/0", "/4"), Path(tmpdir), flush_seconds="0") as per_turn,
        project_side(redis_url.replace("/0", "/3"), Path(tmpdir), events=False) as quiet,
    ):
        sides = dict(zip(names, (bare, project, per_turn, quiet), strict=True))
        per_round = args.tasks // args.rounds
        for r in range(args.rounds):
            for name, (send, proc) in sides.items():
                rounds[name].append(_round_trips(send, per_round, proc))
            b = rounds["bare"][-1]
            print(
                f"round {r + 1}: bare {b['tasks_per_s']} tasks/s; "
                + "; ".join(
                    f"{name} {rounds[name][-1]['tasks_per_s']} tasks/s,"
                    f" ratio {rounds[name][-1]['tasks_per_s'] / b['tasks_per_s']:.3f}"
                    for name in names[1:]
                )
                + "; worker CPU per task "
                + " / ".join(str(rounds[name][-1]["worker_cpu_ms_per_task"]) for name in names)
                + " ms"
            )
        combined = {name: _combined(rounds[name], sides[name][1]) for name in names}
    extra = {
        name: {
            **combined[name],
            "ratio": _mean_ratio(rounds[name], rounds["bare"]),
            "cpu_ratio": _cpu_ratio(combined["bare"], combined[name]),
        }
        for name in names[1:]
    }
    print(
        f"bare {combined['bare']['tasks_per_s']} tasks/s, project {combined['project']['tasks_per_s']} tasks/s;"
        f" ratio {extra['project']['ratio']} (target >= 0.8), CPU ratio {extra['project']['cpu_ratio']};"
        f" events flushed every loop turn: ratio {extra['per_turn']['ratio']}, CPU ratio"
        f" {extra['per_turn']['cpu_ratio']}; without task events: ratio {extra['quiet']['ratio']},"
        f" CPU ratio {extra['quiet']['cpu_ratio']}"
    )
    write_result(
        "queue",
        {
            "pool": "prefork -c 2",
            "rounds": args.rounds,
            "baseline": combined["bare"],
            "project": combined["project"],
            "ratio": extra["project"]["ratio"],
            "cpu_ratio": extra["project"]["cpu_ratio"],
            "events_flushed_every_turn": extra["per_turn"],
            "without_task_events": extra["quiet"],
        },
    )


def _mean_ratio(side: list[dict[str, Any]], bare: list[dict[str, Any]]) -> float:
    ratios = [s["tasks_per_s"] / b["tasks_per_s"] for s, b in zip(side, bare, strict=True)]
    return round(sum(ratios) / len(ratios), 3)


def _cpu_ratio(bare: dict[str, Any], side: dict[str, Any]) -> float:
    """Worker + client CPU per task, bare over `side`: 1.0 means the side's envelope costs nothing more."""
    total = side["worker_cpu_ms_per_task"] + side["client_cpu_ms_per_task"]
    return round((bare["worker_cpu_ms_per_task"] + bare["client_cpu_ms_per_task"]) / total, 3)


if __name__ == "__main__":
    main()
