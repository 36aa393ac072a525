"""The hand-written baseline of issue 12: what a user could write in an afternoon.

FastAPI sync endpoint, a pydantic body model, PyJWT HS256 verification, `sqlite3` in WAL mode with
`executemany` + commit, a Redis `SET NX PX` debounce + `LPUSH`, returning the created rows. Served by
the same uvicorn as the project (`uvicorn bench.baseline_app:app`). Configured by BASELINE_DB,
BASELINE_REDIS_URL and BASELINE_SECRET. `GET /constant` answers a constant (the generator check).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import redis
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

DB = os.environ.get("BASELINE_DB", "/tmp/baseline.db")
SECRET = os.environ.get("BASELINE_SECRET", "baseline-secret-0123456789abcdef0123456789")
REDIS = redis.Redis.from_url(os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0"))
_local = threading.local()
app = FastAPI()


class MemoryIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)
    meta: dict[str, Any] = Field(default_factory=dict)


class BatchIn(BaseModel):
    memories: list[MemoryIn] = Field(min_length=1, max_length=500)


def _db() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=15)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS memories (id TEXT PRIMARY KEY, user_id TEXT, text TEXT,"
            " meta TEXT, created_at TEXT)"
        )
        _local.conn = conn
    return conn


def _user(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401)
    try:
        return str(jwt.decode(authorization[7:], SECRET, algorithms=["HS256"])["sub"])
    except jwt.PyJWTError as exc:
        raise HTTPException(401) from exc


def _store(user: str, items: list[MemoryIn]) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    rows = [
        {"id": uuid.uuid4().hex, "user_id": user, "text": i.text, "meta": i.meta, "created_at": now}
        for i in items
    ]
    conn = _db()
    conn.executemany(
        "INSERT INTO memories VALUES (?, ?, ?, ?, ?)",
        [(r["id"], user, r["text"], str(r["meta"]), now) for r in rows],
    )
    conn.commit()
    if REDIS.set("baseline:kick", "1", nx=True, px=1000):
        REDIS.lpush("baseline:queue", "annotate")
    return rows


@app.post("/memories", status_code=201)
def create(body: MemoryIn, authorization: str | None = Header(None)) -> dict[str, Any]:
    return _store(_user(authorization), [body])[0]


@app.post("/memories/batch", status_code=201)
def create_batch(body: BatchIn, authorization: str | None = Header(None)) -> dict[str, Any]:
    return {"items": _store(_user(authorization), body.memories)}


@app.get("/constant")
async def constant() -> dict[str, str]:
    return {"ok": "yes"}


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app answering a constant: the fastest thing uvicorn serves (the wrk capacity check)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
