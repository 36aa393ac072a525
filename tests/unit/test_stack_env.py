"""How settings find a running `make run` (jeffrey_core.stack_env): file rules, precedence, staleness."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jeffrey_core import stack_env
from jeffrey_core.settings import get_settings

pytestmark = pytest.mark.unit

CONNECTION = ("REDIS_URL", "REDIS_PASSWORD", "DATABASE_URL", "JEFFREY_API_URL", "FLOWER_URL")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder as the current directory, with none of the connection variables set."""
    monkeypatch.chdir(tmp_path)
    for name in (*CONNECTION, stack_env.STACK_ENV_VARIABLE, stack_env.STACK_PID_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(stack_env, "_loaded_from", None)
    get_settings.cache_clear()
    before = set(os.environ)
    yield tmp_path
    get_settings.cache_clear()
    for name in set(os.environ) - before:  # what load_stack_env put there
        os.environ.pop(name, None)


STACK_VALUES = {
    "REDIS_URL": "redis://:s3cret@127.0.0.1:40001/0",
    "DATABASE_URL": "sqlite:////tmp/some folder/jeffrey.db",
    "JEFFREY_API_URL": "http://127.0.0.1:8000",
}


def _write(path: Path, pid: int, **values: str) -> None:
    stack_env.write_stack_env(path, {**STACK_VALUES, **values}, pid)


def test_written_file_is_private_and_read_back_exactly(project: Path) -> None:
    path = project / "var" / "stack.env"
    _write(path, os.getpid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values, why = stack_env.read_stack_env(path)
    assert why is None
    assert {k: values[k] for k in STACK_VALUES} == STACK_VALUES  # the space in the path survives


def test_settings_come_from_the_file_when_the_environment_is_silent(project: Path) -> None:
    _write(project / "var" / "stack.env", os.getpid())
    settings = stack_env.configured_settings()
    assert settings.redis.dsn() == STACK_VALUES["REDIS_URL"]
    assert settings.database.url == STACK_VALUES["DATABASE_URL"]
    assert stack_env.loaded_from() == Path("var/stack.env")


def test_environment_wins_per_variable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(project / "var" / "stack.env", os.getpid())
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    settings = stack_env.configured_settings()
    assert settings.database.url == "sqlite:///elsewhere.db"
    assert settings.redis.dsn() == STACK_VALUES["REDIS_URL"]


def test_redis_url_in_the_environment_turns_the_file_off(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(project / "var" / "stack.env", os.getpid())
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7000/3")
    settings = stack_env.configured_settings()
    assert settings.redis.dsn() == "redis://127.0.0.1:7000/3"  # no password borrowed from the file
    assert settings.database.url == "sqlite:///var/jeffrey.db"


def test_stale_file_is_ignored_and_the_refusal_says_so(project: Path) -> None:
    dead = _a_dead_pid()
    _write(project / "var" / "stack.env", dead)
    with pytest.raises(stack_env.StackNotConfiguredError) as refused:
        stack_env.configured_settings()
    message = str(refused.value)
    assert "\n" not in message and "stale" in message and str(dead) in message
    assert "REDIS_URL" in message and stack_env.STACK_ENV_VARIABLE in message


def test_nothing_configured_refuses_naming_where_it_looked(project: Path) -> None:
    with pytest.raises(stack_env.StackNotConfiguredError) as refused:
        stack_env.configured_settings()
    assert str(project / "var" / "stack.env") in str(refused.value)


def test_dotenv_redis_url_counts_as_configured(project: Path) -> None:
    (project / ".env").write_text("REDIS_URL=redis://127.0.0.1:6380/0\n")
    assert stack_env.configured_settings().redis.url == "redis://127.0.0.1:6380/0"


def test_jeffrey_stack_env_points_elsewhere_or_turns_the_lookup_off(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = project / "elsewhere" / "stack.env"
    _write(other, os.getpid())
    monkeypatch.setenv(stack_env.STACK_ENV_VARIABLE, str(other))
    assert stack_env.configured_settings().redis.dsn() == STACK_VALUES["REDIS_URL"]
    get_settings.cache_clear()
    for name in CONNECTION:
        monkeypatch.delenv(name, raising=False)
    _write(project / "var" / "stack.env", os.getpid())
    monkeypatch.setenv(stack_env.STACK_ENV_VARIABLE, "")
    with pytest.raises(stack_env.StackNotConfiguredError):
        stack_env.configured_settings()


def test_remove_only_removes_our_own_file(project: Path) -> None:
    path = project / "var" / "stack.env"
    _write(path, os.getpid())
    stack_env.remove_stack_env(path, os.getpid() + 1)
    assert path.exists()
    stack_env.remove_stack_env(path, os.getpid())
    assert not path.exists()


def test_redacted_url_hides_the_password() -> None:
    assert stack_env.redacted_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert stack_env.redacted_url("redis://h:1/0") == "redis://h:1/0"


def _a_dead_pid() -> int:
    pid = 4_000_000
    while stack_env.pid_alive(pid):
        pid -= 1
    return pid


def test_the_cli_reads_the_file_for_every_command_but_stack_up(project: Path) -> None:
    from typer.testing import CliRunner

    from jeffrey_dev.cli.main import app

    _write(project / "var" / "stack.env", os.getpid())
    runner = CliRunner()
    assert runner.invoke(app, ["stack", "up", "--help"]).exit_code == 0
    assert "DATABASE_URL" not in os.environ  # a second launcher never inherits the first one's database
    assert runner.invoke(app, ["dlq", "--help"]).exit_code == 0
    assert os.environ["DATABASE_URL"] == STACK_VALUES["DATABASE_URL"]
