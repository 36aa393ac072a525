"""Database errors become 4xx/503 envelopes, never a 500, and their log lines carry no values."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from jeffrey_api.errors import install_error_handlers

pytestmark = pytest.mark.unit
SECRET_TEXT = "what-the-user-wrote"

ERRORS: dict[str, Exception] = {
    "data": DataError("INSERT ...", {"text": SECRET_TEXT}, Exception(f"bad byte in {SECRET_TEXT}")),
    "integrity": IntegrityError("INSERT ...", {"id": SECRET_TEXT}, Exception(f"Key (id)=({SECRET_TEXT})")),
    "statement": StatementError("bind failed", "INSERT ...", {"t": SECRET_TEXT}, OverflowError()),
    "internal": InternalError("SELECT ...", {"x": SECRET_TEXT}, Exception(SECRET_TEXT)),
    "programming": ProgrammingError("SELECT ...", {"x": SECRET_TEXT}, Exception(SECRET_TEXT)),
    "operational": OperationalError("SELECT ...", {"x": SECRET_TEXT}, Exception(SECRET_TEXT)),
}


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{kind}")
    async def raise_it(kind: str) -> None:
        raise ERRORS[kind]

    return app


async def call(kind: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(f"/raise/{kind}")


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("data", 422, "invalid_data"),
        ("statement", 422, "invalid_data"),
        ("integrity", 409, "conflict"),
        ("internal", 503, "database_error"),
        ("programming", 503, "database_error"),
        ("operational", 503, "database_unavailable"),
    ],
)
def test_database_errors_are_mapped(
    kind: str, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = asyncio.run(call(kind))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert SECRET_TEXT not in response.text
    assert SECRET_TEXT not in caplog.text
    if status == 503:
        assert response.headers["retry-after"]
