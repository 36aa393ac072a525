"""GET /api/v1/brain/auto-debug: a diagnosis of the live system, each finding with severity and action."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import anyio

from jeffrey_api.dream_state import lock_holders, read_view
from jeffrey_api.read_model import SATURATION_WARNING, QueueLoad, read_hygiene, read_queue_view
from jeffrey_api.state import AppState
from jeffrey_core.breaker import read_breaker
from jeffrey_core.contract import EMOTION_BREAKER, WORKER_QUEUES
from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.store.models import DreamRun, RunStatus

BREAKER = EMOTION_BREAKER


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# Health score: 100 minus these, per finding.
PENALTY = {Severity.CRITICAL: 30, Severity.WARNING: 10, Severity.INFO: 0}


@dataclass
class Finding:
    check: str
    severity: Severity
    summary: str
    action: str
    details: dict[str, Any]


async def diagnose(state: AppState) -> dict[str, Any]:
    findings: list[Finding] = []
    report, _ = await state.readiness.report()
    findings += _readiness(report.as_dict(cached=False))
    redis_ok = report.checks["redis"]["status"] == "ok"
    if report.workers == "up":
        active = await anyio.to_thread.run_sync(_active_tasks, state)
        findings.append(
            Finding(
                "workers",
                Severity.INFO,
                f"{len(report.worker_names)} worker(s) online",
                "none",
                {"workers": report.worker_names, "active_tasks": active},
            )
        )
    elif redis_ok:
        findings.append(
            Finding(
                "workers",
                Severity.CRITICAL,
                "no worker answers",
                "start a worker: celery -A jeffrey_worker.app worker -E -Q dream,emotion,default",
                {},
            )
        )
    if redis_ok:
        findings += await anyio.to_thread.run_sync(_redis_findings, state)
        findings += await _locks(state)
    if report.checks["database"]["status"] == "ok":
        findings += await anyio.to_thread.run_sync(_dream_findings, state)
    findings += _settings(state)
    return {
        "health_score": max(0, 100 - sum(PENALTY[f.severity] for f in findings)),
        "status": _overall(findings),
        "generated_at": time.time(),
        "findings": [asdict(f) for f in findings],
    }


def _overall(findings: list[Finding]) -> str:
    severities = {f.severity for f in findings}
    for worst in (Severity.CRITICAL, Severity.WARNING):
        if worst in severities:
            return worst.value
    return "ok"


def _readiness(report: dict[str, Any]) -> list[Finding]:
    out = []
    for name, check in report["checks"].items():
        if check["status"] != "ok":
            out.append(
                Finding(
                    name,
                    Severity.CRITICAL,
                    f"{name} is unreachable: {check.get('error')}",
                    f"restore {name}; /readyz fails until then",
                    check,
                )
            )
    return out


def _active_tasks(state: AppState) -> dict[str, int]:
    replies = state.celery.control.inspect(timeout=state.settings.api.worker_ping_timeout).active() or {}
    return {worker: len(tasks) for worker, tasks in replies.items()}


def _redis_findings(state: AppState) -> list[Finding]:
    redis = state.sync_redis
    queues = read_queue_view(redis, state.settings.admission, WORKER_QUEUES)
    return [
        *(_queue_finding(load) for load in queues if load.limit),
        _dead_letter_finding(state),
        _breaker_finding(state),
        _memory_finding(redis.info("memory")),
        *_hygiene_findings(state),
    ]


def _queue_finding(load: QueueLoad) -> Finding:
    ratio = load.saturation or 0.0
    severity = (
        Severity.CRITICAL if ratio >= 1 else Severity.WARNING if ratio > SATURATION_WARNING else Severity.INFO
    )
    name = load.queue.value
    return Finding(
        f"queue:{name}",
        severity,
        f"{name}: {load.depth} waiting ({ratio:.0%} of {load.limit})",
        "add workers or look for slow tasks" if severity != Severity.INFO else "none",
        {"depth": load.depth, "limit": load.limit, "saturation": ratio},
    )


def _dead_letter_finding(state: AppState) -> Finding:
    records, total = DeadLetterQueue(state.sync_redis, state.celery).records(limit=10_000)
    by_error = Counter(f"{r['task']}: {r['error_type']}" for r in records)
    return Finding(
        "dead_letters",
        Severity.CRITICAL if total > 10 else Severity.WARNING if total else Severity.INFO,
        f"{total} dead letter(s)",
        "jeffrey dlq list; fix the cause; jeffrey dlq replay" if total else "none",
        {"by_error": dict(by_error.most_common(10))},
    )


def _breaker_finding(state: AppState) -> Finding:
    snapshot = read_breaker(state.redis_bytes, state.keys, BREAKER)
    wait = snapshot.seconds_until_probe(state.settings.emotion.breaker_reset_seconds)
    severities = {"open": Severity.CRITICAL, "half-open": Severity.WARNING}
    return Finding(
        f"breaker:{BREAKER}",
        severities.get(snapshot.state, Severity.INFO),
        f"emotion model breaker {snapshot.state}",
        "check the worker logs for model errors" if snapshot.state != "closed" else "none",
        {"state": snapshot.state, "opened_at": snapshot.opened_at, "seconds_until_probe": wait},
    )


def _memory_finding(memory: dict[str, Any]) -> Finding:
    used, maximum = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    near_full = bool(maximum) and used / maximum > 0.85
    return Finding(
        "redis:memory",
        Severity.WARNING if near_full else Severity.INFO,
        f"Redis uses {used / 1e6:.1f} MB" + (f" of {maximum / 1e6:.0f} MB" if maximum else ""),
        "raise maxmemory or purge old results" if near_full else "none",
        {"used_bytes": used, "maxmemory_bytes": maximum},
    )


def _hygiene_findings(state: AppState) -> list[Finding]:
    report = read_hygiene(state.sync_redis, state.keys)
    if report is None:
        return []
    bad = report.undocumented
    return [
        Finding(
            "redis:keys_without_ttl",
            Severity.WARNING if bad else Severity.INFO,
            f"{bad} undocumented key(s) without TTL ({report.documented} documented)",
            "give those keys a TTL or document their owner in RedisKeys" if bad else "none",
            asdict(report),
        )
    ]


async def _locks(state: AppState) -> list[Finding]:
    holders = await lock_holders(state)

    def stale() -> list[str]:
        with state.sessions() as session:
            return [
                user
                for user, run_id in holders.items()
                if (run := session.get(DreamRun, run_id)) is None or RunStatus(run.status).finished
            ]

    stuck = await anyio.to_thread.run_sync(stale)
    return [
        Finding(
            "dream:locks",
            Severity.WARNING if stuck else Severity.INFO,
            f"{len(holders)} dream lock(s) held, {len(stuck)} by finished runs",
            "they expire by themselves within 90 s; if they persist, check the workers" if stuck else "none",
            {"holders": holders, "stale": stuck},
        )
    ]


def _dream_findings(state: AppState) -> list[Finding]:
    view = read_view(state, None)
    age = view.last_success_age(time.time())
    overdue = view.pending_memories >= state.settings.dream.min_pending and (age is None or age > 86400)
    return [
        Finding(
            "dream:last_success",
            Severity.WARNING if overdue else Severity.INFO,
            "no successful dream run in 24 h" if overdue else "dreaming is on schedule",
            "check the toggle and beat (GET /api/v1/dream/status)" if overdue else "none",
            {
                "last_run": view.last_run.id if view.last_run else None,
                "last_run_status": view.last_run.status if view.last_run else None,
                "last_success_age_seconds": age,
                "pending_memories": view.pending_memories,
                "active_runs": view.active_runs,
            },
        )
    ]


def _settings(state: AppState) -> list[Finding]:
    s = state.settings
    out = [
        Finding(
            "settings:time_limits",
            Severity.INFO,
            f"visibility timeout {s.celery.visibility_timeout}s > hard limit {s.celery.task_time_limit}s",
            "none",
            {
                "visibility_timeout": s.celery.visibility_timeout,
                "soft": s.celery.task_soft_time_limit,
                "hard": s.celery.task_time_limit,
            },
        )
    ]
    if not s.is_prod:
        out.append(
            Finding(
                "settings:mode",
                Severity.WARNING,
                "SECURITY_MODE=dev",
                "run production with SECURITY_MODE=prod",
                {},
            )
        )
    return out
