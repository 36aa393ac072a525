"""Which budget each request spends, the limit settings, and the per-IP multiplier (no Redis)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jeffrey_api.rate_limit import Budget, Caller, Quota, budget_items, classify
from jeffrey_core.settings import RateLimitSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("method", "path", "budget"),
    [
        ("POST", "/api/v1/memories", Budget.WRITES),
        ("DELETE", "/api/v1/memories/abc", Budget.WRITES),
        ("POST", "/api/v1/dream/toggle", Budget.WRITES),
        ("DELETE", "/api/v1/dlq", Budget.WRITES),
        ("POST", "/api/v1/emotion/detect", Budget.DETECT),
        ("POST", "/api/v1/emotion/detect/", Budget.DETECT),
        ("POST", "/api/v1/dream/run", Budget.DREAM_RUNS),
        ("GET", "/api/v1/dream/run", Budget.READS),
        ("GET", "/api/v1/memories", Budget.READS),
        ("GET", "/api/v1/events", Budget.READS),
        ("HEAD", "/api/v1", Budget.READS),
        ("OPTIONS", "/api/v1/memories", None),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/docs", None),
        ("GET", "/openapi.json", None),
        ("POST", "/api/v10/memories", None),
    ],
)
def test_classify(method: str, path: str, budget: Budget | None) -> None:
    assert classify(method, path) == budget


def test_defaults_and_the_ip_multiplier() -> None:
    settings = RateLimitSettings()
    assert (settings.writes, settings.detect, settings.dream_runs, settings.reads) == (
        "120/minute",
        "30/minute",
        "6/hour",
        "600/minute",
    )
    items = budget_items(RateLimitSettings(RATE_LIMIT_DREAM_RUNS="6 per hour", RATE_LIMIT_IP_MULTIPLIER=3))
    per_user, per_ip = items[Budget.DREAM_RUNS, Caller.USER], items[Budget.DREAM_RUNS, Caller.IP]
    assert (per_user.amount, per_ip.amount) == (6, 18)
    assert items[Budget.DREAM_RUNS, Caller.IP].get_expiry() == 3600
    assert items[Budget.WRITES, Caller.IP].amount == 360


@pytest.mark.parametrize("value", ["lots/minute", "0/minute", "10/fortnight", "10", "1/second;5/minute"])
def test_malformed_limits_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="rate limit reads like"):
        RateLimitSettings(RATE_LIMIT_WRITES=value)


def test_quota_headers_and_message() -> None:
    quota = Quota(Budget.DETECT, Caller.IP, 30, 60, 0, 0, allowed=False)
    assert quota.headers() == {
        "RateLimit-Limit": "30",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "0",
        "RateLimit-Policy": "30;w=60",
    }
    assert quota.retry_after == 1  # never "retry in 0 s"
    assert "'detect'" in quota.message() and "this ip" in quota.message()
