"""Isolation matrix (issue 11, item 10): every operation of the live OpenAPI spec × every caller.

The operations come from `/openapi.json` of a real uvicorn server, so a route added later is in the
matrix without anyone listing it; what each one should answer comes from `EXPECTATIONS`, a small table
keyed by "METHOD /path". An operation of the spec missing from the table fails the test (classify it),
and so does a path parameter whose object the matrix does not know how to make.

Callers: the owner of the objects, another user, an admin, no token, a token with no scope, and a token
signed with another key. Objects are real: memories posted through the API, and a dream and its run made
by the real consolidation service (jeffrey_dev.dream_harness) on the database the server reads.
Expected: 401 without a (valid) token, 403 for a token whose scopes do not grant the route (every admin
route with a user token), 404 and not one of the owner's ids for another user's objects, 403 when a
user names another user_id, and an answer that is not an authorization refusal for the owner and the admin.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest

from jeffrey_core.auth import mint_token
from jeffrey_core.store.migrate import upgrade
from jeffrey_dev.dream_harness import consolidate_user, worker_context
from tests.support.processes import RedisServer, ServiceProcess, service_env, start_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]
METHODS = ("get", "post", "put", "patch", "delete")


class Access(Enum):
    OPEN = "open"  # no token needed (orchestrators, Prometheus)
    USER = "user"  # the 'memories' scope (or admin); objects filtered by owner
    ADMIN = "admin"  # the 'admin' scope only


@dataclass(frozen=True)
class Expect:
    access: Access
    body: dict[str, Any] | None = None  # a valid body, so the owner and the admin reach the handler
    worker: bool = False  # needs a worker (none runs here): 503/504 accepted from the owner and the admin
    stream: bool = False  # an endless text/event-stream: only the status is read
    pending: bool = False  # announced by issue 11 and not landed yet: may be absent from the spec


EXPECTATIONS: dict[str, Expect] = {
    "GET /healthz": Expect(Access.OPEN),
    "GET /readyz": Expect(Access.OPEN),
    "GET /metrics": Expect(Access.OPEN),
    "POST /api/v1/memories": Expect(Access.USER, body={"text": "isolation matrix"}),
    "GET /api/v1/memories": Expect(Access.USER),
    "GET /api/v1/memories/{memory_id}": Expect(Access.USER),
    "DELETE /api/v1/memories/{memory_id}": Expect(Access.USER),
    "POST /api/v1/emotion/detect": Expect(Access.USER, body={"text": "hello", "timeout": 0.2}, worker=True),
    "POST /api/v1/dream/run": Expect(Access.USER),
    "GET /api/v1/dream/runs/{run_id}": Expect(Access.USER),
    "GET /api/v1/dream/runs": Expect(Access.USER),
    "GET /api/v1/dream/status": Expect(Access.USER),
    "POST /api/v1/dream/toggle": Expect(Access.ADMIN, body={"enabled": True}),
    "GET /api/v1/dreams": Expect(Access.USER),
    "GET /api/v1/dreams/{dream_id}": Expect(Access.USER),
    "GET /api/v1/events": Expect(Access.USER, stream=True),
    "GET /api/v1/dlq": Expect(Access.ADMIN),
    "DELETE /api/v1/dlq": Expect(Access.ADMIN),
    "GET /api/v1/dlq/{record_id}": Expect(Access.ADMIN),
    "DELETE /api/v1/dlq/{record_id}": Expect(Access.ADMIN),
    "POST /api/v1/dlq/{record_id}/replay": Expect(Access.ADMIN),
    "POST /api/v1/dlq/replay": Expect(Access.ADMIN, body={"dry_run": True}),
    "POST /api/v1/ops/echo": Expect(Access.ADMIN, body={"message": "ping", "timeout": 0.2}, worker=True),
    "GET /api/v1/brain/auto-debug": Expect(Access.ADMIN),
    "GET /api/v1/audit": Expect(Access.ADMIN),
    "POST /api/v1/tokens/revoke": Expect(Access.ADMIN, body={"jti": "isolation-matrix-never-issued"}),
    "GET /api/v1/export": Expect(Access.USER),
    "DELETE /api/v1/users/{user_id}": Expect(Access.USER),
}

# Path parameters: the kind of object each names. Owned objects belong to the owner (a user is their
# own object: another user gets 403 or 404 for it); a dead letter belongs to no user (admin routes
# only), so a random id stands for it.
OWNED = {"memory_id": "memory", "run_id": "run", "dream_id": "dream", "user_id": "user"}
HIDDEN = {"memory": {404}, "run": {404}, "dream": {404}, "user": {403, 404}}  # another user's answer
UNOWNED = {"record_id"}
AUTH_REFUSALS = {401, 403}


@dataclass
class World:
    base: str
    spec: dict[str, Any]
    owner: str
    run_id: str
    dream_id: str
    owner_ids: set[str] = field(default_factory=set)  # every id of the owner's: never shown to another user
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    def new_memory(self) -> str:
        """A fresh memory of the owner's (a DELETE by one caller must not hide it from the next)."""
        response = httpx.post(
            f"{self.base}/api/v1/memories", json={"text": "mine alone"}, headers=self.tokens["owner"]
        )
        assert response.status_code == 201, response.text
        memory_id: str = response.json()["id"]
        self.owner_ids.add(memory_id)
        return memory_id


def bearer(user: str, scopes: list[str], secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, user, scopes, 600)}"}


@pytest.fixture(scope="module")
def world(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = RedisServer(log_dir).start()  # private: nobody else's db index to collide with
    database = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'jeffrey.db'}"
    upgrade(database)
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    texts = [f"I walked along the beach and watched the waves at sunset, day {i}" for i in range(5)]
    texts += [f"Long meeting at the office about the budget spreadsheet, week {i}" for i in range(5)]
    dreamt = consolidate_user(worker_context(redis.url(1), database), owner, texts)
    process: ServiceProcess | None = None
    try:
        process, base = start_api(service_env(redis.url(0), database), log_dir)
        spec = httpx.get(f"{base}/openapi.json").json()
        world = World(base, spec, owner, dreamt.dreams[0].run_id, dreamt.dreams[0].id)
        world.owner_ids |= {owner, world.run_id, *(d.id for d in dreamt.dreams), *dreamt.memory_ids}
        world.tokens = {
            "owner": bearer(owner, ["memories"]),
            "other": bearer(f"other-{uuid.uuid4().hex[:8]}", ["memories"]),
            "admin": bearer(f"ops-{uuid.uuid4().hex[:8]}", ["admin"]),
            "no_token": {},
            "no_scope": bearer(owner, []),  # the owner's own id, without the scope that grants the route
            "foreign_key": bearer(owner, ["admin", "memories"], "another-secret-key-0123456789abcdefgh"),
        }
        yield world
    finally:
        if process is not None:
            process.stop()
        redis.stop()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    query: tuple[str, ...]  # names of its query parameters

    @property
    def key(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def hidden_from_others(self) -> set[int] | None:
        """The statuses another user may get (the kinds of owned objects in the path), None for none."""
        kinds = [OWNED[name] for name in self.path_params if name in OWNED]
        return set.intersection(*(HIDDEN[kind] for kind in kinds)) if kinds else None


def operations(spec: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                declared = [*item.get("parameters", []), *item[method].get("parameters", [])]
                query = tuple(p["name"] for p in declared if p["in"] == "query")
                found.append(Operation(method, path, query))
    return found


def test_every_operation_of_the_spec_is_classified(world: World) -> None:
    ops = operations(world.spec)
    unknown = [op.key for op in ops if op.key not in EXPECTATIONS]
    assert not unknown, (
        f"operations the isolation matrix cannot classify; add them to EXPECTATIONS: {unknown}"
    )
    params = {p for op in ops for p in op.path_params}
    assert params <= set(OWNED) | UNOWNED, f"path parameters without an object: {params - set(OWNED)}"
    stale = set(EXPECTATIONS) - {op.key for op in ops} - {k for k, e in EXPECTATIONS.items() if e.pending}
    assert not stale, f"EXPECTATIONS names operations the API no longer has: {stale}"
    roles = len(world.tokens)
    print(f"\nisolation matrix: {len(ops)} operations x {roles} callers = {len(ops) * roles} requests")


@dataclass
class Answer:
    status: int
    text: str  # empty for a stream
    path: str  # as sent, ids filled in (an error may echo them back: they are the caller's own input)

    def shows(self, ids: set[str]) -> list[str]:
        return sorted(i for i in ids if i in self.text and i not in self.path)


def call(world: World, op: Operation, role: str, act_for: str | None = None) -> Answer:
    expect = EXPECTATIONS[op.key]
    path = op.path
    for name in op.path_params:
        path = path.replace(f"{{{name}}}", object_id(world, name, role))
    params = {"user_id": act_for} if act_for is not None and "user_id" in op.query else None
    headers = world.tokens[role]
    with httpx.Client(base_url=world.base, timeout=30) as client:
        with client.stream(
            op.method.upper(), path, params=params, headers=headers, json=expect.body
        ) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                return Answer(response.status_code, "", path)
            return Answer(response.status_code, response.read().decode(errors="replace"), path)


def object_id(world: World, name: str, role: str) -> str:
    kind = OWNED.get(name)
    if kind == "user":  # an admin erases a user of its own making, never the owner the matrix needs
        return f"erasable-{uuid.uuid4().hex[:8]}" if role == "admin" else world.owner
    if kind == "memory":
        return world.new_memory()
    if kind == "run":
        return world.run_id
    if kind == "dream":
        return world.dream_id
    return str(uuid.uuid4())  # a dead letter: nobody's, and absent


def check(world: World, role: str, op: Operation) -> list[str]:
    """What went wrong for one cell of the matrix (empty when the cell holds)."""
    expect = EXPECTATIONS[op.key]
    act_for = world.owner if role == "admin" else None  # an admin names the user it acts for
    answer = call(world, op, role, act_for)
    where = f"{role:11} {op.key}: {answer.status} {answer.text[:160]}"
    if expect.access is Access.OPEN:
        return [] if answer.status < 400 or (op.path == "/readyz" and answer.status == 503) else [where]
    if role in {"no_token", "foreign_key"}:
        return (
            [] if answer.status == 401 and code_of(answer) in {"unauthorized", "invalid_token"} else [where]
        )
    if role == "no_scope" or (expect.access is Access.ADMIN and role != "admin"):
        return [] if answer.status == 403 and code_of(answer) == "forbidden" else [where]
    if role == "other":
        return check_other(world, op, answer, where)
    return check_allowed(op, expect, answer, where)


def check_other(world: World, op: Operation, answer: Answer, where: str) -> list[str]:
    problems = []
    hidden = op.hidden_from_others()
    if hidden is not None and answer.status not in hidden:
        problems.append(f"{where} (another user's object must be {sorted(hidden)})")
    elif hidden is None and answer.status in AUTH_REFUSALS:
        problems.append(f"{where} (a user's own collection)")
    problems += check_allowed(op, EXPECTATIONS[op.key], answer, where) if answer.status >= 500 else []
    leaked = answer.shows(world.owner_ids)
    if leaked:
        problems.append(f"{where} (shows the owner's ids {leaked})")
    if "user_id" in op.query:  # naming the owner does not help either
        named = call(world, op, "other", act_for=world.owner)
        if named.status != 403 or named.shows(world.owner_ids):
            problems.append(f"other+user_id {op.key}: {named.status} {named.text[:160]}")
    return problems


def check_allowed(op: Operation, expect: Expect, answer: Answer, where: str) -> list[str]:
    """The owner on user routes, the admin everywhere: served (the handler ran)."""
    if answer.status in AUTH_REFUSALS:
        return [f"{where} (refused a caller the route grants)"]
    if op.hidden_from_others() is not None and answer.status == 404:
        return [f"{where} (the owner's object must be visible to the owner and an admin)"]
    if answer.status >= 500 and not (expect.worker and answer.status in {503, 504}):
        return [f"{where} (server error)"]
    return []


def code_of(answer: Answer) -> str | None:
    try:
        code: str = json.loads(answer.text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code


@pytest.mark.parametrize("role", ["no_token", "foreign_key", "no_scope", "other", "owner", "admin"])
def test_isolation_matrix(world: World, role: str) -> None:
    ops = [op for op in operations(world.spec) if op.key in EXPECTATIONS]
    assert ops
    problems = [problem for op in ops for problem in check(world, role, op)]
    assert not problems, "\n".join(problems)


def test_the_owner_sees_what_another_user_cannot(world: World) -> None:
    """The 404s above mean 'hidden', not 'missing': the same ids answer 200 to their owner."""
    owner = world.tokens["owner"]
    for path in (f"/api/v1/dream/runs/{world.run_id}", f"/api/v1/dreams/{world.dream_id}"):
        assert httpx.get(f"{world.base}{path}", headers=owner).status_code == 200
        hidden = httpx.get(f"{world.base}{path}", headers=world.tokens["other"])
        assert hidden.status_code == 404 and world.owner not in hidden.text
    listed = httpx.get(f"{world.base}/api/v1/dreams", headers=owner).json()["items"]
    assert world.dream_id in {d["id"] for d in listed}
