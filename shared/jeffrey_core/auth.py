"""JWT access tokens: minted by the CLI, verified by the API; HS256 signed with JEFFREY_SECRET_KEY."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

ISSUER = "jeffrey-os"
ALGORITHM = "HS256"


class Scope(StrEnum):
    MEMORIES = "memories"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id from the token and the scopes it grants."""

    user_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


class TokenError(Exception):
    """A token that cannot be trusted; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mint_token(
    secret: str, user_id: str, scopes: list[str], ttl_seconds: int, now: float | None = None
) -> str:
    """A signed token for `user_id` with `scopes`, valid `ttl_seconds` from now."""
    if not user_id:
        raise ValueError("user id must not be empty")
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "scopes": sorted(set(scopes)),
        "iss": ISSUER,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    """The principal a token names, or TokenError saying why it is refused."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["sub", "exp", "iat"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "the access token has expired; mint a new one") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("invalid_token", f"the access token is not valid: {exc}") from exc
    scopes = claims.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise TokenError("invalid_token", "the access token's scopes claim must be a list of strings")
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not user_id:
        raise TokenError("invalid_token", "the access token's subject must be a non-empty string")
    return Principal(user_id=user_id, scopes=frozenset(scopes))
