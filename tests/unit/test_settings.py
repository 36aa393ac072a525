"""Settings: defaults, URL handling and the production guard."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from jeffrey_core.settings import (
    CelerySettings,
    DatabaseSettings,
    RedisSettings,
    SecuritySettings,
    Settings,
    weak_secret_reason,
    with_password,
)

pytestmark = pytest.mark.unit

STRONG = "k" * 20 + "Q9x!" + "z" * 20


def test_password_is_put_into_a_url_that_has_none() -> None:
    assert with_password("redis://redis:6379/0", "p@ss") == "redis://:p%40ss@redis:6379/0"
    assert with_password("redis://:own@redis:6379/0", "other") == "redis://:own@redis:6379/0"
    assert with_password("redis://redis:6379/0", None) == "redis://redis:6379/0"


def test_redis_dsn_uses_redis_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("REDIS_PASSWORD", "sekrit")
    assert RedisSettings().dsn() == "redis://:sekrit@cache:6379/2"


def test_postgres_urls_get_the_psycopg_driver() -> None:
    assert DatabaseSettings(DATABASE_URL="postgresql://u:p@db/j").url == "postgresql+psycopg://u:p@db/j"
    assert DatabaseSettings(DATABASE_URL="sqlite:///var/x.db").url == "sqlite:///var/x.db"


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example.org, https://b.example.org")
    assert SecuritySettings().cors_origins == ["https://a.example.org", "https://b.example.org"]


def test_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    with pytest.raises(ValidationError, match="CELERY_VISIBILITY_TIMEOUT"):
        CelerySettings(CELERY_TASK_TIME_LIMIT=60, CELERY_VISIBILITY_TIMEOUT=60)
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT"):
        CelerySettings(CELERY_TASK_SOFT_TIME_LIMIT=60, CELERY_TASK_TIME_LIMIT=60)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is missing"),
        ("", "is missing"),
        ("changethis-changethis-changethis-changethis", "is a placeholder"),
        ("your_secret_key_here_your_secret_key_here", "is a placeholder"),
        ("Jeffrey-is-safe-since-2025-really-really-long", "is a placeholder"),
        ("short-but-random-Q9x", "is shorter than 32 characters"),
        (STRONG, None),
    ],
)
def test_weak_secrets_are_named(value: str | None, reason: str | None) -> None:
    assert weak_secret_reason(value) == reason


def _prod_env(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    env = {
        "SECURITY_MODE": "prod",
        "JEFFREY_SECRET_KEY": STRONG,
        "REDIS_PASSWORD": STRONG + "r",
        "FLOWER_BASIC_AUTH": "ops:" + STRONG + "f",
        "CORS_ORIGINS": "https://app.example.org",
    }
    env.update(overrides)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_prod_accepts_strong_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    _prod_env(monkeypatch)
    assert Settings().is_prod


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("JEFFREY_SECRET_KEY", "your_secret_key_here", "JEFFREY_SECRET_KEY is a placeholder"),
        ("JEFFREY_SECRET_KEY", "", "JEFFREY_SECRET_KEY is missing"),
        ("REDIS_PASSWORD", "tooshort", "REDIS_PASSWORD is shorter than 32"),
        ("FLOWER_BASIC_AUTH", "admin:admin", "FLOWER_BASIC_AUTH (password part) is shorter"),
        ("CORS_ORIGINS", "*", "CORS_ORIGINS must not allow '*'"),
    ],
)
def test_prod_refuses_weak_settings(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    _prod_env(monkeypatch, **{variable: value})
    with pytest.raises(ValidationError) as excinfo:
        Settings()
    assert expected in str(excinfo.value)


def test_prod_with_placeholder_secret_exits_non_zero_naming_the_variable(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SECURITY_MODE": "prod",
        "JEFFREY_SECRET_KEY": "changethis",
        "REDIS_PASSWORD": STRONG,
        "FLOWER_BASIC_AUTH": "ops:" + STRONG,
        "CORS_ORIGINS": "https://app.example.org",
    }
    for argv in (
        [sys.executable, "-m", "jeffrey_core.cli.main", "config", "check"],
        [sys.executable, "-c", "import jeffrey_api.main as m; m.create_app()"],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert result.returncode != 0
        assert "JEFFREY_SECRET_KEY is a placeholder" in result.stderr
