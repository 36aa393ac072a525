"""GET /api/v1/brain/auto-debug: a diagnosis of the live system, each finding with severity and action."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from jeffrey_api.admission import queue_depth
from jeffrey_api.dream_state import lock_holders
from jeffrey_api.state import AppState
from jeffrey_core.contract import EMOTION_BREAKER, WORKER_QUEUES
from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import DreamRun, RunStatus

PENALTY = {"critical": 30, "warning": 10, "info": 0}
BREAKER = EMOTION_BREAKER


@dataclass
class Finding:
    check: str
    severity: str  # info | warning | critical
    summary: str
    action: str
    details: dict[str, Any]


async def diagnose(state: AppState) -> dict[str, Any]:
    findings: list[Finding] = []
    report, _ = await state.readiness.report()
    findings += _readiness(report.as_dict(cached=False))
    if report.workers == "up":
        active = await anyio.to_thread.run_sync(_active_tasks, state)
        findings.append(
            Finding(
                "workers",
                "info",
                f"{len(report.worker_names)} worker(s) online",
                "none",
                {"workers": report.worker_names, "active_tasks": active},
            )
        )
    elif report.checks["redis"]["status"] == "ok":
        findings.append(
            Finding(
                "workers",
                "critical",
                "no worker answers",
                "start a worker: celery -A jeffrey_worker.app worker -E -Q dream,emotion,default",
                {},
            )
        )
    if report.checks["redis"]["status"] == "ok":
        findings += await anyio.to_thread.run_sync(_redis_findings, state)
        findings += await _locks(state)
    if report.checks["database"]["status"] == "ok":
        findings += await anyio.to_thread.run_sync(_dream_findings, state)
    findings += _settings(state)
    score = max(0, 100 - sum(PENALTY[f.severity] for f in findings))
    worst = (
        "critical"
        if any(f.severity == "critical" for f in findings)
        else "warning"
        if any(f.severity == "warning" for f in findings)
        else "ok"
    )
    return {
        "health_score": score,
        "status": worst,
        "generated_at": time.time(),
        "findings": [asdict(f) for f in findings],
    }


def _readiness(report: dict[str, Any]) -> list[Finding]:
    out = []
    for name, check in report["checks"].items():
        if check["status"] != "ok":
            out.append(
                Finding(
                    name,
                    "critical",
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
    out: list[Finding] = []
    redis = state.sync_redis
    for queue in WORKER_QUEUES:
        depth = queue_depth(redis, queue.value)
        limit = state.settings.admission.max_depth(queue) or 1
        ratio = depth / limit
        severity = "critical" if ratio >= 1 else "warning" if ratio > 0.85 else "info"
        out.append(
            Finding(
                f"queue:{queue.value}",
                severity,
                f"{queue.value}: {depth} waiting ({ratio:.0%} of {limit})",
                "add workers or look for slow tasks" if severity != "info" else "none",
                {"depth": depth, "limit": limit, "saturation": round(ratio, 4)},
            )
        )
    records, total = DeadLetterQueue(redis, state.celery).records(limit=10_000)
    by_error = Counter(f"{r['task']}: {r['error_type']}" for r in records)
    severity = "critical" if total > 10 else "warning" if total else "info"
    out.append(
        Finding(
            "dead_letters",
            severity,
            f"{total} dead letter(s)",
            "jeffrey dlq list; fix the cause; jeffrey dlq replay" if total else "none",
            {"by_error": dict(by_error.most_common(10))},
        )
    )
    breaker = str(redis.get(state.keys.breaker_state(BREAKER)) or "closed")
    out.append(
        Finding(
            "breaker:emotion-model",
            "critical" if breaker == "open" else "warning" if breaker == "half-open" else "info",
            f"emotion model breaker {breaker}",
            "check the worker logs for model errors" if breaker != "closed" else "none",
            {"state": breaker},
        )
    )
    memory = redis.info("memory")
    used, maximum = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    near_full = bool(maximum) and used / maximum > 0.85
    out.append(
        Finding(
            "redis:memory",
            "warning" if near_full else "info",
            f"Redis uses {used / 1e6:.1f} MB" + (f" of {maximum / 1e6:.0f} MB" if maximum else ""),
            "raise maxmemory or purge old results" if near_full else "none",
            {"used_bytes": used, "maxmemory_bytes": maximum},
        )
    )
    hygiene = redis.get(state.keys.redis_hygiene())
    if hygiene:
        report = json.loads(hygiene)
        bad = int(report["undocumented"])
        out.append(
            Finding(
                "redis:keys_without_ttl",
                "warning" if bad else "info",
                f"{bad} undocumented key(s) without TTL ({report['documented']} documented)",
                "give those keys a TTL or document their owner in RedisKeys" if bad else "none",
                report,
            )
        )
    return out


async def _locks(state: AppState) -> list[Finding]:
    holders = await lock_holders(state)

    def stale() -> list[str]:
        with state.sessions() as session:
            return [
                user
                for user, run_id in holders.items()
                if (run := session.get(DreamRun, run_id)) is None or run.status in store.FINISHED
            ]

    stuck = await anyio.to_thread.run_sync(stale)
    severity = "warning" if stuck else "info"
    return [
        Finding(
            "dream:locks",
            severity,
            f"{len(holders)} dream lock(s) held, {len(stuck)} by finished runs",
            "they expire by themselves within 90 s; if they persist, check the workers" if stuck else "none",
            {"holders": holders, "stale": stuck},
        )
    ]


def _dream_findings(state: AppState) -> list[Finding]:
    with state.sessions() as session:
        last = store.last_run(session)
        success = store.last_run(session, status=RunStatus.SUCCEEDED)
        pending = store.count_pending(session)
    age = (
        None
        if success is None or success.finished_at is None
        else time.time() - success.finished_at.timestamp()
    )
    overdue = pending >= state.settings.dream.min_pending and (age is None or age > 86400)
    return [
        Finding(
            "dream:last_success",
            "warning" if overdue else "info",
            "no successful dream run in 24 h" if overdue else "dreaming is on schedule",
            "check the toggle and beat (GET /api/v1/dream/status)" if overdue else "none",
            {
                "last_run": last.id if last else None,
                "last_run_status": last.status if last else None,
                "last_success_age_seconds": age,
                "pending_memories": pending,
            },
        )
    ]


def _settings(state: AppState) -> list[Finding]:
    s = state.settings
    out = [
        Finding(
            "settings:time_limits",
            "info",
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
                "settings:mode", "warning", "SECURITY_MODE=dev", "run production with SECURITY_MODE=prod", {}
            )
        )
    return out
