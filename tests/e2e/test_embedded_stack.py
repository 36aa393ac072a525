"""Boot the embedded default exactly as `make run` does (`jeffrey stack up`, free ports); use it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jeffrey_dev.stack import find_redis_server, free_port
from tests.conftest import require
from tests.support.processes import ROOT, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class RunningStack:
    base: str
    flower: str
    var_dir: Path
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _child_pids(root_pid: int) -> set[int]:
    """Every live descendant of `root_pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    require(find_redis_server() is not None, "redis-server is not installed")
    var_dir = tmp_path_factory.mktemp("var")
    log = var_dir.parent / "stack.log"
    api_port, flower_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "DATABASE_", "JEFFREY_", "FLOWER_"))
    }
    argv = [sys.executable, "-m", "jeffrey_dev.cli.main", "stack", "up", "--var-dir", str(var_dir)]
    argv += ["--api-port", str(api_port), "--flower-port", str(flower_port), "--concurrency", "1"]
    with log.open("w") as handle:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
    running = RunningStack(
        f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}", var_dir, process, log
    )
    try:
        eventually(
            lambda: "Jeffrey OS is up." in running.output() or process.poll() is not None,
            120,
            "stack did not start",
        )
        assert process.poll() is None, running.output()[-4000:]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()


def cli_token(stack: RunningStack, user: str, *scopes: str) -> dict[str, str]:
    argv = [sys.executable, "-m", "jeffrey_dev.cli.main", "token", "create", "--user", user]
    argv += [part for scope in scopes for part in ("--scope", scope)] + ["--var-dir", str(stack.var_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEFFREY_")}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token  # only the token on stdout
    return {"Authorization": f"Bearer {token}"}


def test_banner_prints_urls_and_a_working_admin_token(stack: RunningStack) -> None:
    out = stack.output()
    assert stack.base in out and stack.flower in out
    token = next(line.split("=", 1)[1] for line in out.splitlines() if "export JEFFREY_TOKEN=" in line)
    listed = httpx.get(f"{stack.base}/api/v1/memories", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200


def test_health_ready_docs_metrics(stack: RunningStack) -> None:
    assert httpx.get(f"{stack.base}/healthz").status_code == 200
    eventually(lambda: httpx.get(f"{stack.base}/readyz").json().get("workers") == "up", 60, "worker never up")
    assert httpx.get(f"{stack.base}/docs").status_code == 200
    assert httpx.get(f"{stack.base}/metrics", follow_redirects=False).status_code == 200


def test_flower_requires_basic_auth(stack: RunningStack) -> None:
    eventually(lambda: _answers(f"{stack.flower}/healthcheck"), 30, "flower never answered")
    assert httpx.get(f"{stack.flower}/api/workers").status_code == 401
    password = __import__("json").loads((stack.var_dir / "dev-secrets.json").read_text())["flower_password"]
    assert httpx.get(f"{stack.flower}/api/workers", auth=("admin", password)).status_code == 200


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_memories_journey(stack: RunningStack) -> None:
    alice, bob = cli_token(stack, "alice"), cli_token(stack, "bob")
    api = f"{stack.base}/api/v1/memories"
    assert httpx.get(api).status_code == 401
    bad = httpx.post(api, json={"text": ""}, headers=alice)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"

    created = httpx.post(api, json={"memories": [{"text": f"day {i}"} for i in range(60)]}, headers=alice)
    assert created.status_code == 201
    first = httpx.get(api, headers=alice).json()
    assert len(first["items"]) == 50 and first["next_cursor"]
    second = httpx.get(api, params={"cursor": first["next_cursor"]}, headers=alice).json()
    assert len(second["items"]) == 10 and second["next_cursor"] is None

    key = {"Idempotency-Key": "journey-1"}
    one = httpx.post(api, json={"text": "once"}, headers={**alice, **key})
    replay = httpx.post(api, json={"text": "once"}, headers={**alice, **key})
    assert one.status_code == replay.status_code == 201 and one.json() == replay.json()
    assert httpx.post(api, json={"text": "twice"}, headers={**alice, **key}).status_code == 409

    memory_url = f"{api}/{one.json()['id']}"
    assert httpx.get(memory_url, headers=bob).status_code == 404
    assert httpx.delete(memory_url, headers=alice).status_code == 204
    assert httpx.get(memory_url, headers=alice).status_code == 404


def test_memories_come_back_annotated_and_detect_works(stack: RunningStack) -> None:
    alice = cli_token(stack, "alice")
    api = f"{stack.base}/api/v1/memories"
    created = httpx.post(
        api, json={"text": "I'm so proud of my daughter, she graduated today!"}, headers=alice
    )
    url = f"{api}/{created.json()['id']}"
    eventually(
        lambda: httpx.get(url, headers=alice).json()["emotion"] is not None, 30, "memory never annotated"
    )
    memory = httpx.get(url, headers=alice).json()
    assert memory["emotion"]["label"] == "joy" and memory["lang"] == "en"
    detected = httpx.post(
        f"{stack.base}/api/v1/emotion/detect", json={"text": "J'ai peur du noir"}, headers=alice
    )
    assert detected.status_code == 200 and detected.json()["label"] == "fear"
    metrics_line = next(line for line in stack.output().splitlines() if "(Prometheus exporter)" in line)
    worker_metrics = metrics_line.split()[1]
    assert "jeffrey_emotion_ml_confidence" in httpx.get(worker_metrics).text


def test_forced_dream_run_moves_status_metrics_and_streams_events(stack: RunningStack) -> None:
    admin = cli_token(stack, "dreamer", "admin", "memories")
    texts = [f"{w} at the beach with sand and waves" for w in ("swimming", "surfing", "walking", "reading")]
    texts += [
        f"{w} in the kitchen, pasta and garlic sauce" for w in ("cooking", "baking", "tasting", "eating")
    ]
    assert (
        httpx.post(
            f"{stack.base}/api/v1/memories", json={"memories": [{"text": t} for t in texts]}, headers=admin
        ).status_code
        == 201
    )
    events: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{stack.base}/api/v1/events", headers=admin, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                if "run.finished" in events:
                    return

    import threading

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)  # let the stream subscribe before the run starts
    accepted = httpx.post(f"{stack.base}/api/v1/dream/run?force=true", headers=admin)
    assert accepted.status_code == 202
    run_url = f"{stack.base}{accepted.json()['status_url']}"
    eventually(
        lambda: httpx.get(run_url, headers=admin).json()["status"] == "succeeded",
        60,
        "dream run did not finish",
    )
    dreams = httpx.get(f"{stack.base}/api/v1/dreams", headers=admin).json()["items"]
    assert len(dreams) == 2 and {d["member_count"] for d in dreams} == {4}
    status = httpx.get(f"{stack.base}/api/v1/dream/status", headers=admin).json()
    assert status["runs"]["succeeded"] >= 1 and status["next_fire_at"]
    assert 'jeffrey_dream_runs_total{outcome="succeeded"}' in httpx.get(f"{stack.base}/metrics").text
    listener.join(timeout=20)
    assert events[:2] == ["run.started", "run.batch"] and events[-1] == "run.finished"


def test_infrastructure_smoke_script_passes(stack: RunningStack) -> None:
    env = {
        **os.environ,
        "API": stack.base,
        "FLOWER": stack.flower,
        "JEFFREY": f"{sys.executable} -m jeffrey_dev.cli.main",
    }
    env = {k: v for k, v in env.items() if not k.startswith("JEFFREY_")}
    env["JEFFREY_TOKEN"] = cli_token(stack, "smoke", "admin", "memories")["Authorization"].split(" ", 1)[1]
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test_infrastructure.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "infrastructure OK" in result.stdout and "forced dream run succeeded" in result.stdout
    broken = {**env, "FLOWER": "http://127.0.0.1:9"}
    failed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test_infrastructure.sh")],
        env=broken,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert failed.returncode != 0 and failed.stderr.startswith("FAIL flower")


def test_ctrl_c_stops_every_process_and_data_survives_a_restart(stack: RunningStack) -> None:
    alice = cli_token(stack, "alice")
    kept = httpx.post(
        f"{stack.base}/api/v1/memories", json={"text": "survives restarts"}, headers=alice
    ).json()
    children = _child_pids(stack.process.pid)
    assert len(children) >= 5  # redis, api, worker (+ pool), beat, flower
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=40) == 0
    eventually(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 20, "children outlived launcher"
    )
    assert "launcher| stopped" in stack.output()

    # Same var/ again: the memory is still there and the same secret still signs tokens.
    log = stack.var_dir.parent / "stack2.log"
    api_port = free_port()
    argv = [sys.executable, "-m", "jeffrey_dev.cli.main", "stack", "up", "--var-dir", str(stack.var_dir)]
    argv += ["--api-port", str(api_port), "--flower-port", "0", "--concurrency", "1"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "DATABASE_", "JEFFREY_", "FLOWER_"))
    }
    with log.open("w") as handle:
        again = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        eventually(
            lambda: "Jeffrey OS is up." in log.read_text() or again.poll() is not None, 120, "restart failed"
        )
        assert again.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() - started < 120
        got = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/memories/{kept['id']}", headers=alice)
        assert got.status_code == 200 and got.json()["text"] == "survives restarts"
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=40)
