"""How a second terminal finds the embedded stack: `make run` writes its connection settings to
`var/stack.env` (mode 600) while it runs, and `get_settings()` reads that file for what the
environment does not say.

Rules (README, "Celery CLI"):
- REDIS_URL in the environment means "that stack, not this one": the file is ignored altogether,
  so a half-set environment never mixes with the file (e.g. a test's Redis with the stack's password).
- Otherwise each variable of the file fills the same variable when the environment does not set it.
- The file names the launcher's pid; once that process is gone the file is stale and ignored.
- JEFFREY_STACK_ENV names another file; set to the empty string it turns the lookup off.

The CLI and the Celery apps call `configured_settings()`: with neither REDIS_URL (environment or
`.env`) nor a live stack file they refuse in one line instead of reading whatever Redis answers on
6379. The services in compose and every test set REDIS_URL, so they never see the file.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from jeffrey_core.settings import Settings, get_settings

STACK_ENV_FILE = Path("var") / "stack.env"
STACK_ENV_VARIABLE = "JEFFREY_STACK_ENV"
STACK_PID_VARIABLE = "JEFFREY_STACK_PID"
# The variables `make run` writes, in order; `jeffrey env` prints the same ones.
STACK_VARIABLES = ("REDIS_URL", "DATABASE_URL", "JEFFREY_API_URL", "FLOWER_URL")

_loaded_from: Path | None = None


class StackNotConfiguredError(RuntimeError):
    """Nothing says where Redis is; the message is one line that says what to do."""


def stack_env_path() -> Path | None:
    """The file to look at (relative to the current folder), or None when JEFFREY_STACK_ENV is ''."""
    configured = os.environ.get(STACK_ENV_VARIABLE)
    if configured is None:
        return STACK_ENV_FILE
    return Path(configured) if configured.strip() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_stack_env(path: Path) -> tuple[dict[str, str], str | None]:
    """The file's variables and None, or ({}, why it is not usable)."""
    if not path.is_file():
        return {}, f"there is no {path.resolve()}"
    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    pid = values.get(STACK_PID_VARIABLE, "")
    if not pid.isdigit() or not pid_alive(int(pid)):
        return {}, f"{path.resolve()} is stale (the `make run` that wrote it, pid {pid or '?'}, is gone)"
    return values, None


def load_stack_env() -> Path | None:
    """Fill unset variables from a live stack file (see the module rules); returns the file used."""
    global _loaded_from
    path = stack_env_path()
    if "REDIS_URL" in os.environ or path is None:
        return None
    values, _ = read_stack_env(path)
    if not values:
        return None
    for key, value in values.items():
        os.environ.setdefault(key, value)
    _loaded_from = path
    return path


def loaded_from() -> Path | None:
    """The stack file this process took its settings from, if any."""
    return _loaded_from


def not_configured_message() -> str:
    path = stack_env_path()
    if path is None:
        looked = f"{STACK_ENV_VARIABLE} is empty"
    else:
        looked = read_stack_env(path)[1] or f"{path.resolve()} was not read"
    return (
        f"no Jeffrey stack configured: REDIS_URL is not set and {looked}. Start `make run` in the "
        f"project folder, or point elsewhere with REDIS_URL (+ REDIS_PASSWORD) or "
        f"{STACK_ENV_VARIABLE}=path/to/stack.env"
    )


def configured_settings() -> Settings:
    """`get_settings()`, refusing (StackNotConfiguredError) when nothing says where Redis is."""
    settings = get_settings()
    if "url" not in settings.redis.model_fields_set:
        raise StackNotConfiguredError(not_configured_message())
    return settings


def settings_or_exit() -> Settings:
    """For entry points (the Celery apps): one line on stderr and exit status 2 instead of a traceback."""
    try:
        return configured_settings()
    except StackNotConfiguredError as exc:
        print(f"jeffrey: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def render_stack_env(values: dict[str, str], pid: int) -> str:
    """The file's text: KEY='value' lines that both python-dotenv and a POSIX shell read."""
    lines = ["# Written by `make run` (jeffrey stack up) while it runs; removed when it stops."]
    lines += [f"{key}={shlex.quote(values[key])}" for key in STACK_VARIABLES if key in values]
    lines.append(f"{STACK_PID_VARIABLE}={pid}")
    return "\n".join(lines) + "\n"


def write_stack_env(path: Path, values: dict[str, str], pid: int) -> None:
    """Write the file with mode 600 from the start (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render_stack_env(values, pid))
    os.replace(tmp, path)


def remove_stack_env(path: Path, pid: int) -> None:
    """Remove the file if it is still ours (a later launcher may have replaced it)."""
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    if values.get(STACK_PID_VARIABLE) == str(pid):
        path.unlink(missing_ok=True)
