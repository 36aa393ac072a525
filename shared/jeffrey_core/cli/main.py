"""`jeffrey`: mint tokens, migrate the database, check settings, run the embedded stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from jeffrey_core.auth import Scope, mint_token
from jeffrey_core.settings import Settings, get_settings

app = typer.Typer(help="Jeffrey OS dream infrastructure.", no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="Access tokens for the API.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
check_app = typer.Typer(help="Health checks for container orchestrators.", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded stack that `make run` starts.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")
app.add_typer(check_app, name="check")


def _settings() -> Settings:

    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", "-u", help="User id the token acts for.")],
    scope: Annotated[
        list[Scope] | None, typer.Option("--scope", "-s", help="Scope to grant; repeat for several.")
    ] = None,
    ttl: Annotated[
        int | None, typer.Option(help="Lifetime in seconds (default JEFFREY_TOKEN_TTL_SECONDS).")
    ] = None,
    var_dir: Annotated[
        Path,
        typer.Option(help="Embedded stack folder whose dev secret is used when JEFFREY_SECRET_KEY is unset."),
    ] = Path("var"),
) -> None:
    """Print a signed access token, and only the token, on stdout."""
    settings = _settings()
    try:
        secret = settings.require_secret_key()
    except RuntimeError as exc:
        dev_secrets = var_dir / "dev-secrets.json"
        if settings.is_prod or not dev_secrets.exists():
            typer.echo(f"{exc} (nor is there a {dev_secrets} from `make run`)", err=True)
            raise typer.Exit(2) from exc
        from jeffrey_core.stack import DevSecrets

        secret = DevSecrets.load_or_create(var_dir).secret_key
    scopes = [s.value for s in (scope or [Scope.MEMORIES])]
    typer.echo(mint_token(secret, user, scopes, ttl or settings.security.token_ttl_seconds))


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

    settings = _settings()
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
    from jeffrey_core.stack import StackOptions, run_stack

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
