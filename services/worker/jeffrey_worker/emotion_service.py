"""The emotion model as a dependency: a circuit breaker (state shared in Redis) and a fallback.

Failures and slow batches count against the breaker: slow means over EMOTION_SLOW_SECONDS plus
EMOTION_SLOW_SECONDS_PER_KCHAR per 1,000 characters of the batch's texts (judged per input size,
so one user's large but valid batch cannot open the breaker every user shares); after
EMOTION_BREAKER_FAIL_MAX in a row it opens and every call answers the fallback at once: `method`
`fallback:breaker_open`, label neutral, confidence 0.15 (French keeps its lexicon label). After
EMOTION_BREAKER_RESET_SECONDS one call is let through (half-open); success closes it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pybreaker
import redis

from jeffrey_core.breaker import build_breaker, slow_threshold
from jeffrey_core.contract import EMOTION_BREAKER
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import EmotionSettings
from jeffrey_worker.emotion.detector import EmotionDetector, fallback_result
from jeffrey_worker.emotion.model import EmotionResult
from jeffrey_worker.metrics import BREAKER_STATES, WorkerMetrics, base_method, worker_metrics

log = logging.getLogger(__name__)
BREAKER_NAME = EMOTION_BREAKER


class SlowInferenceError(Exception):
    """The model answered, but too slowly: counts as a failure, the answer is still used."""

    def __init__(self, results: list[EmotionResult], seconds: float, chars: int) -> None:
        # Sizes only: the message may be logged, and texts are the users' own words.
        super().__init__(
            f"emotion inference took {seconds:.2f}s for {len(results)} texts, {chars} characters"
        )
        self.results = results


class InjectedFaultError(RuntimeError):
    """Raised by the EMOTION_FAULT=fail test hook."""


@dataclass
class GuardedDetector:
    detect_raw: Callable[[list[str]], list[EmotionResult]]
    breaker: pybreaker.CircuitBreaker
    settings: EmotionSettings
    metrics: WorkerMetrics = field(default_factory=worker_metrics)
    clock: Callable[[], float] = time.perf_counter

    def detect(self, texts: list[str]) -> list[EmotionResult]:
        """Model results, or fallback results saying why; never raises for a model problem."""
        started = time.perf_counter()
        try:
            results = self.breaker.call(self._timed, texts)
        except SlowInferenceError as exc:
            results = exc.results
        except pybreaker.CircuitBreakerError:
            results = [fallback_result(t, "breaker_open") for t in texts]
        except Exception:
            log.exception("emotion model failed; answering with the fallback")
            results = [fallback_result(t, "model_error") for t in texts]
        metrics = self.metrics
        method = base_method(results[0].method) if results else "none"
        metrics.inference_seconds.labels(method=method).observe(time.perf_counter() - started)
        metrics.breaker_state.set(BREAKER_STATES.get(self.breaker.current_state, 1))
        return results

    def slow_after(self, texts: list[str]) -> float:
        """Seconds this batch may take before it counts as slow (grows with its characters)."""
        chars = sum(len(t) for t in texts)
        return slow_threshold(self.settings.slow_seconds, self.settings.slow_seconds_per_kchar, chars)

    def _timed(self, texts: list[str]) -> list[EmotionResult]:
        started = self.clock()
        limit = self.slow_after(texts)
        if self.settings.fault == "fail":
            raise InjectedFaultError("EMOTION_FAULT=fail")
        if self.settings.fault == "slow":
            time.sleep(limit + 0.05)
        results = self.detect_raw(texts)
        elapsed = self.clock() - started
        if elapsed > limit:
            raise SlowInferenceError(results, elapsed, sum(len(t) for t in texts))
        return results


def build_guarded_detector(
    settings: EmotionSettings, bytes_client: redis.Redis, keys: RedisKeys
) -> GuardedDetector:
    """Load the model and wrap it in the breaker shared by every worker (`bytes_client`: no decoding)."""
    detector = EmotionDetector.load()
    log.info("emotion model %s loaded in %.2fs", detector.version, detector.english.load_seconds)
    breaker = build_breaker(
        bytes_client, keys, BREAKER_NAME, settings.breaker_fail_max, settings.breaker_reset_seconds
    )
    return GuardedDetector(detector.detect, breaker, settings)


def record_predictions(metrics: WorkerMetrics, results: list[EmotionResult]) -> None:
    for result in results:
        method = base_method(result.method)
        metrics.confidence.labels(method=method).observe(result.confidence)
        metrics.predictions.labels(label=result.label, method=method).inc()
