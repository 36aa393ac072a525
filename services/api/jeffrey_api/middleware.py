"""Pure ASGI layers in front of the routes: request id and access log, body-size limit, rate limits,
authentication."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jeffrey_api.deps import authenticate, note_revocation, revocation_key, verified_token
from jeffrey_api.errors import ApiError, error_response
from jeffrey_api.rate_limit import Quota, RateLimiter, classify
from jeffrey_core.auth import Principal
from jeffrey_core.logging import request_id_var
from jeffrey_core.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("jeffrey_api.access")


class RequestIdMiddleware:
    """Takes a well-formed X-Request-ID from the caller or makes one; echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id_var.reset(token)


class BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive` once the streamed body passes the limit; FastAPI re-raises HTTPExceptions
    met while reading the body, so the app's handler answers it with the error envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


class BodySizeLimitMiddleware:
    """Refuses a request body larger than `max_bytes` before anything reads or parses it.

    A declared Content-Length over the limit is answered 413 at once, before authentication; a body
    without one (chunked) is counted as it streams and refused as soon as it passes the limit, so
    the process never holds more than about `max_bytes` of it. Unread bytes are dropped by the server.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No `Connection: close`: the server drops the rest of the body unread, and the client gets
        # to read this answer instead of a reset while it is still sending.
        response = error_response(
            413, "payload_too_large", f"the request body exceeds {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class ApiAuthMiddleware:
    """Authenticates every request under `prefix` before any of it is read: a missing or invalid
    token gets 401 whatever the body, so an anonymous caller never makes the API parse anything.

    It applies the same check as the routes' `PrincipalDep`, revocation included (scopes are still
    checked per router or route)."""

    def __init__(self, app: ASGIApp, settings: Settings, prefix: str = "/api/v1") -> None:
        self.app = app
        self.settings = settings
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _under(scope.get("path", ""), self.prefix):
            result = await authenticate(scope, self.settings)
            if isinstance(result, ApiError):
                response = error_response(
                    result.status_code, result.code, result.message, headers=result.headers
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """Spends the request's budget (writes, detect, dream runs, reads: `rate_limit.classify`) per client
    IP and, when the token is valid, per user, in Redis shared by every replica; answers 429
    `rate_limited` with Retry-After past either, before authentication answers and before the body is
    read. Responses of limited routes carry the RateLimit-* headers of the tighter budget. Exempt:
    everything outside `prefix`. Fails open (no limit, no headers) while Redis cannot be asked.

    It sits in front of `ApiAuthMiddleware` so anonymous floods are limited per IP too; both share one
    token verification (`authenticate`), and the limiter's one Redis round trip also looks the token
    up in the revocation set (`deps.note_revocation`)."""

    def __init__(self, app: ASGIApp, settings: Settings, prefix: str = "/api/v1") -> None:
        self.app = app
        self.settings = settings
        self.prefix = prefix.rstrip("/")
        self.limiter = RateLimiter.from_settings(settings) if settings.rate_limit.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is not None and scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(self.limiter, send))
            return
        budget = classify(scope["method"], scope["path"], self.prefix) if scope["type"] == "http" else None
        if self.limiter is None or budget is None:
            await self.app(scope, receive, send)
            return
        # The token's revocation lookup rides on the limiter's round trip (one Redis call per request);
        # `authenticate` asks Redis itself only when the limiter could not (fail open).
        principal = verified_token(scope, self.settings)
        user, revoked_key = None, None
        if isinstance(principal, Principal):
            user, revoked_key = principal.user_id, revocation_key(scope, principal)
        quota = await self.limiter.check(budget, _client_ip(scope), user, revoked_key)
        if quota is not None and quota.revoked is not None:
            note_revocation(scope, quota.revoked)
        if quota is None:
            await self.app(scope, receive, send)
        elif not quota.allowed:
            await self._refuse(quota, scope, receive, send)
        else:
            await self.app(scope, receive, _adding_headers(send, quota))

    @staticmethod
    async def _refuse(quota: Quota, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {**quota.headers(), "Retry-After": str(quota.retry_after)}
        await error_response(429, "rate_limited", quota.message(), headers=headers)(scope, receive, send)

    @staticmethod
    def _closing(limiter: RateLimiter, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await limiter.aclose()
            await send(message)

        return send_closing


def _client_ip(scope: Scope) -> str:
    # Behind a reverse proxy this is the proxy's address unless uvicorn trusts it
    # (--forwarded-allow-ips), in which case uvicorn puts the X-Forwarded-For address here.
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _adding_headers(send: Send, quota: Quota) -> Send:
    extra = [(name.lower().encode(), value.encode()) for name, value in quota.headers().items()]

    async def send_with_quota(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return send_with_quota
