#!/usr/bin/env python3
"""Write the three Grafana dashboards (JSON) from the panel lists below: `make dashboards`.

The JSON files are committed; edit this file, not them, and run it again.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "jeffrey-prometheus"}
OUT = Path(__file__).parent / "dashboards"
RATE = "$__rate_interval"

# (title, [(expr, legend)], unit, kind)
BRAIN = [
    ("Request rate", [(f"sum(rate(http_requests_total[{RATE}]))", "requests/s")], "reqps", "timeseries"),
    ("Error rate (5xx)", [(f'sum(rate(http_requests_total{{status=~"5.."}}[{RATE}])) or vector(0)', "5xx/s")], "reqps", "timeseries"),
    ("API latency P95", [(f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_highr_seconds_bucket[{RATE}])))", "P95")], "s", "timeseries"),
    ("Queue depth", [("max by (queue) (jeffrey_queue_depth)", "{{queue}}")], "short", "timeseries"),
    ("Workers online", [("sum(flower_worker_online)", "workers")], "short", "stat"),
    ("Dream quality (last run)", [("max(jeffrey_dream_quality)", "quality")], "percentunit", "stat"),
    ("Dead-letter queue", [("max(jeffrey_dream_dlq_size)", "dead letters")], "short", "stat"),
    ("Emotion confidence (mean)", [(f"sum(rate(jeffrey_emotion_ml_confidence_sum[{RATE}])) / sum(rate(jeffrey_emotion_ml_confidence_count[{RATE}]))", "mean confidence")], "percentunit", "timeseries"),
    ("Pending memories", [("max(jeffrey_dream_pending_memories)", "pending")], "short", "stat"),
    ("Queue saturation", [("max by (queue) (jeffrey_queue_saturation_ratio)", "{{queue}}")], "percentunit", "timeseries"),
]  # fmt: skip

SYSTEM = [
    ("Scrape targets up", [("up", "{{job}}")], "short", "timeseries"),
    ("API requests by route", [(f"sum by (handler) (rate(http_requests_total[{RATE}]))", "{{handler}}")], "reqps", "timeseries"),
    ("API latency P50 / P95 / P99", [
        (f"histogram_quantile({q}, sum by (le) (rate(http_request_duration_highr_seconds_bucket[{RATE}])))", f"P{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ], "s", "timeseries"),
    ("API responses by status", [(f"sum by (status) (rate(http_requests_total[{RATE}]))", "{{status}}")], "reqps", "timeseries"),
    ("API process memory", [('process_resident_memory_bytes{job="jeffrey-api"}', "{{instance}}")], "bytes", "timeseries"),
    ("API process CPU", [(f'rate(process_cpu_seconds_total{{job="jeffrey-api"}}[{RATE}])', "{{instance}}")], "percentunit", "timeseries"),
    ("Celery events by type (Flower)", [(f"sum by (type) (rate(flower_events_total[{RATE}]))", "{{type}}")], "ops", "timeseries"),
    ("Tasks executing per worker (Flower)", [("sum by (worker) (flower_worker_number_of_currently_executing_tasks)", "{{worker}}")], "short", "timeseries"),
    ("Task runtime P95 (Flower)", [(f"histogram_quantile(0.95, sum by (le, task) (rate(flower_task_runtime_seconds_bucket[{RATE}])))", "{{task}}")], "s", "timeseries"),
    ("Redis keys without TTL", [("max by (documented) (jeffrey_redis_keys_without_ttl)", "documented={{documented}}")], "short", "timeseries"),
    ("Emotion breaker state", [("max(jeffrey_emotion_breaker_state)", "0 closed, 1 open, 2 half-open")], "short", "stat"),
    ("Emotion inference P95", [(f"histogram_quantile(0.95, sum by (le, method) (rate(jeffrey_emotion_inference_seconds_bucket[{RATE}])))", "{{method}}")], "s", "timeseries"),
]  # fmt: skip

DREAMS = [
    # API metrics read from the database are the same on every API replica: max, not sum.
    ("Runs by outcome", [(f"max by (outcome) (increase(jeffrey_dream_runs_total[{RATE}]))", "{{outcome}}")], "short", "timeseries"),
    ("Dream quality", [("max(jeffrey_dream_quality)", "last run")], "percentunit", "timeseries"),
    ("Batch size B", [("max(jeffrey_dream_batch_size)", "B")], "short", "timeseries"),
    # Events are counted by the workers where they happen (counters, summed over workers)...
    ("Memories consolidated per hour", [("sum(increase(jeffrey_dream_memories_consolidated_total[1h]))", "memories/h")], "short", "timeseries"),
    ("New dreams by dominant emotion", [(f"sum by (dominant_emotion) (increase(jeffrey_dreams_created_total[{RATE}]))", "{{dominant_emotion}}")], "short", "timeseries"),
    # ...what exists now is a gauge read from the database (it goes down when dreams merge).
    ("Dreams by dominant emotion", [("max by (dominant_emotion) (jeffrey_dreams)", "{{dominant_emotion}}")], "short", "timeseries"),
    ("Run duration P95", [(f"histogram_quantile(0.95, sum by (le) (rate(jeffrey_dream_run_duration_seconds_bucket[{RATE}])))", "P95")], "s", "timeseries"),
    ("Batch duration P95", [(f"histogram_quantile(0.95, sum by (le) (rate(jeffrey_dream_batch_duration_seconds_bucket[{RATE}])))", "P95")], "s", "timeseries"),
    ("Emotions predicted", [(f"sum by (label) (increase(jeffrey_emotion_predictions_total[{RATE}]))", "{{label}}")], "short", "timeseries"),
    ("Last success", [("max(jeffrey_dream_last_success_timestamp_seconds) * 1000", "last success")], "dateTimeFromNow", "stat"),
    ("Pending memories", [("max(jeffrey_dream_pending_memories)", "pending")], "short", "timeseries"),
    ("Active runs", [("max(jeffrey_dream_runs_active)", "active")], "short", "stat"),
]  # fmt: skip

DASHBOARDS = [
    ("jeffrey-brain-complete", "Jeffrey Brain Complete", "The whole system at a glance", BRAIN),
    ("jeffrey-system-overview", "System Overview", "API, Redis, workers, Flower, process resources", SYSTEM),
    ("jeffrey-dream-analytics", "Dream Analytics", "DreamEngine runs, quality, batch size, emotions", DREAMS),
]


def panel(
    panel_id: int, title: str, targets: list[tuple[str, str]], unit: str, kind: str
) -> dict[str, object]:
    index = panel_id - 1
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[tuple[str, list[tuple[str, str]], str, str]]
) -> dict[str, object]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["jeffrey"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "panels": [panel(i + 1, *spec) for i, spec in enumerate(panels)],
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for uid, title, description, panels in DASHBOARDS:
        path = OUT / f"{uid}.json"
        path.write_text(
            json.dumps(dashboard(uid, title, description, panels), indent=2, ensure_ascii=False) + "\n"
        )
        print(f"wrote {path.name} ({len(panels)} panels)")


if __name__ == "__main__":
    main()
