"""The dream read model's derived values, as status, metrics and auto-debug all read them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from jeffrey_api.auto_debug import PENALTY, Finding, Severity, _overall, _queue_finding
from jeffrey_api.dream_metrics import dream_families, queue_families
from jeffrey_api.dream_state import status_body
from jeffrey_api.read_model import DreamView, RunSummary, queue_view
from jeffrey_core.contract import Queue
from jeffrey_core.settings import AdmissionSettings
from jeffrey_core.store.models import RunStatus

pytestmark = pytest.mark.unit
FINISHED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ADMISSION = AdmissionSettings(
    QUEUE_MAX_DEPTH_DREAM=100, QUEUE_MAX_DEPTH_EMOTION=200, QUEUE_MAX_DEPTH_DEFAULT=50
)


def view(**runs: int) -> DreamView:
    success = RunSummary("r1", RunStatus.SUCCEEDED, FINISHED, FINISHED, 0.75)
    return DreamView(
        user_id=None,
        runs={RunStatus(s): n for s, n in runs.items()},
        last_run=success,
        last_success=success,
        average_quality=0.7,
        pending_memories=12,
        consolidated_memories=40,
        dreams_by_emotion={"joy": 3, "none": 1},
        run_durations=(2.0, 7.0, 400.0),
    )


def test_active_is_queued_plus_running_and_total_counts_every_status() -> None:
    v = view(queued=2, running=1, succeeded=5, failed=3)
    assert v.active_runs == 3
    assert v.total_runs == 11
    assert v.count(RunStatus.FAILED) == 3
    assert view(succeeded=1).active_runs == 0 and view().count(RunStatus.QUEUED) == 0


def test_last_success_age() -> None:
    assert view().last_success_age(FINISHED.timestamp() + 90) == 90
    empty = DreamView(None, {}, None, None, None, 0, 0, {})
    assert empty.last_success_age(0) is None


def test_saturation_is_depth_over_the_admission_limit() -> None:
    queues = queue_view(
        {Queue.DREAM: 85, Queue.EMOTION: 1, Queue.DEFAULT: 50, Queue.DEAD_LETTER: 7}, ADMISSION
    )
    assert queues[Queue.DREAM].saturation == 0.85
    assert queues[Queue.EMOTION].saturation == 0.005
    assert queues[Queue.DEFAULT].saturation == 1.0
    assert queues[Queue.DEAD_LETTER].limit is None and queues[Queue.DEAD_LETTER].saturation is None
    assert [load.queue for load in queues] == list(Queue)


def test_status_and_metrics_report_the_same_active_count() -> None:
    v = view(queued=2, running=1, succeeded=5, failed=3)
    body = status_body(v)
    assert body["runs"] == {"total": 11, "succeeded": 5, "failed": 3, "active": 3}
    assert body["last_quality"] == 0.75 and body["pending_memories"] == 12
    families = {f.name: f for f in dream_families(v)}
    assert families["jeffrey_dream_runs_active"].samples[0].value == 3
    outcomes = {s.labels["outcome"]: s.value for s in families["jeffrey_dream_runs"].samples}
    assert outcomes == {"succeeded": 5, "failed": 3}


def test_current_row_counts_are_gauges_named_as_gauges() -> None:
    families = {f.name: f for f in dream_families(view(succeeded=1))}
    assert isinstance(families["jeffrey_dreams"], GaugeMetricFamily)
    assert {s.labels["dominant_emotion"]: s.value for s in families["jeffrey_dreams"].samples} == {
        "joy": 3,
        "none": 1,
    }
    consolidated = families["jeffrey_dream_memories_consolidated"]
    assert isinstance(consolidated, GaugeMetricFamily) and consolidated.samples[0].value == 40
    # Only runs stay a counter (run rows are never deleted).
    assert isinstance(families["jeffrey_dream_runs"], CounterMetricFamily)
    histogram = {s.name: s for s in families["jeffrey_dream_run_duration_seconds"].samples}
    assert histogram["jeffrey_dream_run_duration_seconds_count"].value == 3


def test_queue_metrics_and_findings_share_the_saturation() -> None:
    queues = queue_view(
        {Queue.DREAM: 100, Queue.EMOTION: 171, Queue.DEFAULT: 0, Queue.DEAD_LETTER: 4}, ADMISSION
    )
    families = {f.name: f for f in queue_families(queues)}
    ratio = {s.labels["queue"]: s.value for s in families["jeffrey_queue_saturation_ratio"].samples}
    assert ratio == {"dream": 1.0, "emotion": 0.855, "default": 0.0}  # no limit, no ratio
    assert families["jeffrey_dream_dlq_size"].samples[0].value == 4
    severities = {
        q.value: _queue_finding(queues[q]).severity for q in (Queue.DREAM, Queue.EMOTION, Queue.DEFAULT)
    }
    assert severities == {"dream": Severity.CRITICAL, "emotion": Severity.WARNING, "default": Severity.INFO}
    assert _queue_finding(queues[Queue.EMOTION]).details["saturation"] == ratio["emotion"]


def test_every_severity_has_a_penalty_and_the_worst_wins() -> None:
    assert set(PENALTY) == set(Severity)

    def finding(severity: Severity) -> Finding:
        return Finding("x", severity, "", "none", {})

    assert _overall([finding(Severity.INFO)]) == "ok"
    assert _overall([finding(Severity.INFO), finding(Severity.WARNING)]) == "warning"
    assert _overall([finding(Severity.CRITICAL), finding(Severity.WARNING)]) == "critical"
