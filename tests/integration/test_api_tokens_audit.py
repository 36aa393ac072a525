"""Token hardening and the audit log (issue 11, items 5 and 9) against a real uvicorn server, real Redis and
a real SQLite file: key rotation by `kid`, `aud`, the maximum lifetime, revocation by the API and by the
CLI, what revocation does while Redis is down, and one audit row per admin action, listed by admins only.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from jeffrey_core.auth import AUDIENCE, KeyRing, mint_token
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.store.migrate import upgrade
from jeffrey_dev.stack import free_port
from tests.support.processes import RedisServer, service_env, start_api

pytestmark = pytest.mark.integration
NEW = "Kq4Wz8Rn2Xp6Lt0Vb3Hc7Jm1Dg5Fs9Ae-new-signing-key"
OLD = "Pm7Tx1Qw5Zr9Lk3Nc6Vb0Hg4Dj8Fs2Ay-old-verify-key"
OTHER = "Zx9Cv8Bn7Mq6Wl5Ek4Rj3Th2Yg1Uf0Id-someone-elses"
MAX_TTL = 7 * 24 * 3600
RING = KeyRing.of(NEW, "k2")
OLD_RING = KeyRing.of(OLD, "k1")
REDIS_DB = 11


def _env(redis_url: str, db: str, **extra: str) -> dict[str, str]:
    return service_env(
        redis_url,
        db,
        JEFFREY_SECRET_KEY=NEW,
        JEFFREY_KEY_ID="k2",
        JEFFREY_VERIFY_KEYS=f"k1:{OLD}",
        JEFFREY_TOKEN_MAX_TTL_SECONDS=str(MAX_TTL),
        REDIS_KEY_PREFIX=f"tok{uuid.uuid4().hex[:6]}",
        **extra,
    )


class Api:
    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        self.env = env

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    db = f"sqlite:///{tmp_path_factory.mktemp('tokens') / 'jeffrey.db'}"
    upgrade(db)
    env = _env(redis_server.url(REDIS_DB), db)
    process, base = start_api(env, log_dir)
    yield Api(base, env)
    process.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth(user: str, *scopes: str, ring: KeyRing = RING, ttl: int = 600) -> dict[str, str]:
    return bearer(mint_token(ring, user, list(scopes) or ["memories"], ttl, max_ttl_seconds=MAX_TTL))


def forge(secret: str = NEW, kid: str = "k2", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "jeffrey-os", "aud": AUDIENCE, "sub": "mallory", "scopes": ["memories"]}
    body |= {"iat": now, "exp": now + 600, "jti": uuid.uuid4().hex} | claims
    return jwt.encode(body, secret, algorithm="HS256", headers={"kid": kid})


def code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    value: str = response.json()["error"]["code"]
    return value


def test_rotated_out_key_is_accepted_while_listed_and_unknown_kids_are_not(api: Api) -> None:
    memories = api.url("/api/v1/memories")
    assert httpx.get(memories, headers=auth("alice", ring=OLD_RING)).status_code == 200
    assert httpx.get(memories, headers=auth("alice")).status_code == 200
    for stranger in (KeyRing.of(OTHER, "k3"), KeyRing.of(NEW)):  # unknown kid; right key, wrong kid
        response = httpx.get(memories, headers=auth("alice", ring=stranger))
        assert code(response, 401) == "invalid_token"
        assert "kid" in response.json()["error"]["message"]
    assert code(httpx.get(memories, headers=bearer(forge(secret=OTHER, kid="k1"))), 401) == "invalid_token"


def test_audience_and_lifetime_are_checked(api: Api) -> None:
    memories = api.url("/api/v1/memories")
    assert code(httpx.get(memories, headers=bearer(forge(aud="another-api"))), 401) == "invalid_audience"
    now = int(time.time())
    too_long = forge(iat=now, exp=now + MAX_TTL + 60)
    assert code(httpx.get(memories, headers=bearer(too_long)), 401) == "token_ttl_too_long"
    assert code(httpx.get(memories, headers=bearer(forge(sub="u" * 129))), 401) == "invalid_token"
    assert httpx.get(memories, headers=bearer(forge(iat=now, exp=now + MAX_TTL))).status_code == 200


def test_revoked_token_is_refused_on_the_next_request(api: Api, redis_server: RedisServer) -> None:
    admin = auth("ops", "admin")
    token = mint_token(RING, "carol", ["memories"], 600, max_ttl_seconds=MAX_TTL)
    memories = api.url("/api/v1/memories")
    assert httpx.get(memories, headers=bearer(token)).status_code == 200
    answer = httpx.post(api.url("/api/v1/tokens/revoke"), json={"token": token}, headers=admin)
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(token, options={"verify_signature": False})
    assert answer.json() == {"jti": claims["jti"], "expires_at": claims["exp"], "revoked": True}
    refused = httpx.get(memories, headers=bearer(token))
    assert code(refused, 401) == "token_revoked"
    assert refused.headers["www-authenticate"] == "Bearer"
    # Kept until the token would have expired, not longer.
    key = RedisKeys(api.env["REDIS_KEY_PREFIX"]).revoked_token(claims["jti"])
    assert 0 < redis_server.client(REDIS_DB).ttl(key) <= 600
    # Another token of the same user is untouched.
    assert httpx.get(memories, headers=auth("carol")).status_code == 200


def test_revoke_by_jti_and_its_refusals(api: Api) -> None:
    admin, revoke = auth("ops", "admin"), api.url("/api/v1/tokens/revoke")
    token = mint_token(RING, "dave", ["admin"], 600, max_ttl_seconds=MAX_TTL)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert httpx.post(revoke, json={"jti": jti}, headers=admin).json()["revoked"] is True
    assert code(httpx.get(api.url("/api/v1/dlq"), headers=bearer(token)), 401) == "token_revoked"
    assert code(httpx.post(revoke, json={"jti": jti}, headers=auth("erin")), 403) == "forbidden"
    assert code(httpx.post(revoke, json={}, headers=admin), 422) == "validation_error"
    assert code(httpx.post(revoke, json={"token": "not-a-jwt"}, headers=admin), 422) == "invalid_token"
    expired = mint_token(RING, "dave", ["memories"], 10, now=time.time() - 3600, max_ttl_seconds=MAX_TTL)
    assert httpx.post(revoke, json={"token": expired}, headers=admin).json()["revoked"] is False


def test_cli_revokes_by_jti_and_records_it(api: Api) -> None:
    token = mint_token(RING, "frank", ["memories"], 600, max_ttl_seconds=MAX_TTL)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    argv = [sys.executable, "-m", "jeffrey_dev.cli.main", "token", "revoke", jti]
    result = subprocess.run(argv, env=api.env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert code(httpx.get(api.url("/api/v1/memories"), headers=bearer(token)), 401) == "token_revoked"
    rows = httpx.get(api.url("/api/v1/audit?actor=cli"), headers=auth("ops", "admin")).json()["items"]
    assert [(r["action"], r["target"], r["outcome"]) for r in rows] == [("token.revoke", jti, "ok")]


def test_openapi_declares_the_bearer_scheme(api: Api) -> None:
    spec = httpx.get(api.url("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"].lower() for s in schemes.values() if s["type"] == "http"] == ["bearer"]
    for path in ("/api/v1/memories", "/api/v1/audit", "/api/v1/dlq"):
        assert spec["paths"][path]["get"].get("security"), path
    assert not spec["paths"]["/healthz"]["get"].get("security")


def _audit(api: Api, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(api.url("/api/v1/audit"), params=params, headers=auth("ops", "admin"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_every_admin_action_is_audited_with_its_outcome(api: Api) -> None:
    actor = f"admin-{uuid.uuid4().hex[:6]}"
    admin = auth(actor, "admin", "memories")
    rid = {"X-Request-ID": f"req-{uuid.uuid4().hex[:8]}"}
    victim = f"user-{uuid.uuid4().hex[:6]}"
    assert httpx.post(
        api.url("/api/v1/dream/toggle"), json={"enabled": False}, headers=admin | rid
    ).is_success
    forced = httpx.post(api.url(f"/api/v1/dream/run?force=true&user_id={victim}"), headers=admin)
    assert forced.status_code == 202, forced.text
    assert httpx.post(api.url("/api/v1/dlq/nope/replay"), headers=admin).status_code == 404
    assert httpx.post(api.url("/api/v1/dlq/nope/replay?dry_run=true"), headers=admin).status_code == 404
    assert httpx.delete(api.url("/api/v1/dlq/nope"), headers=admin).status_code == 404
    assert httpx.post(api.url("/api/v1/dlq/replay"), json={"task": "x"}, headers=admin).is_success
    assert httpx.delete(api.url("/api/v1/dlq?older_than=60"), headers=admin).is_success
    assert httpx.get(api.url(f"/api/v1/memories?user_id={victim}"), headers=admin).is_success
    written = httpx.post(api.url(f"/api/v1/memories?user_id={victim}"), json={"text": "x"}, headers=admin)
    assert written.status_code == 201 and written.json()["user_id"] == victim  # the POST audits inline
    assert httpx.get(api.url(f"/api/v1/memories?user_id={actor}"), headers=admin).is_success  # itself
    assert httpx.post(api.url("/api/v1/tokens/revoke"), json={"jti": "j-" + actor}, headers=admin).is_success
    assert httpx.post(api.url("/api/v1/dream/toggle"), json={"enabled": True}, headers=admin).is_success

    rows = _audit(api, actor=actor, limit="100")
    assert all(r["at"] and r["id"] for r in rows)
    assert [(r["action"], r["outcome"]) for r in reversed(rows)] == [
        ("dream.toggle", "ok"),
        ("dream.run.forced", "ok"),  # the route's row, then the router's (acting for the victim)
        ("act_for_user", "ok"),
        ("dlq.replay", "dead_letter_not_found"),
        ("dlq.delete", "dead_letter_not_found"),
        ("dlq.replay_matching", "ok"),
        ("dlq.purge", "ok"),
        ("act_for_user", "ok"),
        ("act_for_user", "ok"),
        ("token.revoke", "ok"),
        ("dream.toggle", "ok"),
    ]
    by_action = {r["action"]: r for r in reversed(rows)}  # the latest of each
    assert rows[-1]["target"] == "disabled" and rows[-1]["request_id"] == rid["X-Request-ID"]
    assert by_action["dream.run.forced"]["target"] == victim
    assert by_action["act_for_user"]["target"] == f"{victim} (POST /api/v1/memories)"
    assert rows[3]["target"].startswith(f"{victim} (GET /api/v1/memories")
    assert by_action["dlq.replay"]["target"] == "nope"
    assert by_action["token.revoke"]["target"] == "j-" + actor
    assert [r["id"] for r in _audit(api, actor=actor, action="dream.toggle")] == [
        rows[0]["id"],
        rows[-1]["id"],
    ]


def test_audit_is_paged_admin_only_and_never_deleted(api: Api) -> None:
    actor = f"admin-{uuid.uuid4().hex[:6]}"
    admin = auth(actor, "admin")
    for enabled in (True, True, True, True, True):
        assert httpx.post(
            api.url("/api/v1/dream/toggle"), json={"enabled": enabled}, headers=admin
        ).is_success
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"actor": actor, "limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(api.url("/api/v1/audit"), params=params, headers=admin).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert code(httpx.get(api.url("/api/v1/audit"), headers=auth("eve")), 403) == "forbidden"
    assert code(httpx.get(api.url("/api/v1/audit")), 401) == "unauthorized"
    assert code(httpx.delete(api.url("/api/v1/audit"), headers=admin), 405) == "method_not_allowed"
    spec = httpx.get(api.url("/openapi.json")).json()
    assert set(spec["paths"]["/api/v1/audit"]) == {"get"}


def test_revocation_with_redis_down_fails_closed_for_admins_only(log_dir: Path, tmp_path: Path) -> None:
    """Memory writes keep working through a Redis outage (the database is the outbox), so a user token
    is served unchecked; an admin token gets a fast 503 with Retry-After instead."""
    db = f"sqlite:///{tmp_path / 'jeffrey.db'}"
    upgrade(db)
    process, base = start_api(_env(f"redis://127.0.0.1:{free_port()}/0", db), log_dir)
    try:
        user = httpx.post(
            f"{base}/api/v1/memories", json={"text": "still here"}, headers=auth("gina"), timeout=30
        )
        assert user.status_code == 201, user.text
        admin = httpx.get(f"{base}/api/v1/audit", headers=auth("ops", "admin"), timeout=30)
        assert code(admin, 503) == "revocation_unavailable"
        assert int(admin.headers["retry-after"]) > 0
        # /readyz still gives a valid admin token its details: that is when operators need them.
        ready = httpx.get(f"{base}/readyz", headers=auth("ops", "admin"), timeout=30)
        assert code(ready, 503) == "not_ready"
        assert "worker_names" in ready.json()["error"]["details"]
    finally:
        process.stop()
