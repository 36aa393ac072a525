"""Tokens: mint, verify, refuse."""

from __future__ import annotations

import datetime
import time

import jwt
import pytest

from jeffrey_core.auth import (
    AUDIENCE,
    KeyRing,
    Scope,
    TokenError,
    key_id,
    mint_token,
    parse_verify_keys,
    verify_token,
    verify_token_cached,
)

pytestmark = pytest.mark.unit
SECRET = "unit-test-secret-0123456789abcdef0123456789"


def test_round_trip_carries_user_and_scopes() -> None:
    principal = verify_token(SECRET, mint_token(SECRET, "alice", ["admin", "memories"], 60))
    assert principal.user_id == "alice"
    assert principal.scopes == {"admin", "memories"}
    assert principal.is_admin


def test_expired_token_is_refused_with_its_own_code() -> None:
    token = mint_token(SECRET, "alice", ["memories"], 10, now=time.time() - 3600)
    with pytest.raises(TokenError) as excinfo:
        verify_token(SECRET, token)
    assert excinfo.value.code == "token_expired"


def test_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(TokenError) as excinfo:
        verify_token(SECRET, mint_token("another-secret-0123456789abcdef0123", "alice", [], 60))
    assert excinfo.value.code == "invalid_token"


def test_token_without_subject_is_refused() -> None:
    token = jwt.encode({"iss": "jeffrey-os", "iat": int(time.time()), "exp": int(time.time()) + 60}, SECRET)
    with pytest.raises(TokenError):
        verify_token(SECRET, token)


def test_unknown_scope_cannot_be_minted() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        mint_token(SECRET, "alice", ["root"], 60)
    assert {s.value for s in Scope} == {"memories", "admin"}


OLD = "old-unit-test-secret-abcdef0123456789abcdef"
DAY = 24 * 3600


def test_every_token_carries_jti_aud_and_kid() -> None:
    token = mint_token(SECRET, "alice", ["memories"], 60)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["kid"] == key_id(SECRET) and header["alg"] == "HS256"
    assert claims["aud"] == AUDIENCE and claims["iss"] == "jeffrey-os"
    assert len(claims["jti"]) == 32
    other = jwt.decode(mint_token(SECRET, "alice", ["memories"], 60), options={"verify_signature": False})
    assert other["jti"] != claims["jti"]
    principal = verify_token(SECRET, token)
    assert principal.jti == claims["jti"] and principal.expires_at == claims["exp"]


def _forge(claims: dict[str, object], secret: str = SECRET, kid: str | None = None) -> str:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "jeffrey-os",
        "aud": AUDIENCE,
        "sub": "alice",
        "scopes": ["memories"],
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
    }
    base.update(claims)
    return jwt.encode(base, secret, algorithm="HS256", headers={"kid": kid or key_id(secret)})


def _code(token: str, keys: KeyRing | str = SECRET, **kwargs: int) -> str:
    with pytest.raises(TokenError) as excinfo:
        verify_token(keys, token, **kwargs)
    return excinfo.value.code


def test_lifetime_is_bounded_at_mint_and_at_verify() -> None:
    with pytest.raises(ValueError, match="maximum TTL"):
        mint_token(SECRET, "alice", ["memories"], 31 * DAY)
    with pytest.raises(ValueError, match="maximum TTL"):
        mint_token(SECRET, "alice", ["memories"], 2 * DAY, max_ttl_seconds=DAY)
    now = int(time.time())
    century = _forge({"iat": now, "exp": now + 100 * 365 * DAY})
    assert _code(century) == "token_ttl_too_long"
    assert _code(_forge({"exp": now + 2 * DAY}), max_ttl_seconds=DAY) == "token_ttl_too_long"
    assert verify_token(SECRET, _forge({"exp": now + DAY}), max_ttl_seconds=DAY).user_id == "alice"


def test_audience_is_checked() -> None:
    assert _code(_forge({"aud": "someone-else"})) == "invalid_audience"
    no_aud = _forge({})
    claims = jwt.decode(no_aud, options={"verify_signature": False})
    del claims["aud"]
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": key_id(SECRET)})
    assert _code(token) == "invalid_token"


def test_jti_and_subject_are_required_and_bounded() -> None:
    claims = jwt.decode(_forge({}), options={"verify_signature": False})
    del claims["jti"]
    assert (
        _code(jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": key_id(SECRET)}))
        == "invalid_token"
    )
    assert _code(_forge({"jti": "x" * 65})) == "invalid_token"
    assert _code(_forge({"sub": "u" * 129})) == "invalid_token"
    assert verify_token(SECRET, _forge({"sub": "u" * 128})).user_id == "u" * 128
    with pytest.raises(ValueError, match="1 to 128"):
        mint_token(SECRET, "u" * 129, ["memories"], 60)


def test_rotation_accepts_listed_keys_and_refuses_unknown_kids() -> None:
    ring = KeyRing.of(SECRET, "k2", parse_verify_keys(f"k1:{OLD}"))
    old_token = mint_token(KeyRing.of(OLD, "k1"), "alice", ["memories"], 60)
    new_token = mint_token(ring, "bob", ["memories"], 60)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    assert verify_token(ring, old_token).user_id == "alice"
    assert verify_token(ring, new_token).user_id == "bob"
    # Once k1 is dropped from the list, its tokens are refused by kid.
    with pytest.raises(TokenError, match="kid names no key"):
        verify_token(KeyRing.of(SECRET, "k2"), old_token)
    # A known kid with the wrong key still fails on the signature.
    assert _code(_forge({}, secret=OLD, kid="k2"), ring) == "invalid_token"
    no_kid = jwt.encode(jwt.decode(new_token, options={"verify_signature": False}), SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="kid names no key") as excinfo:
        verify_token(ring, no_kid)
    assert excinfo.value.code == "invalid_token"


def test_verify_keys_parsing_names_positions_not_values() -> None:
    assert parse_verify_keys(f"k1:{OLD}, {SECRET}") == {"k1": OLD, key_id(SECRET): SECRET}
    with pytest.raises(ValueError, match="entry 2") as excinfo:
        parse_verify_keys(f"k1:{OLD},bad kid:{SECRET}")
    assert SECRET not in str(excinfo.value)
    with pytest.raises(ValueError, match="repeats"):
        parse_verify_keys(f"k1:{OLD},k1:{SECRET}")
    with pytest.raises(ValueError, match="two different keys"):
        KeyRing.of(SECRET, "k1", {"k1": OLD})


def test_expired_token_can_still_be_read_for_revocation() -> None:
    token = mint_token(SECRET, "alice", ["memories"], 10, now=time.time() - 3600)
    principal = verify_token(SECRET, token, verify_exp=False)
    assert principal.user_id == "alice" and principal.expires_at < time.time()


def test_cached_verification_still_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's cached check answers as the full one at every instant: a token verified while valid
    is refused token_expired once its exp passes, and one not yet valid is refused until its iat."""
    ring = KeyRing.of(SECRET)
    start = time.time()
    token = mint_token(ring, "alice", ["memories"], 60, now=start)
    assert verify_token_cached(ring, token).user_id == "alice"
    _shift_clocks(monkeypatch, start + 61)
    with pytest.raises(TokenError) as excinfo:
        verify_token_cached(ring, token)
    assert excinfo.value.code == "token_expired"
    future = mint_token(ring, "bob", ["memories"], 60, now=start + 3600)
    with pytest.raises(TokenError) as excinfo:
        verify_token_cached(ring, future)
    assert excinfo.value.code == "invalid_token"  # PyJWT: "The token is not yet valid (iat)"
    _shift_clocks(monkeypatch, start + 3601)
    assert verify_token_cached(ring, future).user_id == "bob"


def test_cached_verification_refuses_what_the_full_check_refuses() -> None:
    ring = KeyRing.of(SECRET, "k1")
    stranger = KeyRing.of("another-secret-0123456789abcdef0123456789", "k1")
    forged = mint_token(stranger, "alice", ["admin"], 60)
    for _ in range(2):  # a refusal is not remembered as a success
        with pytest.raises(TokenError) as excinfo:
            verify_token_cached(ring, forged)
        assert excinfo.value.code == "invalid_token"
    other_ring = KeyRing.of(SECRET, "k2")  # same secret, another kid: a token of `ring` is not valid here
    token = mint_token(ring, "alice", ["memories"], 60)
    assert verify_token_cached(ring, token).user_id == "alice"
    with pytest.raises(TokenError):
        verify_token_cached(other_ring, token)


def _shift_clocks(monkeypatch: pytest.MonkeyPatch, to: float) -> None:
    """Both clocks a verification reads: ours (time.time) and PyJWT's (datetime.now)."""

    class Shifted(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Shifted:
            return cls.fromtimestamp(to, tz)

    monkeypatch.setattr(time, "time", lambda: to)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Shifted)
