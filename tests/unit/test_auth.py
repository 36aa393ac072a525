"""Tokens: mint, verify, refuse."""

from __future__ import annotations

import time

import jwt
import pytest

from jeffrey_core.auth import Scope, TokenError, mint_token, verify_token

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
