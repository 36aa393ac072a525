"""Pagination cursors are opaque, round-trip exactly and reject tampering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jeffrey_core.store.pagination import Cursor, InvalidCursorError

pytestmark = pytest.mark.unit


def test_cursor_round_trips() -> None:
    cursor = Cursor(created_at=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC), id="abc")
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("token", ["", "not-base64!", "eyJ0IjoxfQ", "W10"])
def test_malformed_cursor_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.decode(token)
