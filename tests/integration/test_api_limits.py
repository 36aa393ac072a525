"""Limits before work (issue 11, item 1), against real uvicorn servers on SQLite and PostgreSQL:
body size refused before authentication and parsing, authentication before the body is parsed,
bounded dates, JSON depth and text every database accepts, database errors mapped, no user text in logs.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jeffrey_core.auth import mint_token
from jeffrey_core.store.migrate import upgrade
from tests.support.processes import RedisServer, ServiceProcess, service_env, start_api

pytestmark = pytest.mark.integration
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]
MB = 1024 * 1024
SMALL_LIMIT = 100_000  # API_MAX_BODY_BYTES of the PostgreSQL server, to prove the setting is read


class Api:
    def __init__(self, process: ServiceProcess, base: str, limit: int) -> None:
        self.process = process
        self.base = base
        self.limit = limit

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
def sqlite_api(
    redis_server: RedisServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    db = f"sqlite:///{tmp_path_factory.mktemp('limits') / 'jeffrey.db'}"
    upgrade(db)
    process, base = start_api(service_env(redis_server.url(13), db), log_dir)
    yield Api(process, base, 4 * MB)
    process.stop()


@pytest.fixture(scope="module")
def postgres_api(redis_server: RedisServer, log_dir: Path, postgres_url: str) -> Iterator[Api]:
    env = service_env(redis_server.url(12), postgres_url, API_MAX_BODY_BYTES=str(SMALL_LIMIT))
    process, base = start_api(env, log_dir)
    yield Api(process, base, SMALL_LIMIT)
    process.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest) -> Api:
    """Every behaviour that touches the database is proven on both."""
    served: Api = request.getfixturevalue(f"{request.param}_api")
    return served


def auth(user: str = "", *scopes: str) -> dict[str, str]:
    user = user or f"user-{uuid.uuid4().hex[:8]}"
    token = mint_token(SECRET, user, list(scopes) or ["memories"], 600)
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


def post_raw(api: Api, path: str, raw: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    content = raw.encode() if isinstance(raw, str) else raw
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(api.url(path), content=content, headers=all_headers, timeout=60)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (chunked): the server can only count it as it streams."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


# --- body size --------------------------------------------------------------------------------------


def test_declared_oversize_body_is_413_before_authentication(api: Api) -> None:
    body = b"x" * (api.limit + 1)
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, auth()):
        error = assert_error(post_raw(api, "/api/v1/memories", body, headers), 413, "payload_too_large")
        assert str(api.limit) in error["message"]
    # Not only /api/v1: nothing parses an oversize body anywhere.
    assert_error(post_raw(api, "/healthz", body), 413, "payload_too_large")


def test_ten_megabyte_anonymous_body_is_413(sqlite_api: Api) -> None:
    response = post_raw(sqlite_api, "/api/v1/memories", b"{" * (10 * MB))
    assert_error(response, 413, "payload_too_large")


def test_streamed_oversize_body_is_counted_and_refused(api: Api) -> None:
    response = httpx.post(
        api.url("/api/v1/memories"),
        content=chunks(api.limit + 64 * 1024),
        headers={"Content-Type": "application/json", **auth()},
        timeout=60,
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def test_body_under_the_limit_is_served(postgres_api: Api) -> None:
    text = "a" * 4000
    payload = json.dumps({"memories": [{"text": text}] * 20})  # ~80 kB < 100 kB
    assert len(payload) < SMALL_LIMIT
    assert post_raw(postgres_api, "/api/v1/memories", payload, auth()).status_code == 201
    payload = json.dumps({"memories": [{"text": text}] * 30})  # ~120 kB > 100 kB
    assert_error(post_raw(postgres_api, "/api/v1/memories", payload, auth()), 413, "payload_too_large")


def test_ten_fifty_megabyte_requests_leave_rss_near_idle(sqlite_api: Api) -> None:
    pid = sqlite_api.process.pid
    for _ in range(3):  # warm up: the first requests import and allocate what any request needs
        assert httpx.get(sqlite_api.url("/readyz"), timeout=10).status_code == 200
        post_raw(sqlite_api, "/api/v1/memories", b"{bad", auth())
    idle = rss_kib(pid)
    fifty = b"[" * (50 * MB)
    peak = idle
    started = time.monotonic()
    for i in range(10):
        if i % 2:  # declared length: refused before a byte is read
            response = post_raw(sqlite_api, "/api/v1/memories", fifty, auth())
        else:  # chunked: counted as it streams, refused at the limit
            response = httpx.post(
                sqlite_api.url("/api/v1/memories"),
                content=chunks(50 * MB),
                headers={"Content-Type": "application/json", **auth()},
                timeout=120,
            )
        assert_error(response, 413, "payload_too_large")
        peak = max(peak, rss_kib(pid))
    after = rss_kib(pid)
    print(
        f"\nAPI RSS idle {idle / 1024:.1f} MiB, after ten 50 MB requests {after / 1024:.1f} MiB "
        f"(peak {peak / 1024:.1f} MiB), {time.monotonic() - started:.1f} s"
    )
    assert after - idle < 50 * 1024, (idle, after)
    assert peak - idle < 50 * 1024, (idle, peak)


# --- authentication before the body -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/memories",
        "/api/v1/emotion/detect",
        "/api/v1/dream/run",
        "/api/v1/dream/toggle",
        "/api/v1/ops/echo",
        "/api/v1/dlq/replay",
        "/api/v1/no-such-route",
    ],
)
def test_anonymous_bad_body_is_401_not_422(sqlite_api: Api, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}):
        response = post_raw(sqlite_api, path, "{bad", headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] in {"unauthorized", "invalid_token"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_authenticated_bad_body_is_still_422(sqlite_api: Api) -> None:
    assert_error(post_raw(sqlite_api, "/api/v1/memories", "{bad", auth()), 422, "validation_error")


def test_open_endpoints_and_cors_preflight_need_no_token(sqlite_api: Api) -> None:
    assert httpx.get(sqlite_api.url("/healthz")).status_code == 200
    assert httpx.get(sqlite_api.url("/openapi.json")).status_code == 200
    preflight = httpx.options(
        sqlite_api.url("/api/v1/memories"),
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"


# --- dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC: was an OverflowError, a 500
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
    ],
)
def test_out_of_range_dates_are_422(api: Api, moment: str) -> None:
    headers = auth()
    response = httpx.post(
        api.url("/api/v1/memories"), json={"text": "a day", "created_at": moment}, headers=headers
    )
    assert_error(response, 422, "validation_error")
    for param in ("since", "until"):
        response = httpx.get(api.url("/api/v1/memories"), params={param: moment}, headers=headers)
        assert_error(response, 422, "validation_error")
    forged = json.dumps({"t": moment.replace("Z", "+00:00"), "id": str(uuid.uuid4())})
    cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    response = httpx.get(api.url("/api/v1/memories"), params={"cursor": cursor}, headers=headers)
    assert_error(response, 422, "invalid_cursor")


def test_dates_at_the_bounds_are_stored_in_utc(api: Api) -> None:
    headers = auth()
    for moment, stored in [
        ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59"),
        ("9999-12-31T23:59:59+14:00", "9999-12-31T09:59:59"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00"),
    ]:
        response = httpx.post(
            api.url("/api/v1/memories"), json={"text": "edge", "created_at": moment}, headers=headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["created_at"].startswith(stored)
    page = httpx.get(
        api.url("/api/v1/memories"),
        params={"since": "1970-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z", "limit": 1},
        headers=headers,
    )
    assert page.status_code == 200, page.text
    assert page.json()["next_cursor"]
    follow = httpx.get(
        api.url("/api/v1/memories"), params={"cursor": page.json()["next_cursor"]}, headers=headers
    )
    assert follow.status_code == 200, follow.text


# --- text every database accepts, bounded JSON ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"text": "before\\u0000after"}',
        '{"text": "lone \\ud800 surrogate"}',
        '{"text": "trailing \\udfff"}',
        '{"text": "ok", "meta": {"place": "nul\\u0000"}}',
        '{"text": "ok", "meta": {"key\\u0000": 1}}',
        '{"text": "ok", "meta": {"list": ["\\ud83d"]}}',
        '{"memories": [{"text": "fine"}, {"text": "\\u0000"}]}',
    ],
)
def test_nul_and_lone_surrogates_are_422(api: Api, raw: str) -> None:
    headers = auth()
    assert_error(post_raw(api, "/api/v1/memories", raw, headers), 422, "validation_error")
    listed = httpx.get(api.url("/api/v1/memories"), headers=headers).json()
    assert listed["items"] == []  # nothing of a refused batch was stored


def test_emotion_detect_refuses_nul_before_any_worker(sqlite_api: Api) -> None:
    for raw in ('{"text": "a\\u0000b"}', '{"texts": ["ok", "\\ud800"]}'):
        assert_error(post_raw(sqlite_api, "/api/v1/emotion/detect", raw, auth()), 422, "validation_error")


def test_surrogate_pairs_and_other_control_characters_are_kept(api: Api) -> None:
    headers = auth()
    raw = '{"text": "smile \\ud83d\\ude00 tab\\there", "meta": {"e": "\\u00e9t\\u00e9"}}'
    response = post_raw(api, "/api/v1/memories", raw, headers)
    assert response.status_code == 201, response.text
    assert response.json()["text"] == "smile \U0001f600 tab\there"
    assert response.json()["meta"] == {"e": "été"}


def nested(depth: int) -> dict[str, Any]:
    """A `meta` object `depth` levels deep (the object itself is level 1)."""
    meta: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        meta = {"n": meta}
    return meta


def test_meta_depth_is_bounded(api: Api) -> None:
    headers = auth()
    ok = httpx.post(api.url("/api/v1/memories"), json={"text": "deep", "meta": nested(16)}, headers=headers)
    assert ok.status_code == 201, ok.text
    for depth in (17, 255):
        raw = '{"text": "deep", "meta": ' + json.dumps(nested(depth)) + "}"
        error = assert_error(post_raw(api, "/api/v1/memories", raw, headers), 422, "validation_error")
        assert "16 levels" in error["message"]
    lists = '{"text": "deep", "meta": {"a": ' + "[" * 300 + "]" * 300 + "}}"
    assert_error(post_raw(api, "/api/v1/memories", lists, headers), 422, "validation_error")


# --- database errors and logs -----------------------------------------------------------------------


def test_nul_that_reaches_postgresql_is_422_and_never_logged(postgres_api: Api) -> None:
    marker = f"private-{uuid.uuid4().hex}"
    admin = auth("ops", "admin")
    # Path and query strings are not covered by the body schemas: PostgreSQL refuses the NUL itself.
    for path, params in [
        (f"/api/v1/memories/{marker}%00", {}),
        ("/api/v1/memories", {"user_id": f"{marker}\x00"}),
    ]:
        response = httpx.get(postgres_api.url(path), params=params, headers=admin)
        error = assert_error(response, 422, "invalid_data")
        assert marker not in response.text
        assert "select" not in error["message"].lower()
    # A batch goes to PostgreSQL by COPY: its refusal is mapped (and hidden) as an INSERT's is.
    batch = {"memories": [{"text": "one"}, {"text": "two"}]}
    response = httpx.post(
        postgres_api.url("/api/v1/memories"), params={"user_id": f"{marker}\x00"}, json=batch, headers=admin
    )
    error = assert_error(response, 422, "invalid_data")
    assert marker not in response.text and "copy" not in error["message"].lower()
    time.sleep(0.2)
    # The access log names the path and the audit log the user an admin acted for, by design; no other
    # line may carry what the request held (SQLAlchemy's error text would show the statement's
    # parameters without hide_parameters).
    by_design = ('"jeffrey_api.access"', '"jeffrey_api.audit"')
    lines = [
        line
        for line in postgres_api.process.output().splitlines()
        if not any(logger in line for logger in by_design)
    ]
    assert any("database refused a value: DataError" in line for line in lines)
    assert not [line for line in lines if marker in line]


def test_the_api_never_answers_500_for_bad_dates_or_text_in_queries(api: Api) -> None:
    headers = auth()
    for params in (
        {"since": "9999-12-31T23:59:59-14:00"},
        {"until": "0001-01-01T00:00:00+00:01"},
        {"cursor": "!!!"},
        {"emotion": "\x00"},
    ):
        response = httpx.get(api.url("/api/v1/memories"), params=params, headers=headers)
        assert response.status_code == 422, (params, response.text)


def test_every_kind_of_memory_post_is_committed(api: Api) -> None:
    """A single memory without a key is written in autocommit (one INSERT); with a key, and a batch,
    in one transaction. Each is read back through another request, so another pooled connection."""
    user = f"commit-{uuid.uuid4().hex[:8]}"
    headers = auth(user)
    posts = [
        ({"text": "plain"}, {}),
        ({"text": "keyed"}, {"Idempotency-Key": f"k-{user}"}),
        ({"memories": [{"text": "batch one"}, {"text": "batch two"}]}, {}),
    ]
    for body, extra in posts:
        response = httpx.post(api.url("/api/v1/memories"), json=body, headers=headers | extra)
        assert response.status_code == 201, response.text
    listed = httpx.get(api.url("/api/v1/memories"), headers=headers).json()["items"]
    assert sorted(m["text"] for m in listed) == ["batch one", "batch two", "keyed", "plain"]
    replay = httpx.post(
        api.url("/api/v1/memories"),
        json={"text": "keyed"},
        headers=headers | {"Idempotency-Key": f"k-{user}"},
    )
    assert replay.headers.get("idempotent-replayed") == "true"
    assert len(httpx.get(api.url("/api/v1/memories"), headers=headers).json()["items"]) == 4
