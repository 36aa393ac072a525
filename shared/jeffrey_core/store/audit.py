"""The audit log of admin actions: append and list, never update or delete (no API does).

`record_audit` is the one way in, for every admin route (jeffrey_api.audit) and the CLI; each value is
cut to its column and made storable (NUL and lone surrogates replaced), so a hostile target (a
`user_id` from the query or the path) never makes the write fail on any database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from jeffrey_core.store.models import AuditRecord
from jeffrey_core.store.pagination import Cursor, keyset_page

OK = "ok"


class AuditAction(StrEnum):
    """What an admin did (the `action` column); new admin actions add a value here."""

    DREAM_TOGGLE = "dream.toggle"
    DREAM_RUN_FORCED = "dream.run.forced"
    DLQ_REPLAY = "dlq.replay"
    DLQ_REPLAY_MATCHING = "dlq.replay_matching"
    DLQ_DELETE = "dlq.delete"
    DLQ_PURGE = "dlq.purge"
    TOKEN_REVOKE = "token.revoke"  # noqa: S105 - an action name, not a password
    ACT_FOR_USER = "act_for_user"
    USER_ERASE = "user.erase"


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None


def record_audit(
    session: Session,
    actor: str,
    action: str,
    target: str | None,
    request_id: str | None,
    outcome: str = OK,
) -> AuditRecord:
    """Append one audit row to `session` (the caller commits): who did what to which target, under
    which request id, and how it ended ("ok" or the error code)."""
    row = AuditRecord(
        actor=_storable(actor, 128),
        action=_storable(str(action), 64),
        target=None if target is None else _storable(target, 256),
        request_id=None if request_id is None else _storable(request_id, 128),
        outcome=_storable(outcome, 64),
    )
    session.add(row)
    session.flush()
    return row


def _storable(value: str, limit: int) -> str:
    """`value` as every database stores it: PostgreSQL refuses NUL, UTF-8 has no lone surrogates (each
    becomes U+FFFD; a surrogate pair becomes its character); cut to the column's `limit` characters."""
    whole = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return whole.replace("\x00", "\ufffd")[:limit]


def list_audit(
    session: Session, filters: AuditFilter, limit: int, cursor: Cursor | None
) -> tuple[list[AuditRecord], Cursor | None]:
    """Audit rows, newest first, one keyset page at a time."""
    query = select(AuditRecord)
    if filters.actor is not None:
        query = query.where(AuditRecord.actor == filters.actor)
    if filters.action is not None:
        query = query.where(AuditRecord.action == filters.action)
    return keyset_page(session, query, AuditRecord.at, AuditRecord.id, limit, cursor)
