"""Memory POST benchmark: the project's API against the hand-written baseline, same uvicorn, same run.

    python -m bench.gateway [--seconds 10] [--databases sqlite,postgres]

Workloads: one memory per request at 16 and 64 connections, batches of 100 at 4 connections (wrk -t2,
loopback). The project runs with its rate limiter on (budgets the bench never reaches) and a private
redis-server; PostgreSQL gets a database made for the run and dropped after it. The generator check
points wrk at a bare ASGI app and a FastAPI constant to show wrk is not the bottleneck.
Writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    SECRET,
    Proc,
    cpu_seconds,
    export_tree,
    peak_rss_mb,
    postgres_database,
    redis_server,
    require_wrk,
    run_wrk,
    source_path,
    wait_until,
    write_result,
)

WORKLOADS = (("single_16", 16, 1), ("single_64", 64, 1), ("batch100_4", 4, 100))


def _bodies(tmp: Path) -> dict[int, Path]:
    single = {
        "text": "I walked by the sea this morning and felt calm for the first time in weeks.",
        "meta": {"src": "bench"},
    }
    paths = {1: tmp / "single.json", 100: tmp / "batch.json"}
    paths[1].write_text(json.dumps(single))
    paths[100].write_text(
        json.dumps({"memories": [{**single, "text": f"{single['text']} ({i})"} for i in range(100)]})
    )
    return paths


def _mint(env: dict[str, str]) -> str:
    """A memories token minted by the tree under test (its claims are what its API verifies)."""
    code = "from jeffrey_core.auth import mint_token; import os; "
    code += "print(mint_token(os.environ['JEFFREY_SECRET_KEY'], 'bench-user', ['memories'], 3600))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _serve(name: str, target: str, env: dict[str, str], tmp: Path, migrate: bool = False) -> tuple[Proc, str]:
    import httpx

    if migrate:  # the schema of the tree under test
        code = (
            "from jeffrey_core.store.migrate import upgrade; import os; upgrade(os.environ['DATABASE_URL'])"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True)

    from jeffrey_dev.stack import free_port

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    argv += ["--log-level", "warning"]
    proc = Proc.start(name, argv, env, tmp)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.popen.poll() is not None

    if not wait_until(up, 60, 0.1) or proc.popen.poll() is not None:
        proc.stop()
        raise RuntimeError(f"{name} did not start: {proc.output()[-2000:]}")
    return proc, base


def _points(
    pid: int, base: str, paths: dict[str, str], bodies: dict[int, Path], token: str, seconds: float
) -> dict[str, Any]:
    """Each workload: a short warm-up, then one measured wrk run. Besides the rates, the server's CPU
    time per request (user + system of the serving process over the run): on a shared machine it
    drifts far less than requests/s."""
    out: dict[str, Any] = {}
    for name, conns, per in WORKLOADS:
        env = {"BENCH_BODY_FILE": str(bodies[per]), "BENCH_TOKEN": token}
        run_wrk(base + paths[str(per)], conns, min(2.0, seconds), "post.lua", env)  # warm-up
        cpu_before = cpu_seconds(pid)
        point = run_wrk(base + paths[str(per)], conns, seconds, "post.lua", env)
        point["server_cpu_ms_per_request"] = round(
            1000 * (cpu_seconds(pid) - cpu_before) / max(1, point["requests"]), 3
        )
        point["memories_per_s"] = round(point["rps"] * per, 1)
        out[name] = point
        print(
            f"  {name:>11}: {point['rps']:>8} req/s  {point['memories_per_s']:>9} memories/s"
            f"  p50 {point['p50_ms']} ms  p99 {point['p99_ms']} ms  cpu/req {point['server_cpu_ms_per_request']} ms"
            f"  non2xx {point['non2xx']}"
        )
    return out


def project_env(redis_url: str, database_url: str, source: Path | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "DATABASE_", "CELERY_", "RATE_LIMIT_"))
    }
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        JEFFREY_SECRET_KEY=SECRET,
        SECURITY_MODE="dev",
        LOG_LEVEL="WARNING",
        RATE_LIMIT_WRITES="100000000/minute",
        RATE_LIMIT_READS="100000000/minute",
    )
    env["PYTHONPATH"] = os.pathsep.join(source_path(source))
    return env


def bench_project(
    database_url: str, redis_url: str, bodies: dict[int, Path], tmp: Path, seconds: float, source: Path | None
) -> dict[str, Any]:
    env = project_env(redis_url, database_url, source)
    proc, base = _serve("api", "jeffrey_api.main:app", env, tmp, migrate=True)
    try:
        token = _mint(env)
        paths = {"1": "/api/v1/memories", "100": "/api/v1/memories"}
        result = _points(proc.pid, base, paths, bodies, token, seconds)
        result["api_peak_rss_mb"] = peak_rss_mb(proc.pid)
        return result
    finally:
        proc.stop()


def bench_baseline(redis_url: str, bodies: dict[int, Path], tmp: Path, seconds: float) -> dict[str, Any]:
    import jwt

    env = {
        **os.environ,
        "BASELINE_DB": str(tmp / "baseline.db"),
        "BASELINE_REDIS_URL": redis_url.replace("/0", "/1"),
        "BASELINE_SECRET": SECRET,
    }
    env["PYTHONPATH"] = str(ROOT)
    proc, base = _serve("baseline", "bench.baseline_app:app", env, tmp)
    try:
        token = jwt.encode({"sub": "bench-user"}, SECRET, algorithm="HS256")
        result = _points(proc.pid, base, {"1": "/memories", "100": "/memories/batch"}, bodies, token, seconds)
        result["constant_fastapi"] = run_wrk(base + "/constant", 64, seconds, "get.lua", {})
        result["baseline_peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        proc.stop()
    proc, base = _serve("raw", "bench.baseline_app:raw", env, tmp)
    try:
        up = wait_until(lambda: True, 0)
        assert up
        result["constant_bare_asgi"] = run_wrk(base + "/", 64, seconds, "get.lua", {})
    finally:
        proc.stop()
    print(
        f"  constant: FastAPI {result['constant_fastapi']['rps']} req/s, bare ASGI {result['constant_bare_asgi']['rps']} req/s"
    )
    return result


def ratios(project: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    return {name: round(project[name]["rps"] / baseline[name]["rps"], 3) for name, _, _ in WORKLOADS}


def _variants(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path | None]]:
    variants: list[tuple[str, Path | None]] = []
    if args.before:
        before = Path(args.before)
        tree = before if before.is_dir() else export_tree(args.before, tmp / "before")
        variants.append((f"before ({args.before})", tree))
    variants.append(("project", args.source))
    return variants


def _bench_db(
    db: str,
    tmp: Path,
    redis_url: str,
    bodies: dict[int, Path],
    args: argparse.Namespace,
    source: Path | None,
    label: str,
) -> dict[str, Any] | None:
    if db == "sqlite":
        url = f"sqlite:///{tmp}/jeffrey-{abs(hash(label))}.db"
        return bench_project(url, redis_url, bodies, tmp, args.seconds, source)
    with postgres_database() as pg:
        return None if pg is None else bench_project(pg, redis_url, bodies, tmp, args.seconds, source)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--before", default=None, help="also measure the API as it is at this git ref (before/after)"
    )
    parser.add_argument(
        "--source", type=Path, default=None, help="import the project from this tree (default: working tree)"
    )
    parser.add_argument("--name", default="gateway")
    args = parser.parse_args()
    require_wrk()
    data: dict[str, Any] = {
        "seconds_per_point": args.seconds,
        "generator": "wrk -t2",
        "variants": {},
        "ratios": {},
    }
    with tempfile.TemporaryDirectory() as tmpdir, redis_server(Path(tmpdir)) as redis_url:
        tmp = Path(tmpdir)
        bodies = _bodies(tmp)
        print("baseline (hand-written, sqlite3 WAL):")
        data["baseline"] = bench_baseline(redis_url, bodies, tmp, args.seconds)
        for label, source in _variants(args, tmp):
            for db in args.databases.split(","):
                print(f"{label} on {db}:")
                result = _bench_db(db, tmp, redis_url, bodies, args, source, label)
                if result is None:
                    continue
                data["variants"].setdefault(label, {})[db] = result
                data["ratios"].setdefault(label, {})[db] = ratios(result, data["baseline"])
                print(f"  ratios vs baseline: {data['ratios'][label][db]}")
    measured = [data["baseline"], *(r for v in data["variants"].values() for r in v.values())]
    peak = max(p[w]["rps"] for p in measured for w, _, _ in WORKLOADS)
    data["generator_headroom"] = round(data["baseline"]["constant_bare_asgi"]["rps"] / peak, 2)
    print(f"wrk served the bare ASGI constant at {data['generator_headroom']}x the highest measured rate")
    write_result(args.name, data)


if __name__ == "__main__":
    main()
