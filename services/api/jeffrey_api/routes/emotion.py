"""POST /api/v1/emotion/detect: a worker runs the model; the API only waits for the answer, without a
thread and for at most API_RESULT_MAX_WAIT seconds (`jeffrey_api.tasks.call`)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from redis.exceptions import RedisError

from jeffrey_api.admission import admit
from jeffrey_api.deps import MemoriesPrincipalDep, SettingsDep, StateDep
from jeffrey_api.errors import unavailable
from jeffrey_api.schemas import DetectBatchOut, DetectRequest
from jeffrey_api.state import AppState
from jeffrey_api.tasks import call
from jeffrey_core.breaker import read_breaker
from jeffrey_core.contract import EMOTION_BREAKER, EmotionDetection, Queue, TaskName

router = APIRouter(prefix="/api/v1/emotion", tags=["emotion"])
BREAKER = EMOTION_BREAKER


@router.post(
    "/detect",
    response_model=EmotionDetection | DetectBatchOut,
    summary="Emotion of one text (`text`) or up to 64 (`texts`), computed by a worker",
    responses={
        502: {"description": "the worker failed to compute the answer"},
        503: {"description": "no worker, broker down or breaker open"},
        504: {"description": "no worker answered within the timeout (at most API_RESULT_MAX_WAIT)"},
    },
)
async def detect(body: DetectRequest, state: StateDep, settings: SettingsDep, _: MemoriesPrincipalDep) -> Any:
    texts = [body.text] if body.text is not None else list(body.texts or [])
    timeout = body.timeout or settings.emotion.detect_timeout
    try:
        wait = await anyio.to_thread.run_sync(_breaker_wait, state, settings.emotion.breaker_reset_seconds)
    except RedisError as exc:
        raise unavailable("broker_unavailable", "Redis is not reachable; retry later") from exc
    if wait is not None:
        raise unavailable(
            "model_unavailable", "the emotion model's circuit breaker is open; retry later", wait
        )
    await anyio.to_thread.run_sync(admit, state, Queue.EMOTION)
    report, _cached = await state.readiness.report()
    if report.workers != "up":
        raise unavailable("no_worker", "no worker is reachable to run the emotion model; retry later", 10)

    items: list[dict[str, Any]] = await call(state, TaskName.EMOTION_DETECT, timeout, texts=texts)
    detections = [EmotionDetection(**item) for item in items]
    return detections[0] if body.text is not None else DetectBatchOut(items=detections)


def _breaker_wait(state: AppState, reset_seconds: float) -> int | None:
    """Seconds until the open breaker lets a probe through, or None when a call may go ahead."""
    snapshot = read_breaker(state.redis_bytes, state.keys, BREAKER)
    return snapshot.seconds_until_probe(reset_seconds)
