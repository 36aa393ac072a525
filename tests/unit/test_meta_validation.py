"""The flat-meta fast path (`schemas._small_flat`) decides exactly as the general path does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jeffrey_api.schemas import _META_ENCODER, MAX_META_BYTES, MemoryCreate, _small_flat
from jeffrey_api.validation import bounded_json


def _general_accepts(meta: Any) -> bool:
    try:
        bounded_json(meta)
    except ValueError:
        return False
    return len(_META_ENCODER.encode(meta)) <= MAX_META_BYTES


def _model_accepts(meta: Any) -> bool:
    try:
        MemoryCreate.model_validate({"text": "x", "meta": meta})
    except ValidationError:
        return False
    return True


# Any code point, surrogates and NUL included; a few long strings to reach the size limit.
_text = st.text(st.characters(codec=None, min_codepoint=0), max_size=40) | st.text(max_size=4000)
_scalar = _text | st.integers() | st.floats(allow_nan=True) | st.booleans() | st.none()


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_text, _scalar, max_size=12))
def test_flat_meta_is_accepted_exactly_when_the_general_path_accepts_it(meta: dict[str, Any]) -> None:
    assert _model_accepts(meta) == _general_accepts(meta)


@pytest.mark.parametrize(
    "meta",
    [
        {"src": "app"},
        {"k\x00": "v"},
        {"k": "\ud800"},
        {"emoji": "\U0001f600" * 1365},  # 12 bytes each: 16,380 + the rest, just over the limit
        {"emoji": "\U0001f600" * 1364},
        {"n": 10**30},
        {"f": float("nan")},
        {"x": "a" * (MAX_META_BYTES - 8)},
    ],
)
def test_edge_cases_decide_as_the_general_path(meta: dict[str, Any]) -> None:
    assert _model_accepts(meta) == _general_accepts(meta)


def test_only_small_flat_dicts_take_the_fast_path() -> None:
    assert _small_flat({"src": "app", "n": 3, "ok": True, "none": None})
    assert not _small_flat({"nested": {"a": 1}})
    assert not _small_flat({"list": [1]})
    assert not _small_flat({"n": 10**30})
    assert not _small_flat({"x": "a" * MAX_META_BYTES})  # may still pass the general path; not here
    with pytest.raises(ValueError):
        _small_flat({"k": "\x00"})
