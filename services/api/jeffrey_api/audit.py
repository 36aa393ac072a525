"""Audit of admin actions: a dependency wraps each admin route and appends one row to the audit table
(`jeffrey_core.store.audit`) once the route has run, with its outcome: "ok", or the error code the
caller got (`dead_letter_not_found`, `run_active`, ...). The row is committed before the response
leaves, in its own transaction, so a failed action is recorded as well as a successful one.

A route names its action up front (`audited(AuditAction.DLQ_DELETE, "record_id")`), or decides at run
time by setting `note.action` (a dream run is audited only when forced). If the database cannot take
the row, the action is not undone: the audit line in the log (always written) is the record.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jeffrey_api.deps import PrincipalDep, StateDep
from jeffrey_api.errors import ApiError
from jeffrey_api.state import AppState
from jeffrey_core.auth import Principal
from jeffrey_core.logging import request_id_var
from jeffrey_core.store.audit import OK, AuditAction, record_audit

log = logging.getLogger("jeffrey_api.audit")


@dataclass
class AuditNote:
    """What the row will say; the route may fill in or change `action` and `target` while it runs."""

    action: str | None
    target: str | None = None


def outcome_of(exc: BaseException | None) -> str:
    """ "ok", or the machine-readable code of the error the caller got."""
    if exc is None:
        return OK
    if isinstance(exc, ApiError):
        return exc.code
    if isinstance(exc, RequestValidationError):
        return "validation_error"
    if isinstance(exc, StarletteHTTPException):
        return f"http_{exc.status_code}"
    return "error"


def write_audit(state: AppState, actor: str, note: AuditNote, outcome: str) -> None:
    """Log the action and append its row (blocking: call from a thread on the event loop)."""
    request_id = request_id_var.get()
    fields = {"actor": actor, "action": note.action, "target": note.target, "outcome": outcome}
    log.info("audit %s by %s on %s: %s", note.action, actor, note.target, outcome, extra=fields)
    if note.action is None:
        return
    try:
        with state.sessions() as session:
            record_audit(session, actor, note.action, note.target, request_id, outcome)
            session.commit()
    except Exception:
        log.exception("audit row not written (the log line above is the record)", extra=fields)


def audited(action: AuditAction | None = None, target_param: str | None = None) -> Any:
    """A dependency (use as `note: Annotated[AuditNote, audited(...)]` or in `dependencies=[...]`) that
    records the route's call; `target_param` names the path parameter the action targets."""

    async def audit_call(
        request: Request, principal: PrincipalDep, state: StateDep
    ) -> AsyncIterator[AuditNote]:
        target = request.path_params.get(target_param) if target_param else None
        note = AuditNote(action.value if action else None, target)
        failure: BaseException | None = None
        try:
            yield note
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if note.action is not None:
                await anyio.to_thread.run_sync(
                    write_audit, state, principal.user_id, note, outcome_of(failure)
                )

    return Depends(audit_call, scope="function")


@asynccontextmanager
async def acting_for_audit(request: Request, principal: Principal, state: AppState) -> AsyncIterator[None]:
    """Records an admin's request made for another user (`?user_id=` naming someone else)."""
    target = request.query_params.get("user_id")
    if not principal.is_admin or not target or target == principal.user_id:
        yield
        return
    note = AuditNote(AuditAction.ACT_FOR_USER.value, f"{target} ({request.method} {request.url.path})")
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await anyio.to_thread.run_sync(write_audit, state, principal.user_id, note, outcome_of(failure))


async def _audit_acting_for(
    request: Request, principal: PrincipalDep, state: StateDep
) -> AsyncIterator[None]:
    async with acting_for_audit(request, principal, state):
        yield


# Router-level dependency of every router whose routes take `user_id`.
audit_acting_for = Depends(_audit_acting_for, scope="function")
