"""The launcher's parts with real sockets and processes: the port probe agrees with how servers bind,
a dead child is started again with a backoff, a crash loop stops with the child's last lines, and the
CLIs refuse in one line when nothing says where the stack is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jeffrey_dev.stack import (
    CRASH_LOOP_DEATHS,
    RESTART_BACKOFF,
    ManagedProcess,
    Stack,
    StackOptions,
    port_is_free,
    wait_until,
)

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """What a fresh terminal has: no Jeffrey, Redis or database variables."""
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LC_ALL": "C.UTF-8",
        **extra,
    }


def _server_closes_first(port: int) -> socket.socket:
    """A listener on `port` whose accepted connection the server closes first (TIME-WAIT on `port`)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end goes to TIME-WAIT
    client.recv(1)  # sees EOF
    client.close()
    return listener


def test_port_probe_counts_time_wait_as_free_and_a_listener_as_taken() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = _server_closes_first(port)
    assert not port_is_free("127.0.0.1", port)  # still listening
    listener.close()
    assert port_is_free("127.0.0.1", port)  # only TIME-WAIT left: uvicorn would bind
    with socket.socket() as plain:  # what the old probe did (no SO_REUSEADDR) refuses the same port
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))


def test_dead_child_restarts_with_backoff_and_a_crash_loop_is_reported(tmp_path: Path) -> None:
    lines: list[str] = []
    stack = Stack(StackOptions(var_dir=tmp_path / "var"), out=lines.append)
    crashy = ManagedProcess("crashy", ["sh", "-c", "echo about to fail $$; exit 3"], clean_env(), "")
    stack.processes.append(crashy)
    now = 1000.0
    crashy.start(stack.out)
    for death in range(1, CRASH_LOOP_DEATHS):
        assert wait_until(lambda: not crashy.running(), timeout=30)
        assert stack.supervise(now) is None
        assert crashy.restart_at == now + RESTART_BACKOFF[death - 1]
        assert stack.supervise(now) is None and not crashy.running()  # not before its backoff
        now = crashy.restart_at
        assert stack.supervise(now) is None  # started again
        assert any("starting crashy again" in line for line in lines)
    assert wait_until(lambda: not crashy.running(), timeout=30)
    assert wait_until(lambda: len(crashy.tail) >= CRASH_LOOP_DEATHS, timeout=30)
    assert stack.supervise(now) is crashy
    stack.report_crash_loop(crashy)
    assert f"crashy died {CRASH_LOOP_DEATHS} times" in "\n".join(lines)
    assert sum("launcher|   about to fail" in line for line in lines) == CRASH_LOOP_DEATHS


def test_deaths_spread_over_more_than_a_minute_are_no_crash_loop(tmp_path: Path) -> None:
    stack = Stack(StackOptions(var_dir=tmp_path / "var"), out=lambda _line: None)
    crashy = ManagedProcess("crashy", ["sh", "-c", "exit 1"], clean_env(), "")
    stack.processes.append(crashy)
    crashy.start(stack.out)
    now = 0.0
    for _ in range(CRASH_LOOP_DEATHS * 2):
        assert wait_until(lambda: not crashy.running(), timeout=30)
        assert stack.supervise(now) is None
        now += 61.0
        assert stack.supervise(now) is None  # restarted
    crashy.reap_group()


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "celery"), "-A", "jeffrey_worker.app", "inspect", "ping"],
        [str(BIN / "celery"), "-A", "jeffrey_beat.app", "status"],
        [str(BIN / "jeffrey"), "dlq", "list"],
        [str(BIN / "jeffrey"), "env"],
        [str(BIN / "jeffrey"), "check", "beat"],
    ],
    ids=["celery-inspect", "celery-beat", "dlq-list", "env", "check-beat"],
)
def test_nothing_configured_refuses_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "var" / "stack.env") in lines[0] and "REDIS_URL" in lines[0]
