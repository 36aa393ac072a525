"""Sentinel settings (REDIS_SENTINELS) and what every Redis client is built from with and without them."""

from __future__ import annotations

import asyncio

import pytest
import redis
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from jeffrey_core.celery_factory import celery_config
from jeffrey_core.redis_client import (
    celery_url,
    create_async_pool,
    create_async_redis,
    create_sync_redis,
    redbeat_config,
)
from jeffrey_core.settings import RedisSettings, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def sentinel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://:master%20pw@ignored:6379/3")
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379, s2:26380,[::1]:26381")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "jeffrey-ha")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-pw")


def test_sentinel_settings_parse(sentinel_env: None) -> None:
    settings = RedisSettings()
    assert settings.sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert settings.sentinel_master == "jeffrey-ha"
    assert settings.master_password() == "master pw" and settings.db() == 3


@pytest.mark.parametrize("value", ["s1", "s1:", ":26379", "s1:0", "s1:70000", "s1:port"])
def test_bad_sentinel_entries_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", value)
    with pytest.raises(ValidationError, match="host:port"):
        RedisSettings()


def test_without_sentinels_everything_uses_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_SENTINELS", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    settings = Settings()
    dsn = "redis://:pw@cache:6379/2"
    assert celery_url(settings.redis) == dsn
    config = celery_config(settings)
    assert config["broker_url"] == config["result_backend"] == dsn
    assert "master_name" not in config["broker_transport_options"]
    assert redbeat_config(settings.redis) == {"redbeat_redis_url": dsn}
    client = create_sync_redis(settings.redis)
    assert client.connection_pool.connection_kwargs["host"] == "cache"
    assert not isinstance(client.connection_pool, SentinelConnectionPool)
    client.close()


def test_celery_and_redbeat_go_through_sentinel(sentinel_env: None) -> None:
    settings = Settings()
    config = celery_config(settings)
    urls = config["broker_url"].split(";")
    assert urls == [
        "sentinel://:master%20pw@s1:26379/3",
        "sentinel://:master%20pw@s2:26380/3",
        "sentinel://:master%20pw@[::1]:26381/3",
    ]
    assert config["result_backend"] == config["broker_url"]
    for options in (config["broker_transport_options"], config["result_backend_transport_options"]):
        assert options["master_name"] == "jeffrey-ha"
        assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    from jeffrey_beat.app import create_beat_app  # imported here: the module builds its app from the env

    beat = create_beat_app(settings)
    assert beat.conf.redbeat_redis_url.startswith("redis-sentinel")
    assert beat.conf.redbeat_redis_options["sentinels"] == settings.redis.sentinels
    assert beat.conf.redbeat_redis_options["service_name"] == "jeffrey-ha"
    assert beat.conf.beat_scheduler == "jeffrey_beat.scheduler:FailoverTolerantScheduler"


def test_every_client_asks_the_sentinels(sentinel_env: None) -> None:
    settings = RedisSettings()
    sync = create_sync_redis(settings, decode_responses=False)
    assert isinstance(sync.connection_pool, SentinelConnectionPool)
    assert sync.connection_pool.service_name == "jeffrey-ha"
    assert sync.connection_pool.connection_kwargs["db"] == 3
    assert sync.connection_pool.connection_kwargs["password"] == "master pw"
    sentinel_client: redis.Redis = sync.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel_client.connection_pool.connection_kwargs["password"] == "sentinel-pw"
    sync.close()

    async def check_async() -> None:
        client = create_async_redis(settings)
        assert isinstance(client.connection_pool, AsyncSentinelPool)
        await client.aclose()
        pool = create_async_pool(settings, max_connections=7, timeout=0.5, socket_timeout=0.5)
        assert isinstance(pool, AsyncSentinelPool) and pool.max_connections == 7
        await pool.disconnect()

    asyncio.run(check_async())
