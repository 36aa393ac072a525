"""One user cannot take emotion detection away from everyone (issue 11, item 3), with a real uvicorn,
a real Redis and a real prefork worker: large French batches keep the shared breaker closed, and a
detect task that fails leaves a dead letter with sizes, never the texts."""

from __future__ import annotations

import csv
import json
import random
import uuid
from pathlib import Path

import httpx
import pytest

from jeffrey_core import enqueue
from jeffrey_core.auth import mint_token
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import MAX_DETECT_TEXTS, MAX_TEXT_CHARS, TaskName
from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.settings import RedisSettings, Settings
from tests.support.processes import eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EVAL = Path(__file__).resolve().parents[1] / "data" / "emotion_fr_eval.tsv"


def french_texts(count: int, seed: int = 0) -> list[str]:
    """`count` texts of MAX_TEXT_CHARS characters of everyday French (the evaluation sentences)."""
    with EVAL.open(encoding="utf-8") as handle:
        lines = [row["text"] for row in csv.DictReader(handle, delimiter="\t")]
    rnd = random.Random(seed)
    texts = []
    for _ in range(count):
        text = ""
        while len(text) < MAX_TEXT_CHARS:
            text += rnd.choice(lines) + " "
        texts.append(text[:MAX_TEXT_CHARS])
    return texts


def test_large_french_batches_of_one_user_keep_the_shared_breaker_closed(
    redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    # Two slow calls would open it: before the lexicon was linear, each 8 x 5,000-character call
    # took about 3 s (over the 2 s floor) and a 64-text one ran past the task's soft time limit.
    env = service_env(
        redis_url, sqlite_url, EMOTION_BREAKER_FAIL_MAX="2", EMOTION_BREAKER_RESET_SECONDS="300"
    )
    worker = start_worker(env, log_dir, f"fair-{uuid.uuid4().hex[:6]}@localhost", concurrency=1)
    api, base = start_api(env, log_dir)
    try:
        url = f"{base}/api/v1/emotion/detect"

        def headers(user: str) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {mint_token(env['JEFFREY_SECRET_KEY'], user, ['memories'], 600)}"
            }

        eventually(lambda: httpx.get(f"{base}/readyz").json()["workers"] == "up", 15, "worker not seen")
        for count in (8, 8, 8, MAX_DETECT_TEXTS):
            body = {"texts": french_texts(count, seed=count), "timeout": 30}
            response = httpx.post(url, json=body, headers=headers("mallory"), timeout=40)
            assert response.status_code == 200, response.text
            assert {item["method"] for item in response.json()["items"]} == {"fr-lexicon"}
        other = httpx.post(
            url, json={"text": "Je suis tellement contente !"}, headers=headers("alice"), timeout=20
        )
        assert other.status_code == 200 and other.json()["method"] == "fr-lexicon"
        assert httpx.get(f"{base}/readyz").json()["breakers"]["emotion-model"] == "closed"
    finally:
        api.stop()
        worker.stop()


def test_a_failing_detect_task_leaves_sizes_not_texts_in_its_dead_letter(
    redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    marker = "Mon secret: la lettre que je n'ai jamais envoyée"
    too_long = (marker + " ") * (MAX_TEXT_CHARS // len(marker) + 1)  # refused by the worker: permanent
    texts = [too_long, marker]
    env = service_env(redis_url, sqlite_url)
    worker = start_worker(env, log_dir, f"dlq-{uuid.uuid4().hex[:6]}@localhost", queues="emotion")
    app = create_celery(Settings(redis=RedisSettings(REDIS_URL=redis_url)))
    dlq = DeadLetterQueue(app.backend.client, app)
    try:
        enqueue.send(app, TaskName.EMOTION_DETECT, caller=enqueue.Caller.REQUEST, texts=texts)
        enqueue.send(app, TaskName.EMOTION_DETECT, caller=enqueue.Caller.REQUEST, args=[texts])
        eventually(lambda: dlq.records()[1] == 2, 30, "the failed detect tasks were not dead-lettered")
        records, _ = dlq.records()
        sizes = {"redacted": "text", "count": 2, "chars": len(too_long) + len(marker)}
        by_shape = sorted(records, key=lambda r: bool(r["args"]))
        assert by_shape[0]["kwargs"] == {"texts": sizes} and by_shape[1]["args"] == [sizes]
        for record in records:
            assert record["task"] == TaskName.EMOTION_DETECT.value and record["error_type"] == "ValueError"
            assert record["replayable"] is False
        dumped = json.dumps(records, ensure_ascii=False)
        assert "secret" not in dumped and "envoy" not in dumped
        assert "secret" not in worker.output()  # nor in the worker's log
    finally:
        worker.stop()
        app.close()
