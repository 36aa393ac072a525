"""`jeffrey token revoke`: the CLI side of revocation (Redis directly, as the API does) and its audit row."""

from __future__ import annotations

import time

import typer

from jeffrey_core.auth import TokenError, key_ring, verify_token
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.revocation import Revocation, revoke
from jeffrey_core.settings import Settings
from jeffrey_core.store.audit import AuditAction, record_audit

CLI_ACTOR = "cli"


def revocation_target(settings: Settings, token_or_jti: str, exp: int | None) -> tuple[str, int]:
    """The jti and expiry to revoke: read from the token (signature checked, expiry not), or the jti
    given with `exp`, by default the latest moment any token minted now could still be alive."""
    max_ttl = settings.security.token_max_ttl_seconds
    if token_or_jti.count(".") == 2:  # a JWT: header.claims.signature
        if exp is not None:
            raise typer.BadParameter("--exp goes with a jti; a token carries its own")
        try:
            principal = verify_token(
                key_ring(settings.security), token_or_jti, max_ttl_seconds=max_ttl, verify_exp=False
            )
        except (TokenError, RuntimeError) as exc:
            raise typer.BadParameter(f"cannot read this token: {exc}") from exc
        return principal.jti, principal.expires_at
    latest = int(time.time()) + max_ttl
    return token_or_jti, latest if exp is None else min(exp, latest)


def revoke_from_cli(settings: Settings, token_or_jti: str, exp: int | None) -> Revocation:
    """Revoke in Redis (exit 1 when Redis is unreachable), then append the audit row (a warning when the
    database cannot take it: the revocation stands)."""
    from jeffrey_core.redis_client import create_sync_redis

    jti, expires_at = revocation_target(settings, token_or_jti, exp)
    client = create_sync_redis(settings.redis)
    try:
        result = revoke(client, RedisKeys(settings.redis.key_prefix), jti, expires_at)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except Exception as exc:
        typer.echo(f"redis unreachable, nothing revoked: {exc.__class__.__name__}", err=True)
        raise typer.Exit(1) from exc
    finally:
        client.close()
    _audit(settings, jti)
    return result


def _audit(settings: Settings, jti: str) -> None:
    from jeffrey_core.store.engine import create_db_engine, create_session_factory

    engine = create_db_engine(settings.database)
    try:
        with create_session_factory(engine)() as session:
            record_audit(session, CLI_ACTOR, AuditAction.TOKEN_REVOKE, jti, None)
            session.commit()
    except Exception as exc:
        typer.echo(
            f"warning: revoked, but the audit row was not written ({exc.__class__.__name__})", err=True
        )
    finally:
        engine.dispose()
