"""What every benchmark shares: processes started and stopped by PID, a private redis-server, a
throwaway PostgreSQL database, the wrk runner, peak RSS, and the result files under bench/results/."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-secret-key-0123456789abcdef0123456789abcdef"


def source_path(source: Path | None) -> list[str]:
    """sys.path entries that make child processes import the project from `source` (a snapshot of the
    tree, e.g. `git archive` of another commit) instead of the working tree."""
    if source is None:
        return [str(ROOT)]
    dirs = ["services/api", "services/worker", "services/beat", "shared"]
    return [str(source / d) for d in dirs] + [str(ROOT)]


def export_tree(ref: str, dest: Path) -> Path:
    """The project's packages as they are at git `ref`, unpacked under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref, "services", "shared"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def wait_until(check: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


@dataclass
class Proc:
    """A child in its own process group; stopped by its PID (SIGTERM, then SIGKILL)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Proc:
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return round(int(match.group(1)) / 1024, 1) if match else None


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    except OSError:
        return []
    return [int(p) for p in out.stdout.split()]


@contextlib.contextmanager
def redis_server(log_dir: Path) -> Iterator[str]:
    """A private redis-server on a loopback TCP port; yields its URL."""
    from jeffrey_dev.stack import find_redis_server, free_port

    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = Proc.start(f"redis-{port}", argv, dict(os.environ), log_dir)
    import redis

    client = redis.Redis(port=port)
    try:
        if not wait_until(lambda: _pings(client), 15):
            raise RuntimeError(f"redis-server did not start: {proc.output()[-500:]}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.stop()


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A database created for this run and dropped after it; None when PostgreSQL is not reachable."""
    from sqlalchemy import create_engine, text

    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"jeffrey_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"PostgreSQL not reachable ({exc.__class__.__name__}); skipping its figures")
        admin.dispose()
        yield None
        return
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is needed for the HTTP benchmarks: sudo apt-get install -y wrk")
    return wrk


def run_wrk(url: str, connections: int, seconds: float, script: str, env: dict[str, str]) -> dict[str, Any]:
    """One wrk point (2 threads); requests/s, latency percentiles, errors."""
    argv = [require_wrk(), "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    argv += ["-s", str(ROOT / "bench" / script), url]
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    data["connections"] = connections
    data["rps"] = round(data["requests"] / (data["duration_us"] / 1e6), 1)
    return data


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
    )
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "commit": commit(),
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path
