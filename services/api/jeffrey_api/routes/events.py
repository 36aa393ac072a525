"""GET /api/v1/events: run progress as Server-Sent Events (admins see every user's, users their own).

Streams are capped per user and per process (`jeffrey_api.streams`), each subscribes on a connection of
its own (never one of the request pool), and each ends when its access token expires, with a last
`token_expired` event telling the client to reconnect with a fresh token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from jeffrey_api.deps import MemoriesPrincipalDep, StateDep
from jeffrey_api.schemas import ErrorEnvelope
from jeffrey_api.streams import StreamLimiter, StreamSlot
from jeffrey_core.auth import Principal

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["events"])
HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 1.0


class EventStream:
    """One client's stream: its slot, what it may see, and until when its token lets it listen."""

    def __init__(self, request: Request, principal: Principal, limiter: StreamLimiter, slot: StreamSlot):
        self.request = request
        self.principal = principal
        self.limiter = limiter
        self.slot = slot
        self.expires_at = float(principal.expires_at) if principal.expires_at else None

    def visible(self, event: dict[str, object]) -> bool:
        return self.principal.is_admin or event.get("user_id") == self.principal.user_id

    def seconds_left(self) -> float:
        return POLL_SECONDS if self.expires_at is None else self.expires_at - time.time()

    async def events(self) -> AsyncGenerator[str, None]:
        """Heartbeats, the caller's events, and a last `token_expired` event when the token runs out.

        Redis failing ends the stream (the client reconnects), it never fails the response."""
        yield ": connected\n\n"
        try:
            async for frame in self._frames():
                yield frame
        except RedisError as exc:
            log.warning("event stream ended: Redis failed (%s)", exc.__class__.__name__)

    async def _frames(self) -> AsyncGenerator[str, None]:
        assert self.slot.pubsub is not None
        idle = 0.0
        while not await self.request.is_disconnected():
            left = self.seconds_left()
            if left <= 0:
                yield _frame("token_expired", {"type": "token_expired", "expired_at": self.expires_at})
                return
            if not await self.limiter.refresh(self.slot):
                return  # the lease was dropped as stale: end, the client reconnects
            wait = min(POLL_SECONDS, left)
            message = await self.slot.pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                idle += wait
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    yield ": heartbeat\n\n"
                continue
            idle = 0.0
            event = json.loads(message["data"])
            if self.visible(event):
                yield _frame(str(event.get("type", "message")), event)


def _frame(kind: str, data: dict[str, object]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


class EventStreamResponse(StreamingResponse):
    """Releases its stream's slot however the response ends: finished, failed, or the client gone."""

    def __init__(self, stream: EventStream) -> None:
        self.frames = stream.events()
        super().__init__(self.frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: a disconnect cancels this task, and the release must still reach Redis.
            with anyio.CancelScope(shield=True):
                await self.frames.aclose()
                await self.stream.limiter.release(self.stream.slot)


@router.get(
    "/events",
    summary="Server-Sent Events: dream run started / batch / finished / failed",
    responses={
        429: {"model": ErrorEnvelope, "description": "too many open streams for this user or process"}
    },
)
async def events(request: Request, principal: MemoriesPrincipalDep, state: StateDep) -> StreamingResponse:
    slot = await state.streams.open(principal.user_id, state.keys.events_channel())
    try:
        return EventStreamResponse(EventStream(request, principal, state.streams, slot))
    except BaseException:
        await state.streams.release(slot)
        raise
