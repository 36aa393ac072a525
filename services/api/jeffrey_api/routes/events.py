"""GET /api/v1/events: run progress as Server-Sent Events (admins see every user's, users their own)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from jeffrey_api.deps import MemoriesPrincipalDep, StateDep

router = APIRouter(prefix="/api/v1", tags=["events"])
HEARTBEAT_SECONDS = 15.0


@router.get("/events", summary="Server-Sent Events: dream run started / batch / finished / failed")
async def events(request: Request, principal: MemoriesPrincipalDep, state: StateDep) -> StreamingResponse:
    pubsub = state.redis.pubsub()
    await pubsub.subscribe(state.keys.events_channel())

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            idle = 0.0
            while not await request.is_disconnected():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    idle += 1.0
                    if idle >= HEARTBEAT_SECONDS:
                        idle = 0.0
                        yield ": heartbeat\n\n"
                    continue
                idle = 0.0
                event = json.loads(message["data"])
                if principal.is_admin or event.get("user_id") == principal.user_id:
                    yield f"event: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n"
        except asyncio.CancelledError:
            raise
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
