"""The queue baseline of issue 12: a bare Celery app with default settings and a no-op task."""

from __future__ import annotations

import os

from celery import Celery

_url = os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bare", broker=_url, backend=_url)


@app.task(name="bare.noop")
def noop(message: str) -> str:
    return message
