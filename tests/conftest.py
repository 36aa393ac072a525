"""Shared fixtures: a private Redis, databases on SQLite and PostgreSQL, real workers and API servers.

A test that needs a service it cannot find is skipped on a laptop but FAILS under CI (CI=1),
so a broken CI machine can never turn the suite green by skipping.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from jeffrey_core.store.migrate import upgrade
from jeffrey_dev.stack import find_redis_server
from tests.support.processes import RedisServer

RUN_ID = uuid.uuid4().hex[:8]
POSTGRES_ADMIN_URL = os.environ.get(
    "JEFFREY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI requires it: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    """One private redis-server for the session (not the machine's 6379)."""
    require(find_redis_server() is not None, "redis-server is not installed")
    server = RedisServer(log_dir).start()
    yield server
    server.stop()


_db_indexes = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis db index of the private server for this test alone; flushed before and after."""
    db = next(_db_indexes)
    client = redis_server.client(db)
    client.flushdb()
    yield redis_server.url(db)
    if client.ping():
        client.flushdb()
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jeffrey.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database created for this test run on the local PostgreSQL, migrated, dropped at the end."""
    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"jeffrey_test_{RUN_ID}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any connection failure means "no PostgreSQL here"
        admin.dispose()
        require(False, f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every store test runs on both databases."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"
