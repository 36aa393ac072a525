"""The CLIs against the stack booted as `make run` does, from a second terminal: each command runs as
a subprocess in the project folder (here a temporary one whose var/ the stack uses) with a clean
environment, no exports. Then the launcher's supervision: a SIGKILLed worker comes back while the API
keeps answering, and a stop with open connections is followed at once by a start on the same ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jeffrey_core.stack_env import read_stack_env
from jeffrey_dev.stack import find_redis_server, free_port
from tests.conftest import require
from tests.support.processes import ROOT, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """What a fresh terminal has: no Jeffrey, Redis, database or Flower variables."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8", **extra}


@dataclass
class Launcher:
    project: Path
    api_port: int
    flower_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def run(self, *argv: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """A command from the project folder, as typed in a second terminal."""
        return subprocess.run(
            [str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0], *argv[1:]],
            cwd=self.project,
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def start_launcher(project: Path, api_port: int, flower_port: int, log: Path) -> Launcher:
    """`make run` (`jeffrey stack up`), var/ under `project`, a clean environment; waits for the banner."""
    argv = [str(BIN / "jeffrey"), "stack", "up", "--var-dir", str(project / "var")]
    argv += ["--api-port", str(api_port), "--flower-port", str(flower_port), "--concurrency", "1"]
    with log.open("w") as handle:
        process = subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=handle, stderr=subprocess.STDOUT)
    launcher = Launcher(project, api_port, flower_port, process, log)
    eventually(
        lambda: "Jeffrey OS is up." in launcher.output() or process.poll() is not None,
        120,
        "stack did not start",
    )
    assert process.poll() is None, launcher.output()[-4000:]
    return launcher


def stop_launcher(launcher: Launcher) -> int:
    if launcher.process.poll() is None:
        launcher.process.send_signal(signal.SIGINT)
    try:
        return launcher.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        launcher.process.kill()
        return launcher.process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    require(find_redis_server() is not None, "redis-server is not installed")
    project = tmp_path_factory.mktemp("project")
    launcher = start_launcher(project, free_port(), free_port(), project / "stack.log")
    try:
        yield launcher
    finally:
        stop_launcher(launcher)


def pong(launcher: Launcher) -> bool:
    result = launcher.run("celery", "-A", "jeffrey_worker.app", "inspect", "ping", "-t", "3")
    return result.returncode == 0 and "pong" in result.stdout


def test_stack_env_is_private_and_names_this_stack(stack: Launcher) -> None:
    path = stack.project / "var" / "stack.env"
    assert path.stat().st_mode & 0o777 == 0o600
    values, why = read_stack_env(path)
    assert why is None and values["JEFFREY_STACK_PID"] == str(stack.process.pid)
    assert values["JEFFREY_API_URL"] == stack.base
    assert values["DATABASE_URL"] == f"sqlite:///{stack.project / 'var' / 'jeffrey.db'}"
    password = __import__("json").loads((stack.project / "var" / "dev-secrets.json").read_text())
    assert f":{password['redis_password']}@127.0.0.1:" in values["REDIS_URL"]
    banner = stack.output()
    assert "celery -A jeffrey_worker.app inspect ping" in banner and "jeffrey env" in banner


def test_celery_cli_inspects_the_stack_with_no_exports(stack: Launcher) -> None:
    eventually(lambda: pong(stack), 90, "celery inspect ping never got a pong")
    for command in ("active", "stats", "active_queues"):
        result = stack.run("celery", "-A", "jeffrey_worker.app", "inspect", command, "-t", "5")
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    queues = stack.run("celery", "-A", "jeffrey_worker.app", "inspect", "active_queues", "-t", "5").stdout
    assert all(f"'name': '{q}'" in queues for q in ("dream", "emotion", "default")), queues
    purged = stack.run("celery", "-A", "jeffrey_worker.app", "purge", "-Q", "dead_letter", "-f")
    assert purged.returncode == 0, purged.stderr
    beat_app = stack.run("celery", "-A", "jeffrey_beat.app", "status", "-t", "5")
    assert beat_app.returncode == 0 and "online" in beat_app.stdout, beat_app.stdout + beat_app.stderr


def test_every_jeffrey_subcommand_finds_the_stack(stack: Launcher) -> None:
    env = stack.run("jeffrey", "env", "--token")
    assert env.returncode == 0, env.stderr
    exported = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
    assert exported["JEFFREY_API_URL"] == stack.base and "@127.0.0.1:" in exported["REDIS_URL"]
    token = exported["JEFFREY_TOKEN"]
    assert httpx.get(f"{stack.base}/api/v1/memories", headers={"Authorization": f"Bearer {token}"}).is_success
    # The exports work for other tools: a shell that evals them reaches the stack's Redis by URL.
    ping = 'import os, redis; print(redis.Redis.from_url(os.environ["REDIS_URL"]).ping())'
    evaluated = stack.run("bash", "-c", f"eval \"$(jeffrey env)\" && python -c '{ping}'")
    assert evaluated.stdout.strip() == "True", evaluated.stderr

    diary = stack.project / "diary.jsonl"
    diary.write_text('{"text": "a walk by the river"}\n{"text": "coffee with Sam"}\n')
    imported = stack.run("jeffrey", "memories", "import", str(diary), "--user", "cli-user")
    assert imported.returncode == 0 and '"imported": 2' in imported.stdout, imported.stderr
    assert stack.run("jeffrey", "token", "create", "--user", "cli-user").stdout.count(".") == 2
    assert stack.run("jeffrey", "config", "check").returncode == 0
    assert stack.run("jeffrey", "migrate").returncode == 0
    eventually(lambda: stack.run("jeffrey", "check", "beat").returncode == 0, 60, "beat lock never seen")
    listed = stack.run("jeffrey", "dlq", "list")
    assert listed.returncode == 0 and "shown of" in listed.stderr, listed.stderr
    missing = stack.run("jeffrey", "dlq", "show", "no-such-letter")
    assert missing.returncode == 1 and "no dead letter" in missing.stderr
    assert stack.run("jeffrey", "dlq", "replay", "--dry-run").returncode == 0
    assert stack.run("jeffrey", "dlq", "purge", "--yes").returncode == 0


def test_the_environment_wins_over_the_file(stack: Launcher) -> None:
    elsewhere = stack.run("jeffrey", "dlq", "list", REDIS_URL="redis://127.0.0.1:9/0")
    assert elsewhere.returncode == 1
    assert (
        elsewhere.stderr.count("\n") == 1
        and "cannot reach Redis at redis://127.0.0.1:9/0" in elsewhere.stderr
    )


def _worker_pid(launcher: Launcher) -> int:
    """The worker's main process: the launcher's child running `celery ... worker`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher.process.pid and b"jeffrey_worker.app" in cmdline and b"worker" in cmdline:
            return int(entry.name)
    raise AssertionError("no worker process under the launcher")


def test_killed_worker_comes_back_and_the_api_keeps_answering(stack: Launcher) -> None:
    eventually(lambda: pong(stack), 90, "worker not up before the kill")
    victim = _worker_pid(stack)
    os.kill(victim, signal.SIGKILL)
    answered: list[int] = []
    eventually(
        lambda: (
            answered.append(httpx.get(f"{stack.base}/healthz", timeout=5).status_code) is None
            and _worker_restarted(stack, victim)
        ),
        90,
        "the worker did not come back",
        interval=0.5,
    )
    assert answered and set(answered) == {200}
    eventually(lambda: pong(stack), 90, "the restarted worker never answered celery inspect ping")
    assert stack.process.poll() is None
    assert "worker exited (status -9); starting it again" in stack.output()


def _worker_restarted(launcher: Launcher, old_pid: int) -> bool:
    try:
        return _worker_pid(launcher) != old_pid
    except AssertionError:
        return False


def test_stop_with_open_connections_then_start_again_at_once(stack: Launcher) -> None:
    token = stack.run("jeffrey", "token", "create", "--user", "reconnect").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    stream_open = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{stack.base}/api/v1/events", headers=headers, timeout=60) as response:
                stream_open.set()
                for _ in response.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # the server going away ends the stream

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert stream_open.wait(30)
    with httpx.Client(base_url=stack.base, headers=headers) as client:  # keep-alive connections
        for _ in range(5):
            assert client.get("/api/v1/memories").status_code == 200
        assert stop_launcher(stack) == 0
    assert not (stack.project / "var" / "stack.env").exists()
    listener.join(timeout=30)

    again = start_launcher(stack.project, stack.api_port, stack.flower_port, stack.project / "stack2.log")
    try:
        assert httpx.get(f"{again.base}/healthz").status_code == 200
        flower = f"http://127.0.0.1:{again.flower_port}/healthcheck"
        eventually(lambda: _answers(flower), 60, "flower did not come back on its port")
        eventually(lambda: pong(again), 90, "no worker after the restart")
    finally:
        assert stop_launcher(again) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
