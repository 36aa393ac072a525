"""Settings: defaults, URL handling and the production guard."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

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

# Fixed random-looking secrets (secrets.token_urlsafe-shaped), one per variable: prod refuses reuse.
STRONG = "Vq3xN8pL2mR7tK9wZ4cB6yH1jD5fG0sAe"
STRONG_REDIS = "Jm4Rt8Wq2Xz6Lp0Nc3Vb7Hk1Dg5Fs9Ay"
STRONG_FLOWER = "Pz7Kc2Wn9Qx4Rt1Lm6Vb3Hj8Dg0Fs5Ae"
STRONG_DB = "Tb5Nx1Qw8Zr3Lk6Pm0Vc4Hg7Dj2Fs9Ay"
STRONG_GRAFANA = "Hx2Wq7Lp4Zn9Rc1Tm6Vb3Kj8Dg0Fs5Ae"


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
        ("a" * 32, "has too little entropy"),
        ("k" * 20 + "Q9x!" + "z" * 20, "has too little entropy"),
        ("abcdefgh" * 4, "has too little entropy"),
        ("Password1" * 4, "has too little entropy"),
        (STRONG, None),
        ("0f3a9c1e7b2d48e6a5c90d1f2e3b4a67", None),  # secrets.token_hex(16)
    ],
)
def test_weak_secrets_are_named(value: str | None, reason: str | None) -> None:
    found = weak_secret_reason(value)
    assert found == reason if reason is None else (found or "").startswith(reason)


def test_random_secrets_pass_the_entropy_check() -> None:
    for _ in range(2000):
        for value in (secrets.token_hex(16), secrets.token_urlsafe(24), secrets.token_urlsafe(48)):
            assert weak_secret_reason(value) is None, value


def _prod_env(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    env = {
        "SECURITY_MODE": "prod",
        "JEFFREY_SECRET_KEY": STRONG,
        "REDIS_PASSWORD": STRONG_REDIS,
        "FLOWER_BASIC_AUTH": "ops:" + STRONG_FLOWER,
        "DATABASE_URL": f"postgresql://jeffrey:{STRONG_DB}@postgres:5432/jeffrey",
        "GF_SECURITY_ADMIN_PASSWORD": STRONG_GRAFANA,
        "CORS_ORIGINS": "https://app.example.org",
    }
    env.update(overrides)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_prod_accepts_strong_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    _prod_env(monkeypatch)
    assert Settings().is_prod


def test_prod_accepts_a_rotated_out_key_and_token_lifetimes_within_the_maximum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _prod_env(
        monkeypatch,
        JEFFREY_VERIFY_KEYS=f"k1:{STRONG_REDIS[::-1]}",
        JEFFREY_KEY_ID="k2",
        JEFFREY_TOKEN_TTL_SECONDS=str(7 * 86400),
        JEFFREY_TOKEN_MAX_TTL_SECONDS=str(7 * 86400),
    )
    security = Settings().security
    assert security.token_ttl_seconds == security.token_max_ttl_seconds == 7 * 86400


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("JEFFREY_SECRET_KEY", "your_secret_key_here", "JEFFREY_SECRET_KEY is a placeholder"),
        ("REDIS_PASSWORD", "tooshort", "REDIS_PASSWORD is shorter than 32"),
        ("FLOWER_BASIC_AUTH", "admin:admin", "FLOWER_BASIC_AUTH (password of user 1) is shorter"),
        ("CORS_ORIGINS", "*", "CORS_ORIGINS must not allow '*'"),
        ("CORS_ORIGINS", "https://app.example.org,null", "CORS_ORIGINS must not allow 'null'"),
        ("JEFFREY_SECRET_KEY", "a" * 32, "JEFFREY_SECRET_KEY has too little entropy"),
        ("DATABASE_URL", "postgresql://jeffrey:change-me@db/j", "DATABASE_URL (password) is a placeholder"),
        ("DATABASE_URL", "postgresql://jeffrey@db/j", "DATABASE_URL (password) is missing"),
        ("REDIS_URL", "redis://:short@redis:6379/0", "REDIS_URL (password) is shorter"),
        ("GF_SECURITY_ADMIN_PASSWORD", "admin", "GF_SECURITY_ADMIN_PASSWORD is shorter"),
        (
            "FLOWER_BASIC_AUTH",
            f"ops:{STRONG_FLOWER},guest:guest",
            "FLOWER_BASIC_AUTH (password of user 2) is shorter",
        ),
        ("FLOWER_BASIC_AUTH", f"ops:{STRONG_FLOWER},guest", "FLOWER_BASIC_AUTH entry 2 is not user:password"),
        ("REDIS_PASSWORD", STRONG, "REDIS_PASSWORD reuses the value of JEFFREY_SECRET_KEY"),
        (
            "GF_SECURITY_ADMIN_PASSWORD",
            STRONG_DB,
            "GF_SECURITY_ADMIN_PASSWORD reuses the value of DATABASE_URL (password)",
        ),
        (
            "JEFFREY_TOKEN_TTL_SECONDS",
            str(31 * 86400),
            "JEFFREY_TOKEN_TTL_SECONDS must not exceed JEFFREY_TOKEN_MAX_TTL_SECONDS",
        ),
        ("JEFFREY_TOKEN_MAX_TTL_SECONDS", str(90 * 86400), "JEFFREY_TOKEN_MAX_TTL_SECONDS must not exceed"),
        (
            "JEFFREY_VERIFY_KEYS",
            f"k1:{STRONG}",
            "JEFFREY_VERIFY_KEYS (key 1) reuses the value of JEFFREY_SECRET_KEY",
        ),
        ("JEFFREY_VERIFY_KEYS", f"k1:{STRONG_DB[::-1]},k2:short", "JEFFREY_VERIFY_KEYS (key 2) is shorter"),
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
        "REDIS_PASSWORD": STRONG_REDIS,
        "FLOWER_BASIC_AUTH": "ops:" + STRONG_FLOWER,
        "CORS_ORIGINS": "https://app.example.org",
    }
    for argv in (
        [sys.executable, "-m", "jeffrey_dev.cli.main", "config", "check"],
        [sys.executable, "-c", "import jeffrey_api.main as m; m.create_app()"],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert result.returncode != 0
        assert "JEFFREY_SECRET_KEY is a placeholder" in result.stderr


def test_prod_accepts_sqlite_and_services_without_the_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker, beat, flower and migrate get no JEFFREY_SECRET_KEY in compose; only the API needs it.
    _prod_env(monkeypatch, DATABASE_URL="sqlite:///var/jeffrey.db")
    monkeypatch.delenv("JEFFREY_SECRET_KEY")
    assert Settings().is_prod


def _prod_subprocess_env(**overrides: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "SECURITY_MODE": "prod",
        "JEFFREY_SECRET_KEY": STRONG,
        "REDIS_PASSWORD": STRONG_REDIS,
        "FLOWER_BASIC_AUTH": "ops:" + STRONG_FLOWER,
        "DATABASE_URL": f"postgresql://jeffrey:{STRONG_DB}@postgres:5432/jeffrey",
        "GF_SECURITY_ADMIN_PASSWORD": STRONG_GRAFANA,
        "CORS_ORIGINS": "https://app.example.org",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


# What every service does first (api, worker, beat, flower and migrate all read get_settings()).
CONFIG_CHECK = [
    sys.executable,
    "-c",
    "from jeffrey_core.settings import get_settings; get_settings(); print('ok')",
]
API_START = [sys.executable, "-c", "import jeffrey_api.main as m; m.create_app()"]


@pytest.mark.parametrize(
    ("overrides", "named", "secret"),
    [
        (
            {"DATABASE_URL": "postgresql://jeffrey:placeholder-pw@db/j"},
            "DATABASE_URL (password)",
            "placeholder-pw",
        ),
        ({"REDIS_URL": "redis://:Changeme-Redis-0@redis:6379/0"}, "REDIS_URL (password)", "Changeme-Redis-0"),
        (
            {"FLOWER_BASIC_AUTH": f"ops:{STRONG_FLOWER},guest:guest-pw"},
            "FLOWER_BASIC_AUTH (password of user 2)",
            "guest-pw",
        ),
        (
            {"GF_SECURITY_ADMIN_PASSWORD": "grafana-admin-pw"},
            "GF_SECURITY_ADMIN_PASSWORD",
            "grafana-admin-pw",
        ),
        ({"JEFFREY_SECRET_KEY": "q" * 40}, "JEFFREY_SECRET_KEY has too little entropy", "q" * 40),
        ({"REDIS_PASSWORD": STRONG}, "REDIS_PASSWORD reuses the value of JEFFREY_SECRET_KEY", STRONG),
        ({"CORS_ORIGINS": "null"}, "CORS_ORIGINS must not allow 'null'", None),
        ({"JEFFREY_TOKEN_TTL_SECONDS": "3888000"}, "JEFFREY_TOKEN_TTL_SECONDS must not exceed", "3888000"),
        (
            {"JEFFREY_VERIFY_KEYS": "old:Old-key-but-short"},
            "JEFFREY_VERIFY_KEYS (key 1)",
            "Old-key-but-short",
        ),
    ],
)
def test_prod_refusals_exit_non_zero_naming_the_variable_never_its_value(
    tmp_path: Path, overrides: dict[str, str], named: str, secret: str | None
) -> None:
    result = subprocess.run(
        CONFIG_CHECK,
        env=_prod_subprocess_env(**overrides),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert result.returncode != 0
    assert named in result.stderr
    if secret:
        assert secret not in result.stderr + result.stdout


def test_prod_config_check_passes_with_strong_distinct_secrets(tmp_path: Path) -> None:
    result = subprocess.run(
        CONFIG_CHECK,
        env=_prod_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("key", ["<unset>", "", "  "])
def test_prod_api_refuses_to_start_without_the_signing_key(tmp_path: Path, key: str) -> None:
    env = _prod_subprocess_env(JEFFREY_SECRET_KEY=key)
    worker_like = subprocess.run(
        CONFIG_CHECK, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path)
    )
    assert worker_like.returncode == 0, worker_like.stderr
    api = subprocess.run(API_START, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert api.returncode != 0
    assert "JEFFREY_SECRET_KEY is missing" in api.stderr
