"""Run progress events on Redis pub/sub (fire and forget: a missed event never fails a run)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

log = logging.getLogger(__name__)


def publish(client: redis.Redis, channel: str, kind: str, **fields: Any) -> None:
    event = {"type": kind, "ts": time.time(), **fields}
    try:
        client.publish(channel, json.dumps(event, default=str))
    except redis.RedisError as exc:
        log.warning("event %s not published: %s", kind, exc.__class__.__name__)
