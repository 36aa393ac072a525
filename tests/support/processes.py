"""Real processes for tests: a private Redis, Celery workers, uvicorn. Each is stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from jeffrey_dev.stack import find_redis_server, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """A child process started in its own session, with its output captured to a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, stdin_text: str | None = None
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.stdin_text = stdin_text
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.PIPE if self.stdin_text is not None else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if self.stdin_text is not None and self.proc.stdin:
            self.proc.stdin.write(self.stdin_text.encode())
            self.proc.stdin.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the process group we created, by its PID; SIGKILL when it does not leave in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Children of a prefork pool share the group: make sure none survives its parent.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port with a password; nobody else's data."""

    log_dir: Path
    password: str = "test-redis-password-0123456789abcdef"
    port: int = field(default_factory=free_port)
    process: ServiceProcess | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        config = f'port {self.port}\nbind 127.0.0.1\nrequirepass "{self.password}"\nsave ""\nappendonly no\n'
        self.process = ServiceProcess(
            "redis", [binary, "-"], dict(os.environ), self.log_dir, stdin_text=config
        )
        self.process.start()
        client = self.client()
        ok = wait_until(lambda: _pings(client), timeout=15)
        client.close()
        if not ok:
            raise RuntimeError(f"redis-server did not start: {self.process.output()[-2000:]}")
        return self

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, db=db, socket_timeout=2, decode_responses=True
        )

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def service_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a Jeffrey process under test: its own Redis db, database and key prefix."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "CELERY_", "FLOWER_"))
    }
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        JEFFREY_SECRET_KEY="test-secret-key-for-the-suite-0123456789abcdef",
        SECURITY_MODE="dev",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        READINESS_CACHE_SECONDS="1",
        WORKER_PING_TIMEOUT="0.5",
        # Budgets the suite never reaches (it posts hundreds of requests a test from one address), so the
        # limiter runs on every request; tests of the limits themselves pass their own.
        RATE_LIMIT_WRITES="100000/minute",
        RATE_LIMIT_DETECT="100000/minute",
        RATE_LIMIT_DREAM_RUNS="100000/minute",
        RATE_LIMIT_READS="100000/minute",
    )
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    hostname: str,
    concurrency: int = 1,
    queues: str = "dream,emotion,default",
) -> ServiceProcess:
    argv = [sys.executable, "-m", "celery", "-A", "jeffrey_worker.app", "worker", "-E", "--loglevel", "INFO"]
    argv += ["-Q", queues, "-c", str(concurrency), "-n", hostname, "--without-mingle"]
    argv += ["--without-gossip"]
    worker = ServiceProcess("worker", argv, env, log_dir).start()
    if not wait_until(lambda: "ready." in worker.output() or not worker.running(), timeout=60, interval=0.1):
        worker.stop()
        raise RuntimeError(f"worker did not become ready: {worker.output()[-3000:]}")
    if not worker.running():
        raise RuntimeError(f"worker exited: {worker.output()[-3000:]}")
    return worker


def flower_env(env: dict[str, str]) -> dict[str, str]:
    """The env for a Flower next to a test's worker: without the worker's PROMETHEUS_MULTIPROC_DIR.

    Flower uses prometheus_client too; given that directory it writes its own gauges there, and the
    worker's exporter then serves them as well, so every flower_* series appears twice (once per
    target) whenever Flower wrote its file after the worker emptied the directory at start:
    `sum(flower_worker_online) == 1` was then 2 (the alert test's one CI failure)."""
    return {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


def start_api(env: dict[str, str], log_dir: Path) -> tuple[ServiceProcess, str]:
    """One uvicorn process. PROMETHEUS_MULTIPROC_DIR is dropped: tests share one env with the worker,
    whose directory that is (a single API process keeps its own registry; test_api_multiprocess_metrics
    starts several)."""
    env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "jeffrey_api.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    api = ServiceProcess("api", [*argv, "--no-access-log"], env, log_dir).start()
    base = f"http://127.0.0.1:{port}"
    if (
        not wait_until(lambda: _healthy(base) or not api.running(), timeout=60, interval=0.1)
        or not api.running()
    ):
        api.stop()
        raise RuntimeError(f"api did not start: {api.output()[-3000:]}")
    return api, base


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def eventually(check: Callable[[], bool], timeout: float, message: str, interval: float = 0.2) -> None:
    """Wait for a condition with a deadline; fail with `message` when it never holds."""
    if not wait_until(check, timeout=timeout, interval=interval):
        raise AssertionError(f"{message} (waited {timeout:g}s)")
