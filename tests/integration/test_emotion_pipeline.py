"""Emotion end to end: real uvicorn, real Redis, real prefork workers running the model."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jeffrey_core.auth import mint_token
from jeffrey_dev.stack import free_port
from tests.support.processes import ServiceProcess, eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Stack:
    api: str
    worker: ServiceProcess
    metrics: str
    env: dict[str, str]

    def headers(self, user: str = "alice", *scopes: str) -> dict[str, str]:
        token = mint_token(self.env["JEFFREY_SECRET_KEY"], user, list(scopes) or ["memories"], 600)
        return {"Authorization": f"Bearer {token}"}

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.metrics, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total


def _start(
    env: dict[str, str], log_dir: Path, **extra: str
) -> tuple[ServiceProcess, str, ServiceProcess, str]:
    port = free_port()
    env = {**env, "WORKER_METRICS_PORT": str(port), "WORKER_METRICS_HOST": "127.0.0.1", **extra}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir / f"metrics-{uuid.uuid4().hex[:6]}")
    worker = start_worker(env, log_dir, f"emotion-{uuid.uuid4().hex[:6]}@localhost", concurrency=2)
    api, base = start_api(env, log_dir)
    return api, base, worker, f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
def stack(redis_url: str, sqlite_url: str, log_dir: Path) -> Iterator[Stack]:
    env = service_env(redis_url, sqlite_url)
    api, base, worker, metrics = _start(env, log_dir)
    yield Stack(base, worker, metrics, env)
    api.stop()
    worker.stop()


def test_new_memories_are_annotated_in_micro_batches(stack: Stack) -> None:
    h = stack.headers()
    api = f"{stack.api}/api/v1/memories"
    batch = [
        {"text": "I am so happy and grateful, thank you all!"},
        {"text": "I'm terrified of tomorrow's surgery."},
        {"text": "Je suis tellement heureuse de te revoir !"},
        {"text": "J'ai eu très peur, j'ai tremblé toute la nuit."},
    ]
    assert httpx.post(api, json={"memories": batch}, headers=h).status_code == 201
    for text in (
        "That was disgusting, I almost threw up.",
        "The train leaves at 9.",
        "Why would he do that?!",
    ):
        assert httpx.post(api, json={"text": text}, headers=h).status_code == 201

    def all_annotated() -> bool:
        items = httpx.get(api, headers=h).json()["items"]
        return len(items) == 7 and all(m["emotion"] for m in items)

    eventually(all_annotated, 30, "memories were not annotated")
    by_text = {m["text"]: m for m in httpx.get(api, headers=h).json()["items"]}
    joy = by_text["I am so happy and grateful, thank you all!"]
    assert (
        joy["lang"] == "en"
        and joy["emotion"]["label"] == "joy"
        and joy["emotion"]["method"] == "tfidf-logreg"
    )
    assert 0 < joy["emotion"]["confidence"] < 1 and joy["emotion"]["model_version"]
    assert by_text["I'm terrified of tomorrow's surgery."]["emotion"]["label"] == "fear"
    french = by_text["Je suis tellement heureuse de te revoir !"]
    assert (
        french["lang"] == "fr"
        and french["emotion"]["label"] == "joy"
        and french["emotion"]["method"] == "fr-lexicon"
    )
    assert httpx.get(api, params={"emotion": "fear"}, headers=h).json()["items"]

    # Micro-batches: far fewer annotation tasks than memories, and each memory counted exactly once.
    runs = len(re.findall(r"jeffrey\.emotion\.annotate_pending\[[^\]]+\] succeeded", stack.worker.output()))
    assert 1 <= runs < 7
    eventually(
        lambda: stack.metric("jeffrey_emotion_annotations_total", outcome="written") == 7, 10, "metric"
    )
    assert stack.metric("jeffrey_emotion_ml_confidence_count") >= 7


def test_detect_endpoint(stack: Stack) -> None:
    url = f"{stack.api}/api/v1/emotion/detect"
    h = stack.headers()
    eventually(lambda: httpx.get(f"{stack.api}/readyz").json()["workers"] == "up", 15, "worker not seen")
    one = httpx.post(url, json={"text": "This is the best news ever, I'm thrilled!"}, headers=h, timeout=15)
    assert one.status_code == 200, one.text
    assert one.json()["label"] == "joy" and set(one.json()["scores"]) >= {"joy", "neutral"}
    many = httpx.post(url, json={"texts": ["I hate this", "Je suis dégoûté", "ok"]}, headers=h, timeout=15)
    assert [i["lang"] for i in many.json()["items"]] == ["en", "fr", "und"]
    for body in (
        {"text": ""},
        {"texts": []},
        {"texts": ["x"] * 65},
        {"text": "a", "texts": ["b"]},
        {},
        {"text": "x" * 5001},
    ):
        bad = httpx.post(url, json=body, headers=h)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error", body
    assert httpx.post(url, json={"text": "hi"}).status_code == 401
    # The prefork children's samples are aggregated by the main process's exporter.
    eventually(
        lambda: stack.metric("jeffrey_emotion_predictions_total", label="joy") >= 1,
        10,
        "no prediction metric",
    )
    assert stack.metric("jeffrey_emotion_inference_seconds_count") >= 2
    assert stack.metric("jeffrey_emotion_breaker_state") == 0


def test_detect_without_a_worker_is_503(redis_url: str, sqlite_url: str, log_dir: Path) -> None:
    env = service_env(redis_url, sqlite_url)
    api, base = start_api(env, log_dir)
    try:
        token = mint_token(env["JEFFREY_SECRET_KEY"], "alice", ["memories"], 60)
        response = httpx.post(
            f"{base}/api/v1/emotion/detect",
            json={"text": "hello"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["error"]["code"] == "no_worker"
    finally:
        api.stop()


def test_failing_model_opens_the_breaker_and_falls_back(
    redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    env = service_env(redis_url, sqlite_url)
    faults = {
        "EMOTION_FAULT": "fail",
        "EMOTION_BREAKER_FAIL_MAX": "2",
        "EMOTION_BREAKER_RESET_SECONDS": "300",
    }
    api, base, worker, metrics = _start(env, log_dir, **faults)
    stack = Stack(base, worker, metrics, {**env, **faults})
    try:
        url = f"{base}/api/v1/emotion/detect"
        h = stack.headers()
        eventually(lambda: httpx.get(f"{base}/readyz").json()["workers"] == "up", 15, "worker not seen")
        first = httpx.post(url, json={"text": "I love it"}, headers=h, timeout=15).json()
        assert first["method"] == "fallback:model_error" and first["confidence"] <= 0.15
        second = httpx.post(url, json={"text": "I love it"}, headers=h, timeout=15).json()
        assert second["method"] == "fallback:breaker_open"
        refused = httpx.post(url, json={"text": "I love it"}, headers=h, timeout=15)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
        assert int(refused.headers["retry-after"]) > 1
        assert stack.metric("jeffrey_emotion_breaker_state") == 1
        eventually(
            lambda: httpx.get(f"{base}/readyz").json().get("breakers", {}).get("emotion-model") == "open",
            10,
            "readyz does not show the open breaker",
        )
        assert httpx.get(f"{base}/readyz").status_code == 200  # the fallback keeps serving

        # Annotation keeps going with the honest fallback instead of failing.
        memories = f"{base}/api/v1/memories"
        assert httpx.post(memories, json={"text": "What a wonderful day"}, headers=h).status_code == 201
        eventually(
            lambda: httpx.get(memories, headers=h).json()["items"][0]["emotion"] is not None,
            30,
            "no fallback",
        )
        emotion = httpx.get(memories, headers=h).json()["items"][0]["emotion"]
        assert emotion["method"] == "fallback:breaker_open" and emotion["label"] == "neutral"
        assert emotion["model_version"].startswith("fallback")
    finally:
        api.stop()
        worker.stop()
