"""Engine and session factory from settings, with timeouts so a dead database fails fast."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core.settings import DatabaseSettings


def create_db_engine(settings: DatabaseSettings) -> Engine:
    """An engine for DATABASE_URL; creates the SQLite file's folder when needed."""
    url = make_url(settings.url)
    # hide_parameters: errors and logs show the statement, never the values (they hold user text).
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # No pre-ping: a file has no connection to lose, and the ping was one more query per checkout.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
    else:
        kwargs["connect_args"] = {"connect_timeout": max(1, round(settings.connect_timeout))}
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):  # a pooled engine
        kwargs.update(pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_timeout=5)
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        _SQLITE_WRITERS[engine] = threading.Lock()
    else:
        event.listen(engine.pool, "checkin", _note_checkin)
        event.listen(engine.pool, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    return engine


# Pre-ping, but only a connection that sat idle in the pool longer than this (HikariCP's "alive bypass
# window"): one that was in use a moment ago is alive, and `pool_pre_ping` spent a round trip on every
# checkout, about 5 % of a memory POST's CPU on PostgreSQL (issue 12 profile). A connection that dies
# within the window (the server restarted that very second) fails its request with a 503, and
# SQLAlchemy then discards every pooled connection made before the failure.
ALIVE_BYPASS_SECONDS = 1.0
_CHECKED_IN_AT = "jeffrey.checked_in_at"


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    checked_in_at = record.info.get(_CHECKED_IN_AT)
    if checked_in_at is None or time.monotonic() - checked_in_at <= ALIVE_BYPASS_SECONDS:
        return  # brand new, or used a moment ago
    try:
        dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs (psycopg: SELECT 1 in autocommit)
    except Exception as exc:
        # The pool closes this connection and checks out another (a fresh one if need be).
        raise DisconnectionError(
            f"pooled connection found dead before use: {exc.__class__.__name__}"
        ) from exc


def pool_capacity(settings: DatabaseSettings) -> int:
    """How many connections an engine from `create_db_engine` may hold at once (pool plus overflow)."""
    return 2 * settings.pool_size


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout waits instead of failing on a lock
    # (between processes; inside one, `serialized_writes` queues writers). synchronous=NORMAL is
    # WAL's usual setting: no fsync per commit, and still no loss or corruption when a process
    # crashes; only an OS crash or power cut can take back the last commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


# One lock per SQLite engine: SQLite has one writer at a time, and threads that collide on its lock
# wait in its busy handler, which sleeps in steps of up to 100 ms (the long p99 of concurrent POSTs).
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


@contextmanager
def serialized_writes(session: Session) -> Iterator[None]:
    """Hold the process's writer lock around a write transaction on SQLite (a no-op on PostgreSQL).

    Threads of one process then queue on a Python lock, which hands over at once, instead of
    colliding inside SQLite; other processes (workers) still meet busy_timeout."""
    bind = session.get_bind()
    lock = _SQLITE_WRITERS.get(bind) if isinstance(bind, Engine) else None
    if lock is None:
        yield
        return
    with lock:
        yield


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise if the database does not answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
