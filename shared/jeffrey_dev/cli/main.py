"""`jeffrey`: mint tokens, migrate the database, check settings, run the embedded stack.

From a second terminal in the project folder every command finds a running `make run` through
var/stack.env (jeffrey_core.stack_env); the environment wins over the file. Commands that need Redis
or the API refuse in one line when nothing says where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from jeffrey_core.auth import KeyRing, Scope, key_ring, mint_token
from jeffrey_core.settings import Settings, get_settings
from jeffrey_core.stack_env import StackNotConfiguredError, configured_settings, load_stack_env
from jeffrey_dev.cli.export import export as export_command
from jeffrey_dev.cli.options import ApiOption, TokenOption, VarDirOption

app = typer.Typer(help="Jeffrey OS dream infrastructure.", no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="Access tokens for the API.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
check_app = typer.Typer(help="Health checks for container orchestrators.", no_args_is_help=True)
memories_app = typer.Typer(help="Memories, through the API.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="The dead-letter queue (straight from Redis, as the API does).", no_args_is_help=True
)
stack_app = typer.Typer(help="The embedded stack that `make run` starts.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")
app.add_typer(check_app, name="check")
app.add_typer(memories_app, name="memories")
app.add_typer(dlq_app, name="dlq")
app.command("export")(export_command)


@app.callback()
def _find_stack(ctx: typer.Context) -> None:
    # Before any option is parsed, so options read from the environment (JEFFREY_API_URL) see the file.
    # Never for `stack up`: a second launcher must not inherit the first one's database.
    if ctx.invoked_subcommand != "stack":
        load_stack_env()


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def _connected_settings() -> Settings:
    """Settings for commands that talk to Redis: one line and exit 2 when nothing says where it is."""
    try:
        return configured_settings()
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    except StackNotConfiguredError as exc:
        typer.echo(f"jeffrey: {exc}", err=True)
        raise typer.Exit(2) from exc


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", "-u", help="User id the token acts for.")],
    scope: Annotated[
        list[Scope] | None, typer.Option("--scope", "-s", help="Scope to grant; repeat for several.")
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            min=1, help="Lifetime in seconds (default JEFFREY_TOKEN_TTL_SECONDS, at most the maximum TTL)."
        ),
    ] = None,
    var_dir: Annotated[
        Path,
        typer.Option(help="Embedded stack folder whose dev secret is used when JEFFREY_SECRET_KEY is unset."),
    ] = Path("var"),
) -> None:
    """Print a signed access token, and only the token, on stdout."""
    settings = _settings()
    scopes = [s.value for s in (scope or [Scope.MEMORIES])]
    try:
        token = mint_token(
            _signing_ring(settings, var_dir),
            user,
            scopes,
            ttl or settings.security.token_ttl_seconds,
            max_ttl_seconds=settings.security.token_max_ttl_seconds,
        )
    except ValueError as exc:
        typer.echo(f"cannot mint: {exc} (JEFFREY_TOKEN_MAX_TTL_SECONDS)", err=True)
        raise typer.Exit(2) from exc
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    token_or_jti: Annotated[str, typer.Argument(help="The token itself, or its jti.")],
    exp: Annotated[
        int | None,
        typer.Option(help="With a jti: the token's exp (epoch s); default now + the maximum TTL."),
    ] = None,
) -> None:
    """Refuse a token on every API replica until it would have expired (a key in Redis) and record the
    revocation in the audit log (actor `cli`)."""
    from jeffrey_dev.cli.tokens import revoke_from_cli

    revocation = revoke_from_cli(_settings(), token_or_jti, exp)
    _print_json(revocation.as_dict())


@app.command()
def migrate() -> None:
    """Apply database migrations to DATABASE_URL (idempotent)."""
    from jeffrey_core.store.migrate import upgrade

    settings = _settings()
    upgrade(settings.database.url)
    typer.echo("database is at the latest revision", err=True)


@config_app.command("check")
def config_check() -> None:
    """Validate the settings; exits non-zero naming what is wrong (prod mode refuses weak secrets)."""
    settings = _settings()
    typer.echo(f"settings OK (SECURITY_MODE={settings.security.mode})", err=True)


@check_app.command("beat")
def check_beat() -> None:
    """Exit 0 when a beat holds the scheduler lock in Redis (compose healthcheck of `beat`)."""
    from jeffrey_core.redis_client import create_sync_redis
    from jeffrey_core.redis_keys import RedisKeys

    settings = _connected_settings()
    client = create_sync_redis(settings.redis)
    try:
        held = bool(client.exists(RedisKeys(settings.redis.key_prefix).redbeat_lock()))
    except Exception as exc:
        typer.echo(f"redis unreachable: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        client.close()
    if not held:
        typer.echo("no beat holds the scheduler lock", err=True)
        raise typer.Exit(1)
    typer.echo("beat holds the scheduler lock", err=True)


@memories_app.command("import")
def memories_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .jsonl or .csv file.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Whose memories these are.")],
    api: ApiOption = None,
    token: TokenOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=500)] = 200,
    var_dir: VarDirOption = Path("var"),
) -> None:
    """Stream FILE through the API in batches, with a progress bar and a summary (JSON on stdout)."""
    import json

    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jeffrey_core.auth import verify_token
    from jeffrey_dev.cli.importer import count_lines, import_file

    api = api or _api_url()
    if token is None:
        token = _mint_for(user, var_dir)
        acting_for = None
    else:
        settings = _settings()
        try:
            principal = verify_token(key_ring(settings.security), token, verify_exp=False)
            acting_for = None if principal.user_id == user else user
        except Exception:
            acting_for = user  # cannot read the token here: let the API decide
    with (
        httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
        Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        ) as progress,
    ):
        task = progress.add_task("import", total=count_lines(file))
        summary = import_file(file, client, acting_for, batch_size, lambda n: progress.advance(task, n))
    typer.echo(json.dumps(summary.as_dict(), indent=2))
    typer.echo(
        f"imported {summary.imported}, duplicates {summary.duplicates}, rejected {len(summary.rejected)}",
        err=True,
    )
    for line, reason in summary.rejected[:20]:
        typer.echo(f"  line {line}: {reason}", err=True)
    if summary.aborted:
        typer.echo(f"import stopped: {summary.aborted}", err=True)
        raise typer.Exit(1)


def _api_url() -> str:
    """JEFFREY_API_URL (the environment, or var/stack.env of a running `make run`), else refuse."""
    import os

    url = os.environ.get("JEFFREY_API_URL")
    if not url:
        _connected_settings()  # says what is missing when no stack is found
        typer.echo("jeffrey: no API address: pass --api or set JEFFREY_API_URL", err=True)
        raise typer.Exit(2)
    return url


def _signing_ring(settings: Settings, var_dir: Path) -> KeyRing:
    """The settings' key ring (JEFFREY_SECRET_KEY, JEFFREY_KEY_ID, JEFFREY_VERIFY_KEYS), or in dev mode
    one made of the secret `make run` generated under var/."""
    if settings.security.secret_key is not None:
        try:
            return key_ring(settings.security)
        except RuntimeError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
    return KeyRing.of(_signing_secret(settings, var_dir))


def _signing_secret(settings: Settings, var_dir: Path) -> str:
    """JEFFREY_SECRET_KEY, or in dev mode the secret `make run` generated under var/."""
    try:
        return settings.require_secret_key()
    except RuntimeError as exc:
        dev_secrets = var_dir / "dev-secrets.json"
        if settings.is_prod or not dev_secrets.exists():
            typer.echo(f"{exc} (nor is there a {dev_secrets} from `make run`)", err=True)
            raise typer.Exit(2) from exc
        from jeffrey_dev.stack import DevSecrets

        return DevSecrets.load_or_create(var_dir).secret_key


def _mint_for(user: str, var_dir: Path) -> str:
    return mint_token(_signing_ring(_settings(), var_dir), user, ["memories"], 3600)


def _dead_letters() -> Any:
    from jeffrey_core.celery_factory import create_celery
    from jeffrey_core.dlq import DeadLetterQueue

    settings = _connected_settings()
    return DeadLetterQueue(_reachable_redis(settings), create_celery(settings, main="jeffrey-cli"))


def _reachable_redis(settings: Settings) -> Any:
    """A Redis client that answered PING, or one line naming the address tried and exit 1."""
    import redis

    from jeffrey_core.redis_client import create_sync_redis
    from jeffrey_core.stack_env import loaded_from, redacted_url

    client = create_sync_redis(settings.redis)
    try:
        client.ping()
    except redis.RedisError as exc:
        source = f" (from {loaded_from()})" if loaded_from() else ""
        typer.echo(
            f"jeffrey: cannot reach Redis at {redacted_url(settings.redis.dsn())}{source}: "
            f"{str(exc).rstrip('.')}; is the stack running? (REDIS_URL or JEFFREY_STACK_ENV point elsewhere)",
            err=True,
        )
        raise typer.Exit(1) from exc
    return client


def _print_json(value: Any) -> None:
    import json

    typer.echo(json.dumps(value, indent=2, default=str))


@dlq_app.command("list")
def dlq_list(
    task: Annotated[str | None, typer.Option(help="Only this task name.")] = None,
    error_type: Annotated[str | None, typer.Option(help="Only this error type.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Dead letters, newest first (id, task, error, attempts, when)."""
    items, total = _dead_letters().records(task, error_type, limit, 0)
    for r in items:
        typer.echo(
            f"{r['id']}  {r['task']}  {r['error_type']}: {r['error_message'][:60]}  attempts={r['attempts']}"
        )
    typer.echo(f"{len(items)} shown of {total}", err=True)


@dlq_app.command("show")
def dlq_show(record_id: str) -> None:
    """One dead letter as JSON (with its traceback)."""
    record = _dead_letters().get(record_id)
    if record is None:
        typer.echo(f"no dead letter {record_id}", err=True)
        raise typer.Exit(1)
    _print_json(record)


@dlq_app.command("replay")
def dlq_replay(
    record_id: Annotated[
        str | None, typer.Argument(help="One id; omit to replay every match of the filters.")
    ] = None,
    task: Annotated[str | None, typer.Option()] = None,
    error_type: Annotated[str | None, typer.Option()] = None,
    dry_run: Annotated[bool, typer.Option(help="Only say what would be replayed.")] = False,
) -> None:
    """Re-publish to the original queue; the dead letter is removed only once re-published."""
    queue = _dead_letters()
    if record_id:
        result = queue.replay(record_id, dry_run)
        if result is None:
            typer.echo(f"no dead letter {record_id}", err=True)
            raise typer.Exit(1)
        _print_json(result)
    else:
        _print_json(queue.replay_matching(task, error_type, dry_run))


@dlq_app.command("purge")
def dlq_purge(
    older_than: Annotated[
        float | None, typer.Option(help="Only entries older than this many seconds.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters."""
    if not yes:
        typer.confirm("Delete dead letters?", abort=True)
    typer.echo(f"purged {_dead_letters().purge(older_than)}")


@app.command("env")
def env(
    token: Annotated[
        bool, typer.Option("--token", help="Also export JEFFREY_TOKEN, an admin token valid 24 h.")
    ] = False,
    var_dir: Annotated[Path, typer.Option(help="Embedded stack folder (for its dev secret).")] = Path("var"),
) -> None:
    """Print `export` lines for the stack's addresses (eval "$(jeffrey env)"), for other tools."""
    import os
    import shlex

    from jeffrey_core.stack_env import STACK_VARIABLES

    settings = _connected_settings()
    values = {"REDIS_URL": settings.redis.dsn(), "DATABASE_URL": settings.database.url}
    values |= {k: os.environ[k] for k in STACK_VARIABLES if k not in values and os.environ.get(k)}
    if token:
        values["JEFFREY_TOKEN"] = mint_token(
            _signing_secret(settings, var_dir), "admin", ["admin", "memories"], 24 * 3600
        )
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@stack_app.command("up")
def stack_up(
    var_dir: Annotated[Path, typer.Option(help="Where data, logs and generated dev secrets live.")] = Path(
        "var"
    ),
    host: Annotated[str, typer.Option(help="Interface the API and Flower listen on.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="API port.")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port (0: do not start Flower).")] = 5555,
    reload: Annotated[bool, typer.Option(help="Restart API and workers on code changes.")] = False,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Start Redis, migrate SQLite, then api + worker + beat + flower with prefixed logs; Ctrl-C stops all."""
    from jeffrey_dev.stack import StackOptions, run_stack

    options = StackOptions(
        var_dir=var_dir.resolve(),
        host=host,
        api_port=api_port,
        flower_port=flower_port,
        reload=reload,
        concurrency=concurrency,
    )
    raise typer.Exit(run_stack(options))


if __name__ == "__main__":
    app()
