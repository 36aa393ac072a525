"""One error envelope for every 4xx/5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the API answers on purpose, with its status, code and message."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def unavailable(code: str, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> ApiError:
    """503 with Retry-After: the infrastructure is down, not the request wrong."""
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)})


def error_response(
    status_code: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_response(422, "validation_error", message, details)


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc.__class__.__name__)
    return error_response(
        503,
        "database_unavailable",
        "the database is not reachable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _database_refused_data(_: Request, exc: Exception) -> JSONResponse:
    # The database (or the driver binding a value) refused a value: the request is wrong, not the server.
    # Only the class is logged: the statement's parameters may hold user text.
    log.warning("database refused a value: %s", _cause_name(exc))
    return error_response(422, "invalid_data", "the database refused a value of this request")


async def _database_conflict(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database constraint violated: %s", _cause_name(exc))
    return error_response(409, "conflict", "the request conflicts with stored data")


async def _database_failed(_: Request, exc: Exception) -> JSONResponse:
    # Any other DBAPI error (internal, programming, not supported): the database cannot serve it now.
    log.error("database error: %s", _cause_name(exc))
    return error_response(
        503,
        "database_error",
        "the database could not process the request; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _cause_name(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return (
        f"{exc.__class__.__name__} ({orig.__class__.__name__})"
        if orig is not None
        else exc.__class__.__name__
    )


async def _redis_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc.__class__.__name__)
    return error_response(
        503,
        "redis_unavailable",
        "Redis is not reachable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    # Starlette picks the handler of the closest class in the exception's MRO.
    app.add_exception_handler(DataError, _database_refused_data)
    app.add_exception_handler(StatementError, _database_refused_data)  # a bind value was refused
    app.add_exception_handler(IntegrityError, _database_conflict)
    app.add_exception_handler(DBAPIError, _database_failed)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(Exception, _unhandled)
