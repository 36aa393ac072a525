"""The memories API against a real uvicorn server, real Redis and a real SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jeffrey_core.auth import mint_token
from jeffrey_core.store.migrate import upgrade
from tests.support.processes import RedisServer, service_env, start_api

pytestmark = pytest.mark.integration
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = f"sqlite:///{tmp_path_factory.mktemp('api') / 'jeffrey.db'}"
    upgrade(db)
    process, base = start_api(service_env(redis_server.url(14), db), log_dir)
    yield base
    process.stop()


def token(user: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, list(scopes) or ['memories'], 600)}"}


@pytest.fixture
def alice(user_id: str) -> dict[str, str]:
    return token(user_id)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    error: dict[str, object] = body["error"]
    return error


def test_open_endpoints(api: str) -> None:
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{api}/metrics", follow_redirects=False)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "http_request" in metrics.text
    assert httpx.get(f"{api}/openapi.json").json()["info"]["title"]
    assert "swagger" in httpx.get(f"{api}/docs").text.lower()


def test_request_id_is_echoed_or_generated(api: str) -> None:
    assert (
        httpx.get(f"{api}/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    )
    generated = httpx.get(f"{api}/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers[
        "x-request-id"
    ]
    assert generated and " " not in generated
    assert httpx.get(f"{api}/nope").headers["x-request-id"]


def test_auth_is_required_and_checked(api: str, alice: dict[str, str]) -> None:
    url = f"{api}/api/v1/memories"
    assert_error(httpx.get(url), 401, "unauthorized")
    assert_error(httpx.get(url, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert_error(httpx.get(url, headers={"Authorization": "Bearer not-a-jwt"}), 401, "invalid_token")
    expired = mint_token(SECRET, "bob", ["memories"], 1, now=0)
    assert_error(httpx.get(url, headers={"Authorization": f"Bearer {expired}"}), 401, "token_expired")
    forged = mint_token("x" * 40, "bob", ["admin"], 60)
    assert_error(httpx.get(url, headers={"Authorization": f"Bearer {forged}"}), 401, "invalid_token")
    no_scope = {"Authorization": f"Bearer {mint_token(SECRET, 'bob', [], 60)}"}
    assert_error(httpx.get(url, headers=no_scope), 403, "forbidden")
    assert_error(httpx.post(f"{api}/api/v1/ops/echo", json={}, headers=alice), 403, "forbidden")


def test_create_read_delete_one_memory(api: str, alice: dict[str, str]) -> None:
    body = {
        "text": "Walked by the sea with Marie",
        "meta": {"place": "Brest"},
        "created_at": "2026-03-01T10:00:00+01:00",
    }
    created = httpx.post(f"{api}/api/v1/memories", json=body, headers=alice)
    assert created.status_code == 201, created.text
    memory = created.json()
    assert memory["text"] == body["text"] and memory["meta"] == {"place": "Brest"}
    assert memory["created_at"].startswith("2026-03-01T09:00:00")
    assert memory["emotion"] is None and memory["consolidated_at"] is None
    url = f"{api}/api/v1/memories/{memory['id']}"
    assert httpx.get(url, headers=alice).json() == memory
    assert httpx.delete(url, headers=alice).status_code == 204
    assert_error(httpx.get(url, headers=alice), 404, "memory_not_found")
    assert_error(httpx.delete(url, headers=alice), 404, "memory_not_found")


def test_batch_create_and_paginate(api: str, alice: dict[str, str]) -> None:
    batch = {
        "memories": [
            {"text": f"note {i}", "created_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
            for i in range(120)
        ]
    }
    created = httpx.post(f"{api}/api/v1/memories", json=batch, headers=alice)
    assert created.status_code == 201
    assert len(created.json()["items"]) == 120
    pages, cursor, seen = 0, None, []
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = httpx.get(f"{api}/api/v1/memories", params=params, headers=alice).json()
        pages += 1
        seen += [m["text"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 120 and seen[0] == "note 119" and seen[-1] == "note 0"
    limited = httpx.get(f"{api}/api/v1/memories", params={"limit": 200}, headers=alice).json()
    assert len(limited["items"]) == 120 and limited["next_cursor"] is None
    since = httpx.get(
        f"{api}/api/v1/memories", params={"since": "2026-01-01T00:01:50Z"}, headers=alice
    ).json()
    assert [m["text"] for m in since["items"]] == [f"note {i}" for i in range(119, 109, -1)]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 5001}, "text"),
        ({"text": "ok", "unknown": 1}, "unknown"),
        ({"text": "ok", "meta": "not an object"}, "meta"),
        ({"text": "ok", "created_at": "yesterday"}, "created_at"),
        ({"memories": []}, "memories"),
        ({"memories": [{"text": "ok"}] * 501}, "memories"),
        ({"memories": [{"text": "ok"}, {"text": ""}]}, "text"),
    ],
)
def test_bad_bodies_get_422_with_the_envelope(
    api: str, alice: dict[str, str], body: object, where: str
) -> None:
    error = assert_error(
        httpx.post(f"{api}/api/v1/memories", json=body, headers=alice), 422, "validation_error"
    )
    assert where in str(error["details"])


def test_malformed_json_and_bad_queries_are_422(api: str, alice: dict[str, str]) -> None:
    raw = httpx.post(
        f"{api}/api/v1/memories", content=b"{not json", headers={**alice, "content-type": "application/json"}
    )
    assert_error(raw, 422, "validation_error")
    assert_error(
        httpx.get(f"{api}/api/v1/memories", params={"limit": 201}, headers=alice), 422, "validation_error"
    )
    assert_error(
        httpx.get(f"{api}/api/v1/memories", params={"emotion": "bliss"}, headers=alice),
        422,
        "validation_error",
    )
    assert_error(
        httpx.get(f"{api}/api/v1/memories", params={"cursor": "garbage"}, headers=alice),
        422,
        "invalid_cursor",
    )
    # The POST reads user_id itself (no FastAPI parameter): the same 422 as the routes that declare it.
    admin = token("ops", "memories", "admin")
    for bad in ("", "u" * 129):
        for method in ("GET", "POST"):
            body = {"json": {"text": "x"}} if method == "POST" else {}
            error = assert_error(
                httpx.request(
                    method, f"{api}/api/v1/memories", params={"user_id": bad}, headers=admin, **body
                ),
                422,
                "validation_error",
            )
            assert [d["loc"] for d in error["details"]] == [["query", "user_id"]], error  # type: ignore[index,union-attr]
    assert_error(httpx.get(f"{api}/nope"), 404, "not_found")
    assert_error(httpx.put(f"{api}/api/v1/memories", headers=alice), 405, "method_not_allowed")


def test_users_are_isolated_and_admins_may_act_for_them(
    api: str, alice: dict[str, str], user_id: str
) -> None:
    memory = httpx.post(f"{api}/api/v1/memories", json={"text": "private"}, headers=alice).json()
    bob = token(f"bob-{uuid.uuid4().hex[:6]}")
    url = f"{api}/api/v1/memories/{memory['id']}"
    assert_error(httpx.get(url, headers=bob), 404, "memory_not_found")
    assert_error(httpx.delete(url, headers=bob), 404, "memory_not_found")
    assert httpx.get(f"{api}/api/v1/memories", headers=bob).json()["items"] == []
    assert_error(httpx.get(url, params={"user_id": user_id}, headers=bob), 403, "forbidden")
    admin = token("ops", "admin")
    assert httpx.get(url, params={"user_id": user_id}, headers=admin).json()["id"] == memory["id"]
    # Writing for another user: an admin may, a plain user may not.
    assert_error(
        httpx.post(f"{api}/api/v1/memories", params={"user_id": user_id}, json={"text": "x"}, headers=bob),
        403,
        "forbidden",
    )
    writer = token("ops", "memories", "admin")
    made = httpx.post(
        f"{api}/api/v1/memories", params={"user_id": user_id}, json={"text": "for alice"}, headers=writer
    )
    assert made.status_code == 201 and made.json()["user_id"] == user_id, made.text
    assert httpx.get(url, headers=alice).status_code == 200


def test_idempotency_key_replays_and_conflicts(api: str, alice: dict[str, str]) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"text": "said once", "meta": {"a": 1, "b": 2}}
    first = httpx.post(f"{api}/api/v1/memories", json=body, headers={**alice, **key})
    reordered = {"meta": {"b": 2, "a": 1}, "text": "said once"}
    again = httpx.post(f"{api}/api/v1/memories", json=reordered, headers={**alice, **key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert_error(
        httpx.post(f"{api}/api/v1/memories", json={"text": "something else"}, headers={**alice, **key}),
        409,
        "idempotency_key_reused",
    )
    listed = httpx.get(f"{api}/api/v1/memories", headers=alice).json()["items"]
    assert [m["text"] for m in listed] == ["said once"]
    # The key belongs to its user: another user with the same key is a separate request.
    other = httpx.post(
        f"{api}/api/v1/memories", json=body, headers={**token("carol-" + key["Idempotency-Key"]), **key}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert_error(
        httpx.post(f"{api}/api/v1/memories", json=body, headers={**alice, "Idempotency-Key": "x" * 256}),
        422,
        "invalid_idempotency_key",
    )


def test_concurrent_requests_with_one_key_store_once(api: str, alice: dict[str, str]) -> None:
    headers = {**alice, "Idempotency-Key": uuid.uuid4().hex}
    body = {"memories": [{"text": "race 1"}, {"text": "race 2"}]}
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda _: httpx.post(f"{api}/api/v1/memories", json=body, headers=headers, timeout=30),
                range(8),
            )
        )
    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1
    assert len(httpx.get(f"{api}/api/v1/memories", headers=alice).json()["items"]) == 2


def test_cors_preflight_from_an_allowed_origin(api: str) -> None:
    response = httpx.options(
        f"{api}/api/v1/memories",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    denied = httpx.options(
        f"{api}/api/v1/memories",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in denied.headers


def test_http_metrics_are_labelled_by_route_template(api: str, alice: dict[str, str]) -> None:
    """jeffrey_api.http_metrics: the instrumentator's series, handler = the matched route's template."""
    created = httpx.post(f"{api}/api/v1/memories", json={"text": "counted"}, headers=alice)
    assert created.status_code == 201
    assert httpx.get(f"{api}/api/v1/memories/{created.json()['id']}", headers=alice).status_code == 200
    assert httpx.get(f"{api}/no/such/path").status_code == 404
    httpx.get(f"{api}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{api}/metrics").text)}
    counted = {
        (s.labels["method"], s.labels["handler"], s.labels["status"])
        for s in families["http_requests"].samples
        if s.name == "http_requests_total"
    }
    assert {
        ("POST", "/api/v1/memories", "201"),
        ("GET", "/api/v1/memories/{memory_id}", "200"),
        ("GET", "none", "404"),
    } <= counted
    assert not any(handler == "/metrics" for _, handler, _ in counted)
    sizes = [s for s in families["http_request_size_bytes"].samples if s.name.endswith("_sum")]
    assert any(s.labels["handler"] == "/api/v1/memories" and s.value > 0 for s in sizes)
    names = {s.name for f in families.values() for s in f.samples}
    assert {
        "http_response_size_bytes_count",
        "http_request_duration_highr_seconds_bucket",
        "http_request_duration_seconds_bucket",
    } <= names
