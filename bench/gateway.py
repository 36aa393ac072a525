"""Memory POST benchmark: the project's API against the hand-written baseline, same uvicorn, same run.

    python -m bench.gateway [--seconds 10] [--rounds 2] [--databases sqlite,postgres] [--before REF]

Workloads: one memory per request at 16 and 64 connections, batches of 100 at 4 connections (wrk -t2,
loopback). Every server (the baseline, the project on each database, the `--before` tree) is up for
the whole run, and each workload is measured in rounds that take every server in turn, so each ratio
compares points seconds apart (run one after the other, a drifting machine moved the ratios by 0.2).
The project runs with its rate limiter on (budgets the bench never reaches) and a private
redis-server; PostgreSQL gets a database made for the run and dropped after it. The generator check
points wrk at a bare ASGI app and a FastAPI constant to show wrk is not the bottleneck.
Writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
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


@dataclass
class Server:
    """One API under test, up for the whole run: its label, database, process, URL, paths, token."""

    label: str
    db: str
    proc: Proc
    base: str
    paths: dict[str, str]
    token: str
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _point(
    server: Server, name: str, conns: int, per: int, bodies: dict[int, Path], seconds: float, warm: bool
) -> dict[str, Any]:
    """One measured wrk run (after a short warm-up the first time), with the server's CPU time per
    request (user + system of the serving process over the run): on a shared machine it drifts far
    less than requests/s."""
    env = {"BENCH_BODY_FILE": str(bodies[per]), "BENCH_TOKEN": server.token}
    url = server.base + server.paths[str(per)]
    if warm:
        run_wrk(url, conns, min(2.0, seconds), "post.lua", env)
    cpu_before = cpu_seconds(server.proc.pid)
    point = run_wrk(url, conns, seconds, "post.lua", env)
    point["server_cpu_ms_per_request"] = round(
        1000 * (cpu_seconds(server.proc.pid) - cpu_before) / max(1, point["requests"]), 3
    )
    point["memories_per_s"] = round(point["rps"] * per, 1)
    print(
        f"  {server.label:>22} {server.db:>8} {name:>11}: {point['rps']:>8} req/s  p50 {point['p50_ms']} ms"
        f"  p99 {point['p99_ms']} ms  cpu/req {point['server_cpu_ms_per_request']} ms  non2xx {point['non2xx']}"
    )
    return point


def _combined(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one server and workload as one point: requests over time, the mean p50, the worst
    p99, CPU over requests; each round kept under `rounds`."""
    requests = sum(p["requests"] for p in points)
    seconds = sum(p["duration_us"] for p in points) / 1e6
    per = points[0]["memories_per_s"] / points[0]["rps"] if points[0]["rps"] else 1
    cpu_ms = sum(p["server_cpu_ms_per_request"] * p["requests"] for p in points)
    return {
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "memories_per_s": round(requests / seconds * per, 1),
        "p50_ms": round(sum(p["p50_ms"] for p in points) / len(points), 3),
        "p99_ms": max(p["p99_ms"] for p in points),
        "server_cpu_ms_per_request": round(cpu_ms / max(1, requests), 3),
        "non2xx": sum(p["non2xx"] for p in points),
        "connections": points[0]["connections"],
        "rounds": points,
    }


def measure_interleaved(servers: list[Server], bodies: dict[int, Path], seconds: float, rounds: int) -> None:
    """Every server up at once; for each workload, `rounds` rounds that each measure every server in
    turn (baseline first). A ratio then compares points a few seconds apart, not minutes: on a shared
    machine the CPU share a process gets drifts by a factor of two from one minute to the next."""
    for name, conns, per in WORKLOADS:
        for r in range(rounds):
            for server in servers:
                server.points.setdefault(name, []).append(
                    _point(server, name, conns, per, bodies, seconds, warm=r == 0)
                )


def round_ratios(server: Server, baseline: Server) -> dict[str, float]:
    """Per workload, the mean over rounds of this server's rate over the baseline's in the same round."""
    out = {}
    for name, _, _ in WORKLOADS:
        pairs = zip(server.points[name], baseline.points[name], strict=True)
        out[name] = round(sum(p["rps"] / b["rps"] for p, b in pairs) / len(server.points[name]), 3)
    return out


def start_project(label: str, db_url: str, db: str, redis_url: str, tmp: Path, source: Path | None) -> Server:
    name = f"api-{abs(hash(label + db))}"
    # Up at the same time as the others: keys of its own in the shared private Redis.
    env = {**project_env(redis_url, db_url, source), "REDIS_KEY_PREFIX": f"bench-{name}"}
    proc, base = _serve(name, "jeffrey_api.main:app", env, tmp, migrate=True)
    paths = {"1": "/api/v1/memories", "100": "/api/v1/memories"}
    return Server(label, db, proc, base, paths, _mint(env))


def baseline_env(redis_url: str, tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "BASELINE_DB": str(tmp / "baseline.db"),
        "BASELINE_REDIS_URL": redis_url.replace("/0", "/1"),
        "BASELINE_SECRET": SECRET,
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_baseline(redis_url: str, tmp: Path) -> Server:
    import jwt

    env = baseline_env(redis_url, tmp)
    proc, base = _serve("baseline", "bench.baseline_app:app", env, tmp)
    token = jwt.encode({"sub": "bench-user"}, SECRET, algorithm="HS256")
    return Server(
        "hand-written baseline", "sqlite3", proc, base, {"1": "/memories", "100": "/memories/batch"}, token
    )


def generator_check(baseline: Server, env: dict[str, str], tmp: Path, seconds: float) -> dict[str, Any]:
    """wrk against a FastAPI constant (the baseline app's) and a bare ASGI constant: wrk's headroom."""
    out = {"constant_fastapi": run_wrk(baseline.base + "/constant", 64, seconds, "get.lua", {})}
    proc, base = _serve("raw", "bench.baseline_app:raw", env, tmp)
    try:
        out["constant_bare_asgi"] = run_wrk(base + "/", 64, seconds, "get.lua", {})
    finally:
        proc.stop()
    print(
        f"  constant: FastAPI {out['constant_fastapi']['rps']} req/s, bare ASGI {out['constant_bare_asgi']['rps']} req/s"
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


def _variants(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path | None]]:
    variants: list[tuple[str, Path | None]] = []
    if args.before:
        before = Path(args.before)
        tree = before if before.is_dir() else export_tree(args.before, tmp / "before")
        variants.append((f"before ({args.before})", tree))
    variants.append(("project", args.source))
    return variants


def _start_all(
    args: argparse.Namespace, tmp: Path, redis_url: str, stack: contextlib.ExitStack
) -> list[Server]:
    servers = [start_baseline(redis_url, tmp)]
    stack.callback(servers[0].proc.stop)
    for label, source in _variants(args, tmp):
        for db in args.databases.split(","):
            if db == "sqlite":
                url: str | None = f"sqlite:///{tmp}/jeffrey-{abs(hash(label))}.db"
            else:
                url = stack.enter_context(postgres_database())
                if url is None:
                    continue
            server = start_project(label, url, db, redis_url, tmp, source)
            stack.callback(server.proc.stop)
            servers.append(server)
    return servers


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
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds per workload (each server once per round)"
    )
    args = parser.parse_args()
    require_wrk()
    data: dict[str, Any] = {
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "generator": "wrk -t2",
        "variants": {},
        "ratios": {},
    }
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        redis_server(Path(tmpdir)) as redis_url,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        bodies = _bodies(tmp)
        servers = _start_all(args, tmp, redis_url, stack)
        baseline = servers[0]
        print(f"{len(servers)} servers up; {args.rounds} interleaved rounds per workload")
        measure_interleaved(servers, bodies, args.seconds, args.rounds)
        data["baseline"] = {name: _combined(baseline.points[name]) for name, _, _ in WORKLOADS}
        data["baseline"].update(generator_check(baseline, baseline_env(redis_url, tmp), tmp, args.seconds))
        data["baseline"]["baseline_peak_rss_mb"] = peak_rss_mb(baseline.proc.pid)
        for server in servers[1:]:
            result = {name: _combined(server.points[name]) for name, _, _ in WORKLOADS}
            result["api_peak_rss_mb"] = peak_rss_mb(server.proc.pid)
            data["variants"].setdefault(server.label, {})[server.db] = result
            data["ratios"].setdefault(server.label, {})[server.db] = round_ratios(server, baseline)
            print(
                f"{server.label} on {server.db}: ratios vs baseline {data['ratios'][server.label][server.db]}"
            )
    measured = [data["baseline"], *(r for v in data["variants"].values() for r in v.values())]
    peak = max(p[w]["rps"] for p in measured for w, _, _ in WORKLOADS)
    data["generator_headroom"] = round(data["baseline"]["constant_bare_asgi"]["rps"] / peak, 2)
    print(f"wrk served the bare ASGI constant at {data['generator_headroom']}x the highest measured rate")
    write_result(args.name, data)


if __name__ == "__main__":
    main()
