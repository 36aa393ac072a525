"""The engine never puts statement parameters (user text) into its errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError

from jeffrey_core.settings import DatabaseSettings
from jeffrey_core.store.engine import create_db_engine

pytestmark = pytest.mark.integration


def test_errors_hide_parameters(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(DATABASE_URL=database_url))
    marker = f"private-{uuid.uuid4().hex}"
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TEMPORARY TABLE hidden (id TEXT PRIMARY KEY)"))
            connection.execute(text("INSERT INTO hidden (id) VALUES (:v)"), {"v": marker})
            with pytest.raises(IntegrityError) as duplicate:
                connection.execute(text("INSERT INTO hidden (id) VALUES (:v)"), {"v": marker})
        # SQLAlchemy no longer appends the parameters. PostgreSQL's own DETAIL still quotes the key
        # of a unique violation, which is why the API logs database errors by class name only.
        assert "parameters hidden" in str(duplicate.value)
        assert "[parameters:" not in str(duplicate.value)
        if engine.dialect.name == "sqlite":
            assert marker not in str(duplicate.value)
        if engine.dialect.name == "postgresql":
            with pytest.raises(DataError) as nul, engine.connect() as connection:
                connection.execute(text("SELECT :v"), {"v": marker + "\x00"})
            assert marker not in str(nul.value)
    finally:
        engine.dispose()
