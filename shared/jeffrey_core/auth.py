"""JWT access tokens: minted by the CLI, verified by the API; HS256 with a key ring.

A token is signed with one key (JEFFREY_SECRET_KEY, named in the `kid` header) and verified with
whichever key its `kid` names among the accepted ones (the signing key and JEFFREY_VERIFY_KEYS), so a
key can be rotated without killing every token at once. Every token carries `iss`, `aud`, `sub`,
`scopes`, `iat`, `exp` and a `jti` (what revocation names); its lifetime `exp - iat` is bounded at
mint and at verify. Revocation itself lives in Redis (`jeffrey_core.revocation`).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import jwt

from jeffrey_core.settings import SecuritySettings

ISSUER = "jeffrey-os"
AUDIENCE = "jeffrey-api"
ALGORITHM = "HS256"
MAX_SUBJECT_LENGTH = 128  # the user_id columns
MAX_JTI_LENGTH = 64
DEFAULT_MAX_TTL_SECONDS = 30 * 24 * 3600
KID_SHAPE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti"]


class Scope(StrEnum):
    MEMORIES = "memories"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id from the token, the scopes it grants, and the token's id and expiry."""

    user_id: str
    scopes: frozenset[str]
    jti: str = ""
    expires_at: int = 0

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


class TokenError(Exception):
    """A token that cannot be trusted; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def key_id(secret: str) -> str:
    """The default `kid` of a secret: a short fingerprint, so a rotated-in key names itself.

    Publishing 48 bits of SHA-256 of a high-entropy secret tells nothing the HMAC signature on every
    token does not already (production refuses low-entropy secrets)."""
    return "k-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


# eq=False: a ring is hashed by identity (its key map is a dict), so it can key the verified-token cache.
@dataclass(frozen=True, eq=False)
class KeyRing:
    """One signing key (`signing_kid`) and every key accepted for verification, by `kid`."""

    signing_kid: str
    signing_secret: str
    accepted: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, secret: str, kid: str | None = None, previous: Mapping[str, str] | None = None) -> KeyRing:
        """A ring signing with `secret` (named `kid`, default its fingerprint), also accepting `previous`."""
        kid = kid or key_id(secret)
        accepted = dict(previous or {})
        if kid in accepted and accepted[kid] != secret:
            raise ValueError(f"key id {kid!r} names two different keys")
        accepted[kid] = secret
        return cls(kid, secret, accepted)

    def secret_for(self, kid: object) -> str:
        if not isinstance(kid, str) or kid not in self.accepted:
            raise TokenError(
                "invalid_token",
                "the access token's kid names no key this API accepts (rotated out, or forged)",
            )
        return self.accepted[kid]


def parse_verify_keys(raw: str) -> dict[str, str]:
    """JEFFREY_VERIFY_KEYS: comma-separated `kid:secret` entries (or a bare secret, named by its
    fingerprint). Errors name the entry's position, never its value."""
    keys: dict[str, str] = {}
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        kid, colon, secret = entry.partition(":")
        if not colon:
            kid, secret = key_id(entry), entry
        if not KID_SHAPE.match(kid) or not secret:
            raise ValueError(f"JEFFREY_VERIFY_KEYS entry {position} is not kid:secret (kid: [A-Za-z0-9._-])")
        if kid in keys:
            raise ValueError(f"JEFFREY_VERIFY_KEYS entry {position} repeats a key id")
        keys[kid] = secret
    return keys


def key_ring(security: SecuritySettings) -> KeyRing:
    """The ring the settings describe; RuntimeError naming the variable when they do not describe one."""
    if security.secret_key is None or not security.secret_key.get_secret_value():
        raise RuntimeError("JEFFREY_SECRET_KEY is not set; see .env.example")
    previous = security.verify_keys.get_secret_value() if security.verify_keys else ""
    return _cached_ring(security.secret_key.get_secret_value(), security.key_id, previous)


@lru_cache(maxsize=8)
def _cached_ring(secret: str, kid: str | None, previous: str) -> KeyRing:
    try:
        return KeyRing.of(secret, kid, parse_verify_keys(previous))
    except ValueError as exc:
        raise RuntimeError(f"{exc} (JEFFREY_KEY_ID / JEFFREY_VERIFY_KEYS)") from exc


def _ring(keys: KeyRing | str) -> KeyRing:
    return KeyRing.of(keys) if isinstance(keys, str) else keys


def mint_token(
    keys: KeyRing | str,
    user_id: str,
    scopes: list[str],
    ttl_seconds: int,
    now: float | None = None,
    *,
    max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
) -> str:
    """A token for `user_id` with `scopes`, valid `ttl_seconds` from now, signed with the ring's signing
    key (a bare secret is a ring of one key). Refuses what verification would refuse."""
    if not user_id or len(user_id) > MAX_SUBJECT_LENGTH:
        raise ValueError(f"user id must be 1 to {MAX_SUBJECT_LENGTH} characters")
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    if not 0 < ttl_seconds <= max_ttl_seconds:
        raise ValueError(f"token lifetime must be 1 to {max_ttl_seconds} seconds (the maximum TTL)")
    ring = _ring(keys)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "scopes": sorted(set(scopes)),
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, ring.signing_secret, algorithm=ALGORITHM, headers={"kid": ring.signing_kid})


def verify_token(
    keys: KeyRing | str,
    token: str,
    *,
    max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
    verify_exp: bool = True,
) -> Principal:
    """The principal a token names, or TokenError saying why it is refused. Revocation is not checked
    here (it needs Redis): see `jeffrey_core.revocation`. `verify_exp=False` reads an expired token
    (to revoke it), everything else still checked."""
    ring = _ring(keys)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenError("invalid_token", f"the access token is not valid: {exc}") from exc
    claims = _decode(token, ring.secret_for(header.get("kid")), verify_exp)
    return _principal(claims, max_ttl_seconds)


def verify_token_cached(
    keys: KeyRing, token: str, *, max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS
) -> Principal:
    """`verify_token`, remembering tokens already verified by this ring (the API's per-request check).

    A token is a fixed string whose signature and claims give the same answer every time; only the
    clock changes it. So the signature and claims are checked once (`_untimed`, an LRU of the last
    VERIFIED_TOKENS_CACHED good tokens; refused tokens are not kept), and each call compares the clock
    with the token's own window [iat/nbf, exp) as PyJWT does (no leeway). Outside it, the full check
    runs again and raises the error it always did (token_expired, ...). PyJWT's decode was about a
    tenth of the memory POST's CPU time (issue 12 profile)."""
    principal, valid_from = _untimed(keys, token, max_ttl_seconds)
    if valid_from <= time.time() < principal.expires_at:
        return principal
    return verify_token(keys, token, max_ttl_seconds=max_ttl_seconds)


VERIFIED_TOKENS_CACHED = 4096


@lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _untimed(keys: KeyRing, token: str, max_ttl_seconds: int) -> tuple[Principal, float]:
    """The token's principal and the time it becomes valid, every check made but the clock's."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token,
            keys.secret_for(header.get("kid")),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except (jwt.InvalidTokenError, TokenError):
        # Any refusal: the full check names it (an expired token with a bad signature says invalid).
        verify_token(keys, token, max_ttl_seconds=max_ttl_seconds)
        raise
    principal = _principal(claims, max_ttl_seconds)
    starts = [claims["iat"], claims.get("nbf", claims["iat"])]
    if not all(isinstance(t, int | float) for t in starts):
        verify_token(keys, token, max_ttl_seconds=max_ttl_seconds)
        raise TokenError("invalid_token", "the access token's nbf must be a number")
    return principal, float(max(starts))


def _decode(token: str, secret: str, verify_exp: bool) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": _REQUIRED_CLAIMS, "verify_exp": verify_exp},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "the access token has expired; mint a new one") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("invalid_audience", f"the access token is not meant for {AUDIENCE}") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("invalid_token", f"the access token is not valid: {exc}") from exc
    return claims


def _principal(claims: dict[str, Any], max_ttl_seconds: int) -> Principal:
    issued, expires = claims["iat"], claims["exp"]
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise TokenError("invalid_token", "the access token's iat and exp must be numbers")
    if expires - issued > max_ttl_seconds:
        raise TokenError(
            "token_ttl_too_long", f"the access token lives longer than the maximum of {max_ttl_seconds} s"
        )
    scopes = claims.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise TokenError("invalid_token", "the access token's scopes claim must be a list of strings")
    user_id, jti = claims["sub"], claims["jti"]
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_SUBJECT_LENGTH:
        raise TokenError(
            "invalid_token", f"the access token's subject must be 1 to {MAX_SUBJECT_LENGTH} characters"
        )
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise TokenError("invalid_token", f"the access token's jti must be 1 to {MAX_JTI_LENGTH} characters")
    return Principal(user_id=user_id, scopes=frozenset(scopes), jti=jti, expires_at=int(expires))
